package policy

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Paths of the policy repository's HTTP API.
const (
	PathVersions   = "/v1/policy/versions"
	PathVersion    = "/v1/policy/versions/{version}"
	PathActive     = "/v1/policy/active"
	PathRollback   = "/v1/policy/rollback"
	PathEntities   = "/v1/policy/entities"
	PathEntity     = "/v1/policy/entities/{type}/{id...}"
	PathBundle     = "/v1/policy/bundle"
	PathBundleKeys = "/v1/policy/bundle/keys"
)

// Limits of the API.
const (
	// MaxPushBytes bounds the body of a push.
	MaxPushBytes = 8 << 20
	// MaxEntitiesBytes bounds the body of an entities put or replace.
	MaxEntitiesBytes = 8 << 20
	// MaxBundleWait is the longest long-poll of GET /v1/policy/bundle.
	MaxBundleWait = 60 * time.Second
	// maxProblemsSent bounds the problems listed in an error body.
	maxProblemsSent = 1000
)

// Error codes of the policy API, beside httpapi's.
const (
	CodeInvalidPolicy   = "invalid_policy"
	CodeInvalidEntities = "invalid_entities"
)

// ProblemJSON is one problem in an error body: a policy problem at a
// position (line and column 0 when unknown), or an entity problem with only
// a message.
type ProblemJSON struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Message string `json:"message"`
}

// ErrorBody is the error body of the policy API: httpapi's, plus the
// problems of a refused push or entity change.
type ErrorBody struct {
	Error struct {
		Code      string        `json:"code"`
		Message   string        `json:"message"`
		RequestID string        `json:"request_id,omitempty"`
		Problems  []ProblemJSON `json:"problems,omitempty"`
	} `json:"error"`
}

// PushRequest is the body of POST /v1/policy/versions.
type PushRequest struct {
	// Files maps each policy file name ("name.cedar") to its Cedar text.
	Files   map[string]string `json:"files"`
	Comment string            `json:"comment,omitempty"`
}

// RollbackRequest is the body of POST /v1/policy/rollback; To 0 (or
// omitted) means the version before the active one.
type RollbackRequest struct {
	To int64 `json:"to,omitempty"`
}

// VersionList is the answer of GET /v1/policy/versions.
type VersionList struct {
	Versions []VersionInfo `json:"versions"`
}

// VersionDetail is the answer of GET /v1/policy/versions/{version} and
// GET /v1/policy/active.
type VersionDetail struct {
	VersionInfo
	Files map[string]string `json:"files"`
}

// EntitiesResult is the answer of an entity change.
type EntitiesResult struct {
	EntitiesVersion int64 `json:"entities_version"`
	BundleVersion   int64 `json:"bundle_version"`
}

// BundleKey is one bundle-signing public key.
type BundleKey struct {
	KeyID string `json:"key_id"`
	// PublicKey is the raw 32-byte Ed25519 key, base64url without padding.
	PublicKey string `json:"public_key"`
}

// BundleKeys is the answer of GET /v1/policy/bundle/keys.
type BundleKeys struct {
	Keys []BundleKey `json:"keys"`
}

// Register adds the API to mux: the repository's management under admin,
// the bundle under pep (enforcement points), and the bundle keys public.
func (r *Repository) Register(mux *http.ServeMux, admin, pep func(http.Handler) http.Handler) {
	h := func(f http.HandlerFunc) http.Handler { return f }
	mux.Handle("POST "+PathVersions, admin(h(r.handlePush)))
	mux.Handle("GET "+PathVersions, admin(h(r.handleVersions)))
	mux.Handle("GET "+PathVersion, admin(h(r.handleVersion)))
	mux.Handle("GET "+PathActive, admin(h(r.handleActive)))
	mux.Handle("POST "+PathRollback, admin(h(r.handleRollback)))
	mux.Handle("GET "+PathEntities, admin(h(r.handleEntities)))
	mux.Handle("POST "+PathEntities, admin(h(r.handlePutEntities)))
	mux.Handle("PUT "+PathEntities, admin(h(r.handlePutEntities)))
	mux.Handle("GET "+PathEntity, admin(h(r.handleEntity)))
	mux.Handle("DELETE "+PathEntity, admin(h(r.handleDeleteEntity)))
	mux.Handle("GET "+PathBundle, pep(h(r.handleBundle)))
	mux.Handle("GET "+PathBundleKeys, h(r.handleKeys))
}

