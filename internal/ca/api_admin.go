package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// CreateEntryRequest is the body of POST /v1/ca/entries.
type CreateEntryRequest struct {
	SPIFFEID  string   `json:"spiffe_id"`
	ParentID  string   `json:"parent_id,omitempty"`
	Selectors []string `json:"selectors"`
	TTL       string   `json:"ttl,omitempty"`
}

// JoinTokenRequest is the body of POST /v1/ca/join-tokens.
type JoinTokenRequest struct {
	Agent string `json:"agent"`
	TTL   string `json:"ttl,omitempty"`
}

// JoinTokenAnswer is the answer of POST /v1/ca/join-tokens. The token is
// shown once.
type JoinTokenAnswer struct {
	Token     string    `json:"token"`
	AgentID   string    `json:"agent_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// RevokeRequest is the body of POST /v1/ca/revoke.
type RevokeRequest struct {
	Serial string `json:"serial"`
	Reason string `json:"reason,omitempty"`
}

// QuarantineRequest is the body of POST /v1/ca/quarantine.
type QuarantineRequest struct {
	SPIFFEID string `json:"spiffe_id"`
	Reason   string `json:"reason,omitempty"`
}

// DenyAnswer is the answer of revoke and quarantine.
type DenyAnswer struct {
	Kind   string `json:"kind"`
	Value  string `json:"value"`
	Reason string `json:"reason,omitempty"`
}

// CertJSON is an issued certificate of the inventory.
type CertJSON struct {
	Serial    string    `json:"serial"`
	SPIFFEID  string    `json:"spiffe_id"`
	Agent     string    `json:"agent,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	IssuedAt  time.Time `json:"issued_at"`
	Authority string    `json:"authority,omitempty"`
}

// CertList is the answer of GET /v1/ca/certificates.
type CertList struct {
	Certificates []CertJSON `json:"certificates"`
}

// RotateAnswer is the answer of POST /v1/ca/rotate: the trust bundle
// after the rotation.
type RotateAnswer struct {
	X509Authorities [][]byte `json:"x509_authorities"`
}

func (api *API) registerAdmin(mux *http.ServeMux, admin func(http.Handler) http.Handler) {
	handle := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, admin(h)) }
	handle("POST "+PathEntries, api.adminCreateEntry)
	handle("GET "+PathEntries, api.adminListEntries)
	handle("DELETE "+PathEntries+"/{id}", api.adminDeleteEntry)
	handle("POST "+PathJoinTokens, api.adminJoinToken)
	handle("POST "+PathRevoke, api.adminRevoke)
	handle("POST "+PathQuarantine, api.adminQuarantine)
	handle("GET "+PathCertificates, api.adminCertificates)
	handle("POST "+PathRotate, api.adminRotate)
	handle("POST "+PathIntermediateCSR, api.adminIntermediateCSR)
	handle("POST "+PathIntermediates, api.adminInstallIntermediate)
}

// parseTTL parses an optional duration field; empty is 0 (the default).
func parseTTL(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "%s %q: must be a duration such as 1h or 10m", field, s)
	}
	return d, nil
}

func invalidEntry(format string, args ...any) error {
	return httpapi.Errorf(http.StatusBadRequest, CodeInvalidEntry, format, args...)
}

func (api *API) adminCreateEntry(w http.ResponseWriter, r *http.Request) {
	var req CreateEntryRequest
	if err := httpapi.DecodeJSON(w, r, maxSmallBody, &req); err != nil {
		api.fail(w, r, err)
		return
	}
	var e Entry
	var err error
	if e.SPIFFEID, err = spiffeid.FromString(req.SPIFFEID); err != nil {
		api.fail(w, r, invalidEntry("spiffe_id %q: %v", req.SPIFFEID, err))
		return
	}
	if req.ParentID != "" {
		if e.ParentID, err = spiffeid.FromString(req.ParentID); err != nil {
			api.fail(w, r, invalidEntry("parent_id %q: %v", req.ParentID, err))
			return
		}
	}
	if len(req.Selectors) == 0 || len(req.Selectors) > 32 {
		api.fail(w, r, invalidEntry("selectors: give 1 to 32 selectors such as unix:uid:1001"))
		return
	}
	for _, s := range req.Selectors {
		sel, err := ParseSelector(s)
		if err != nil {
			api.fail(w, r, invalidEntry("selector %q: %v", s, err))
			return
		}
		e.Selectors = append(e.Selectors, sel)
	}
	if e.TTL, err = parseTTL("ttl", req.TTL); err != nil {
		api.fail(w, r, err)
		return
	}
	if err := api.a.CreateEntry(r.Context(), &e); err != nil {
		if errors.Is(err, ErrInvalid) {
			err = &httpapi.Error{Status: http.StatusBadRequest, Code: CodeInvalidEntry, Message: publicMessage(err), Err: err}
		}
		api.fail(w, r, err)
		return
	}
	w.Header().Set("Location", PathEntries+"/"+e.ID)
	httpapi.WriteJSON(w, http.StatusCreated, entryJSON(&e))
}

