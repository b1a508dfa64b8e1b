package directory

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Paths of the directory's HTTP API. In PathService, {id...} is the
// service's SPIFFE ID, percent-escaped (url.PathEscape).
const (
	PathServices = "/v1/services"
	PathService  = "/v1/services/{id...}"
)

// Error codes of the directory API, beside httpapi's.
const (
	// CodeInvalidService is a refused service; the message names the field.
	CodeInvalidService = "invalid_service"
	// CodeConflict is a service name that another service already has.
	CodeConflict = "conflict"
)

// ServiceList is the answer of GET /v1/services.
type ServiceList struct {
	Services []Service `json:"services"`
}

// Register adds the API to mux: changes under admin, reads under pep
// (agents and gateways resolving destinations).
func (d *Directory) Register(mux *http.ServeMux, admin, pep func(http.Handler) http.Handler) {
	mux.Handle("PUT "+PathService, admin(http.HandlerFunc(d.handlePut)))
	mux.Handle("DELETE "+PathService, admin(http.HandlerFunc(d.handleDelete)))
	mux.Handle("GET "+PathServices, pep(http.HandlerFunc(d.handleList)))
	mux.Handle("GET "+PathService, pep(http.HandlerFunc(d.handleGet)))
}

func (d *Directory) writeErr(w http.ResponseWriter, req *http.Request, err error) {
	var (
		fe  *FieldError
		ae  *httpapi.Error
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &fe) && errors.Is(fe.Kind, ErrConflict):
		httpapi.WriteError(w, req, d.log, httpapi.Errorf(http.StatusConflict, CodeConflict, "%s", fe.Error()))
	case errors.As(err, &fe):
		httpapi.WriteError(w, req, d.log, httpapi.Errorf(http.StatusBadRequest, CodeInvalidService, "%s", fe.Error()))
	case errors.As(err, &ae):
		httpapi.WriteError(w, req, d.log, ae)
	case errors.As(err, &mbe):
		httpapi.WriteError(w, req, d.log, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "request body exceeds %d bytes", MaxServiceBytes))
	case errors.Is(err, ErrNotFound):
		httpapi.WriteError(w, req, d.log, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such service"))
	case errors.Is(err, ErrInvalid):
		httpapi.WriteError(w, req, d.log, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidJSON, "%s", clip(err.Error(), 512)))
	default:
		httpapi.WriteError(w, req, d.log, err)
	}
}

// pathID reads and checks the {id} of a path (already unescaped by the mux).
func (d *Directory) pathID(req *http.Request) (string, error) {
	id := req.PathValue("id")
	if strings.HasPrefix(id, "spiffe:/") && !strings.HasPrefix(id, "spiffe://") {
		return "", invalid("id", "the SPIFFE ID in the path must be percent-escaped (spiffe%%3A%%2F%%2F...)")
	}
	if err := validateID(id, d.td); err != nil {
		return "", err
	}
	return id, nil
}

func (d *Directory) handlePut(w http.ResponseWriter, req *http.Request) {
	id, err := d.pathID(req)
	if err != nil {
		d.writeErr(w, req, err)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			d.writeErr(w, req, httpapi.Errorf(http.StatusUnsupportedMediaType, httpapi.CodeUnsupportedType, "content type must be application/json"))
			return
		}
	}
	if req.ContentLength > MaxServiceBytes {
		d.writeErr(w, req, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "request body is %d bytes; the limit is %d", req.ContentLength, MaxServiceBytes))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxServiceBytes))
	if err != nil {
		d.writeErr(w, req, err)
		return
	}
	s, err := DecodeService(body)
	if err != nil {
		d.writeErr(w, req, err)
		return
	}
	if s.ID != id {
		d.writeErr(w, req, &FieldError{Field: "id", Reason: "must equal the SPIFFE ID in the path", Kind: ErrInvalid})
		return
	}
	out, created, err := d.put(req.Context(), s, adminauth.CredentialID(req.Context()))
	if err != nil {
		d.writeErr(w, req, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	httpapi.WriteJSON(w, status, out)
}

func (d *Directory) handleDelete(w http.ResponseWriter, req *http.Request) {
	id, err := d.pathID(req)
	if err != nil {
		d.writeErr(w, req, err)
		return
	}
	if err := d.Delete(req.Context(), id, adminauth.CredentialID(req.Context())); err != nil {
		d.writeErr(w, req, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (d *Directory) handleList(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	for k := range q {
		if k != "name" {
			d.writeErr(w, req, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "unknown query parameter %q", clip(k, 64)))
			return
		}
	}
	if q.Has("name") {
		name := q.Get("name")
		if !nameRE.MatchString(name) {
			d.writeErr(w, req, invalid("name", "must be a DNS label"))
			return
		}
		s, err := d.ByName(req.Context(), name)
		if errors.Is(err, ErrNotFound) {
			httpapi.WriteJSON(w, http.StatusOK, ServiceList{Services: []Service{}})
			return
		}
		if err != nil {
			d.writeErr(w, req, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, ServiceList{Services: []Service{s}})
		return
	}
	list, err := d.List(req.Context())
	if err != nil {
		d.writeErr(w, req, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, ServiceList{Services: list})
}

func (d *Directory) handleGet(w http.ResponseWriter, req *http.Request) {
	id, err := d.pathID(req)
	if err != nil {
		d.writeErr(w, req, err)
		return
	}
	s, err := d.Get(req.Context(), id)
	if err != nil {
		d.writeErr(w, req, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, s)
}
