package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error is an OAuth 2.0 error response (RFC 6749 §5.2, OIDC Core §3.1.2.6,
// RFC 9449 §7.1). The values below are immutable sentinels: WithDescription
// and WithCause return copies, never modify them.
type Error struct {
	// Code is the "error" value, e.g. "invalid_grant".
	Code string
	// Description is the "error_description": safe to show the client.
	Description string
	// Status is the HTTP status of the response.
	Status int
	// cause is logged but never sent.
	cause error
}

func (e *Error) Error() string {
	msg := e.Code
	if e.Description != "" {
		msg += ": " + e.Description
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.cause }

// Is matches errors by code, so errors.Is(err, ErrInvalidGrant) holds for
// every copy of the sentinel.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// WithDescription returns a copy of e with a formatted description.
func (e *Error) WithDescription(format string, args ...any) *Error {
	c := *e
	c.Description = fmt.Sprintf(format, args...)
	return &c
}

// WithCause returns a copy of e carrying cause for the logs.
func (e *Error) WithCause(cause error) *Error {
	c := *e
	c.cause = cause
	return &c
}

// The OAuth errors Bulwark returns.
var (
	ErrInvalidRequest          = &Error{Code: "invalid_request", Status: http.StatusBadRequest}
	ErrInvalidClient           = &Error{Code: "invalid_client", Status: http.StatusUnauthorized}
	ErrInvalidGrant            = &Error{Code: "invalid_grant", Status: http.StatusBadRequest}
	ErrUnauthorizedClient      = &Error{Code: "unauthorized_client", Status: http.StatusBadRequest}
	ErrUnsupportedGrantType    = &Error{Code: "unsupported_grant_type", Status: http.StatusBadRequest}
	ErrUnsupportedResponseType = &Error{Code: "unsupported_response_type", Status: http.StatusBadRequest}
	ErrInvalidScope            = &Error{Code: "invalid_scope", Status: http.StatusBadRequest}
	ErrInvalidTarget           = &Error{Code: "invalid_target", Status: http.StatusBadRequest}
	ErrAccessDenied            = &Error{Code: "access_denied", Status: http.StatusForbidden}
	ErrInvalidRequestURI       = &Error{Code: "invalid_request_uri", Status: http.StatusBadRequest}
	ErrInvalidRequestObject    = &Error{Code: "invalid_request_object", Status: http.StatusBadRequest}
	ErrLoginRequired           = &Error{Code: "login_required", Status: http.StatusBadRequest}
	ErrConsentRequired         = &Error{Code: "consent_required", Status: http.StatusBadRequest}
	ErrInvalidDPoPProof        = &Error{Code: "invalid_dpop_proof", Status: http.StatusBadRequest}
	ErrUseDPoPNonce            = &Error{Code: "use_dpop_nonce", Status: http.StatusBadRequest}
	ErrInvalidToken            = &Error{Code: "invalid_token", Status: http.StatusUnauthorized}
	ErrUnsupportedTokenType    = &Error{Code: "unsupported_token_type", Status: http.StatusBadRequest}
	ErrTemporarilyUnavailable  = &Error{Code: "temporarily_unavailable", Status: http.StatusServiceUnavailable}
	ErrServerError             = &Error{Code: "server_error", Status: http.StatusInternalServerError}
)

// errorBody is the JSON of an OAuth error response.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// writeOAuthError writes err as an OAuth JSON error response. An error that
// is not an *Error is logged and sent as server_error without detail.
// invalid_client answers 401 with a WWW-Authenticate challenge only when
// the client tried HTTP authentication; Bulwark has no HTTP-auth methods,
// so it is 401 with no challenge per RFC 6749 §5.2.
func (s *Server) writeOAuthError(w http.ResponseWriter, r *http.Request, err error) {
	var oe *Error
	if !errors.As(err, &oe) {
		s.log.ErrorContext(r.Context(), "identity request failed", "path", r.URL.Path, "error", err)
		oe = ErrServerError.WithDescription("the request could not be completed")
	} else if oe.cause != nil {
		s.log.InfoContext(r.Context(), "identity request refused", "path", r.URL.Path, "error_code", oe.Code, "error", oe.cause)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if oe.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(oe.Status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: oe.Code, Description: oe.Description})
}

// writeNoStoreJSON writes a 200 JSON response that caches must not keep
// (RFC 6749 §5.1).
func writeNoStoreJSON(w http.ResponseWriter, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}

// writeJSON writes a 200 JSON response.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}