func (api *API) adminListEntries(w http.ResponseWriter, r *http.Request) {
	list, err := api.a.ListEntries(r.Context())
	if err != nil {
		api.fail(w, r, fmt.Errorf("list entries: %w", err))
		return
	}
	ans := EntryList{Entries: make([]EntryJSON, 0, len(list))}
	for i := range list {
		ans.Entries = append(ans.Entries, entryJSON(&list[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, ans)
}

func (api *API) adminDeleteEntry(w http.ResponseWriter, r *http.Request) {
	if err := api.a.DeleteEntry(r.Context(), r.PathValue("id")); err != nil {
		api.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (api *API) adminJoinToken(w http.ResponseWriter, r *http.Request) {
	var req JoinTokenRequest
	if err := httpapi.DecodeJSON(w, r, maxSmallBody, &req); err != nil {
		api.fail(w, r, err)
		return
	}
	ttl, err := parseTTL("ttl", req.TTL)
	if err != nil {
		api.fail(w, r, err)
		return
	}
	token, id, exp, err := api.a.CreateJoinToken(r.Context(), req.Agent, ttl)
	if err != nil {
		api.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, JoinTokenAnswer{Token: token, AgentID: id.String(), ExpiresAt: exp.UTC()})
}

func (api *API) adminRevoke(w http.ResponseWriter, r *http.Request) {
	var req RevokeRequest
	if err := httpapi.DecodeJSON(w, r, maxSmallBody, &req); err != nil {
		api.fail(w, r, err)
		return
	}
	serial := strings.ToLower(strings.TrimSpace(req.Serial))
	if err := api.a.Revoke(r.Context(), serial, req.Reason); err != nil {
		api.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, DenyAnswer{Kind: "serial", Value: serial, Reason: req.Reason})
}

func (api *API) adminQuarantine(w http.ResponseWriter, r *http.Request) {
	var req QuarantineRequest
	if err := httpapi.DecodeJSON(w, r, maxSmallBody, &req); err != nil {
		api.fail(w, r, err)
		return
	}
	id, err := spiffeid.FromString(req.SPIFFEID)
	if err != nil {
		api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "spiffe_id %q: %v", req.SPIFFEID, err))
		return
	}
	if err := api.a.Quarantine(r.Context(), id, req.Reason); err != nil {
		api.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, DenyAnswer{Kind: "spiffe_id", Value: id.String(), Reason: req.Reason})
}

func (api *API) adminCertificates(w http.ResponseWriter, r *http.Request) {
	limit := defaultCertLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > maxCertLimit {
			api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "limit must be 1 to %d", maxCertLimit))
			return
		}
		limit = v
	}
	recs, err := api.a.Certificates(r.Context(), limit)
	if err != nil {
		api.fail(w, r, fmt.Errorf("certificates: %w", err))
		return
	}
	ans := CertList{Certificates: make([]CertJSON, 0, len(recs))}
	for _, c := range recs {
		ans.Certificates = append(ans.Certificates, CertJSON{Serial: c.Serial, SPIFFEID: c.SPIFFEID, Agent: c.Agent,
			NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), IssuedAt: c.IssuedAt.UTC(), Authority: c.Authority})
	}
	httpapi.WriteJSON(w, http.StatusOK, ans)
}

// adminRotate makes a new intermediate signed by the sealed dev root.
// With an offline root, rotation is not possible through the API: the
// server never receives the root key.
func (api *API) adminRotate(w http.ResponseWriter, r *http.Request) {
	if err := api.a.Rotate(r.Context(), nil, nil); err != nil {
		api.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, RotateAnswer{X509Authorities: certsDER(api.a.X509Authorities())})
}

// IntermediateCSRAnswer is the answer of POST /v1/ca/intermediate-csr: the
// CSR (DER) of a new intermediate key, for the offline root to sign.
type IntermediateCSRAnswer struct {
	CSR []byte `json:"csr"`
}

// InstallIntermediateRequest is the body of POST /v1/ca/intermediates: the
// intermediate certificate the offline root signed, and the root's
// certificate (DER).
type InstallIntermediateRequest struct {
	Certificate     []byte `json:"certificate"`
	RootCertificate []byte `json:"root_certificate"`
}

func (api *API) adminIntermediateCSR(w http.ResponseWriter, r *http.Request) {
	csr, err := api.a.IntermediateCSR(r.Context())
	if err != nil {
		api.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, IntermediateCSRAnswer{CSR: csr})
}

func (api *API) adminInstallIntermediate(w http.ResponseWriter, r *http.Request) {
	var req InstallIntermediateRequest
	if err := httpapi.DecodeJSON(w, r, maxSmallBody, &req); err != nil {
		api.fail(w, r, err)
		return
	}
	cert, err := x509.ParseCertificate(req.Certificate)
	if err != nil {
		api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "certificate: not a DER X.509 certificate"))
		return
	}
	root, err := x509.ParseCertificate(req.RootCertificate)
	if err != nil {
		api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "root_certificate: not a DER X.509 certificate"))
		return
	}
	if err := api.a.InstallIntermediate(r.Context(), cert, root); err != nil {
		api.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, RotateAnswer{X509Authorities: certsDER(api.a.X509Authorities())})
}