// requestActor is the actor of a request: the admin credential, else the
// caller the control plane authenticated.
func requestActor(req *http.Request) Actor {
	if id := adminauth.CredentialID(req.Context()); id != "" {
		return Actor{Kind: "admin", ID: id}
	}
	if c, ok := CallerFrom(req.Context()); ok {
		return c
	}
	return Actor{}
}

func (r *Repository) writeErr(w http.ResponseWriter, req *http.Request, err error) {
	var (
		le  *LoadError
		ee  *EntitiesError
		ae  *httpapi.Error
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &le):
		problems := make([]ProblemJSON, 0, min(len(le.Problems), maxProblemsSent))
		for _, p := range le.Problems[:min(len(le.Problems), maxProblemsSent)] {
			problems = append(problems, ProblemJSON(p))
		}
		writeRepoProblems(w, req, CodeInvalidPolicy, fmt.Sprintf("the policy set is invalid: %d problem(s)", len(le.Problems)), problems)
	case errors.As(err, &ee):
		problems := make([]ProblemJSON, 0, len(ee.Problems))
		for _, p := range ee.Problems {
			problems = append(problems, ProblemJSON{Message: p})
		}
		writeRepoProblems(w, req, CodeInvalidEntities, fmt.Sprintf("the entities are invalid: %d problem(s)", len(ee.Problems)), problems)
	case errors.As(err, &ae):
		httpapi.WriteError(w, req, r.log, ae)
	case errors.As(err, &mbe):
		httpapi.WriteError(w, req, r.log, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "request body exceeds %d bytes", mbe.Limit))
	case errors.Is(err, ErrNotFound):
		httpapi.WriteError(w, req, r.log, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "%s", err.Error()))
	case errors.Is(err, ErrInvalid):
		httpapi.WriteError(w, req, r.log, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "%s", err.Error()))
	default:
		httpapi.WriteError(w, req, r.log, err)
	}
}

func writeRepoProblems(w http.ResponseWriter, req *http.Request, code, msg string, problems []ProblemJSON) {
	var body ErrorBody
	body.Error.Code, body.Error.Message, body.Error.RequestID, body.Error.Problems = code, msg, httpapi.RequestID(req.Context()), problems
	httpapi.WriteJSON(w, http.StatusBadRequest, body)
}

func (r *Repository) handlePush(w http.ResponseWriter, req *http.Request) {
	var in PushRequest
	if err := httpapi.DecodeJSON(w, req, MaxPushBytes, &in); err != nil {
		r.writeErr(w, req, err)
		return
	}
	if in.Files == nil {
		r.writeErr(w, req, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, `"files" is required (an empty object is an empty policy set)`))
		return
	}
	info, err := r.Push(req.Context(), in.Files, in.Comment, requestActor(req))
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	w.Header().Set("Location", PathVersions+"/"+strconv.FormatInt(info.Version, 10))
	httpapi.WriteJSON(w, http.StatusCreated, info)
}

func (r *Repository) handleVersions(w http.ResponseWriter, req *http.Request) {
	list, err := r.Versions(req.Context())
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, VersionList{Versions: list})
}

func (r *Repository) handleVersion(w http.ResponseWriter, req *http.Request) {
	v, err := strconv.ParseInt(req.PathValue("version"), 10, 64)
	if err != nil || v <= 0 {
		r.writeErr(w, req, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "the version must be a positive integer"))
		return
	}
	info, files, err := r.Version(req.Context(), v)
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, VersionDetail{VersionInfo: info, Files: files})
}

func (r *Repository) handleActive(w http.ResponseWriter, req *http.Request) {
	info, files, err := r.Active(req.Context())
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, VersionDetail{VersionInfo: info, Files: files})
}

func (r *Repository) handleRollback(w http.ResponseWriter, req *http.Request) {
	var in RollbackRequest
	if req.ContentLength != 0 {
		if err := httpapi.DecodeJSON(w, req, 4096, &in); err != nil {
			r.writeErr(w, req, err)
			return
		}
	}
	if in.To < 0 {
		r.writeErr(w, req, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, `"to" must be a positive version`))
		return
	}
	info, err := r.Rollback(req.Context(), in.To, requestActor(req))
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, info)
}

// validEntityTypeName is an entity type, bare ("User") or qualified.
var validEntityTypeName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$`)

func (r *Repository) handleEntities(w http.ResponseWriter, req *http.Request) {
	typ := req.URL.Query().Get("type")
	if typ != "" && (len(typ) > 200 || !validEntityTypeName.MatchString(typ)) {
		r.writeErr(w, req, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "type must be an entity type name such as User or Bulwark::User"))
		return
	}
	ents, err := r.Entities(req.Context(), typ)
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(ents)
}

func (r *Repository) handlePutEntities(w http.ResponseWriter, req *http.Request) {
	if ct := req.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			r.writeErr(w, req, httpapi.Errorf(http.StatusUnsupportedMediaType, httpapi.CodeUnsupportedType, "content type must be application/json"))
			return
		}
	}
	if req.ContentLength > MaxEntitiesBytes {
		r.writeErr(w, req, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "request body is %d bytes; the limit is %d", req.ContentLength, MaxEntitiesBytes))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxEntitiesBytes))
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	replace := req.Method == http.MethodPut
	v, err := r.PutEntities(req.Context(), body, replace, requestActor(req))
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	_, bv := r.Bundle()
	httpapi.WriteJSON(w, http.StatusOK, EntitiesResult{EntitiesVersion: v, BundleVersion: bv})
}

// entityUID reads {type} and {id} of an entity path.
func pathEntityUID(req *http.Request) (cedar.EntityUID, error) {
	typ, id := req.PathValue("type"), req.PathValue("id")
	if len(typ) > 200 || !validEntityTypeName.MatchString(typ) {
		return cedar.EntityUID{}, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "type must be an entity type name such as User or Bulwark::User")
	}
	if id == "" || len(id) > MaxEntityIDLen {
		return cedar.EntityUID{}, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "the entity ID must be 1 to %d bytes", MaxEntityIDLen)
	}
	return cedar.NewEntityUID(cedar.EntityType(qualifyType(typ)), cedar.String(id)), nil
}

func (r *Repository) handleEntity(w http.ResponseWriter, req *http.Request) {
	uid, err := pathEntityUID(req)
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	ent, err := r.Entity(req.Context(), uid)
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, ent)
}

func (r *Repository) handleDeleteEntity(w http.ResponseWriter, req *http.Request) {
	uid, err := pathEntityUID(req)
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	v, err := r.DeleteEntity(req.Context(), uid, requestActor(req))
	if err != nil {
		r.writeErr(w, req, err)
		return
	}
	_, bv := r.Bundle()
	httpapi.WriteJSON(w, http.StatusOK, EntitiesResult{EntitiesVersion: v, BundleVersion: bv})
}

// parseBundleWait reads ?wait=: a duration ("30s") or seconds ("30"); above
// MaxBundleWait it is MaxBundleWait.
func parseBundleWait(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.ParseUint(s, 10, 32)
		if nerr != nil {
			return 0, fmt.Errorf("wait %q must be a duration such as 30s", clipRepo(s, 32))
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, fmt.Errorf("wait %q must not be negative", clipRepo(s, 32))
	}
	return min(d, MaxBundleWait), nil
}

// bundleETagVersion parses an If-None-Match of the form "N" (one entity tag).
func bundleETagVersion(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 3 || s[0] != '"' || s[len(s)-1] != '"' {
		return 0, false
	}
	v, err := strconv.ParseInt(s[1:len(s)-1], 10, 64)
	return v, err == nil && v >= 0
}

func bundleETag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

func (r *Repository) handleBundle(w http.ResponseWriter, req *http.Request) {
	wait, err := parseBundleWait(req.URL.Query().Get("wait"))
	if err != nil {
		r.writeErr(w, req, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "%s", err.Error()))
		return
	}
	raw, version := r.Bundle()
	if have, ok := bundleETagVersion(req.Header.Get("If-None-Match")); ok && have >= version {
		if wait == 0 {
			r.notModified(w, version)
			return
		}
		ctx, cancel := context.WithTimeout(req.Context(), wait)
		defer cancel()
		raw, version, err = r.WaitBundle(ctx, have)
		if err != nil {
			// The wait ended, the client went away or the server is
			// shutting down: nothing newer. (Writing to a client that
			// left is harmless; returning without an answer would send
			// an empty 200.)
			_, cur := r.Bundle()
			r.notModified(w, cur)
			return
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("ETag", bundleETag(version))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(raw)
}

func (r *Repository) notModified(w http.ResponseWriter, version int64) {
	w.Header().Set("ETag", bundleETag(version))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNotModified)
}

func (r *Repository) handleKeys(w http.ResponseWriter, req *http.Request) {
	keys := r.PublicKeys()
	out := BundleKeys{Keys: make([]BundleKey, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, BundleKey{KeyID: bundleKeyID(k), PublicKey: base64.RawURLEncoding.EncodeToString(k)})
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}
