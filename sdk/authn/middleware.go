package authn

import (
	"errors"
	"net/http"
	"strings"
)

// Middleware verifies the access token of every request (VerifyRequest)
// and serves next with the Principal in the request's context
// (FromContext). A refused request gets 401 with a WWW-Authenticate
// challenge (RFC 6750, RFC 9449), or 400 when the Authorization header is
// malformed; the response never echoes the token or says more than the
// OAuth error code.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := v.VerifyRequest(r)
		if err != nil {
			v.writeError(w, err, nil)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), p)))
	})
}

// RequireScopes returns middleware that serves only requests whose token
// carries every one of scopes, and answers others 403 insufficient_scope.
// It uses the Principal that Middleware put in the context, or verifies the
// request itself when there is none.
func (v *Verifier) RequireScopes(scopes ...string) func(http.Handler) http.Handler {
	scopes = append([]string(nil), scopes...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := FromContext(r.Context())
			if !ok {
				var err error
				if p, err = v.VerifyRequest(r); err != nil {
					v.writeError(w, err, nil)
					return
				}
				r = r.WithContext(NewContext(r.Context(), p))
			}
			for _, s := range scopes {
				if p.HasScope(s) {
					continue
				}
				scheme := schemeBearer
				if p.Confirmation.JKT != "" {
					scheme = schemeDPoP
				}
				rf := &refusal{reason: ReasonInsufficientScope, detail: "token lacks a required scope", p: p}
				err := v.report(r.Context(), rf, &Presentation{RemoteAddr: r.RemoteAddr, Method: r.Method, Path: r.URL.Path}, scheme)
				v.writeError(w, err, scopes)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// writeError answers a refused request with the status, challenge and
// OAuth error code for err's reason. scopes are the scopes required, for
// insufficient_scope.
func (v *Verifier) writeError(w http.ResponseWriter, err error, scopes []string) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Reason: ReasonMalformed}
	}
	algs := `algs="` + v.dpopAlgs + `"`
	status, code := http.StatusUnauthorized, "invalid_token"
	var challenges []string
	switch e.Reason {
	case ReasonMissingToken:
		code = ""
		challenges = []string{schemeBearer, schemeDPoP + " " + algs}
	case ReasonInvalidRequest:
		status, code = http.StatusBadRequest, "invalid_request"
		challenges = []string{schemeBearer + ` error="invalid_request"`}
	case ReasonInsufficientScope:
		status, code = http.StatusForbidden, "insufficient_scope"
		challenges = []string{e.Scheme + ` error="insufficient_scope", scope="` + strings.Join(scopes, " ") + `"`}
	case ReasonDPoPInvalid, ReasonDPoPReplay:
		code = "invalid_dpop_proof"
		challenges = []string{schemeDPoP + ` error="invalid_dpop_proof", ` + algs}
	case ReasonDPoPRequired:
		challenges = []string{schemeDPoP + ` error="invalid_token", ` + algs}
	default:
		if e.Scheme == schemeDPoP {
			challenges = []string{schemeDPoP + ` error="invalid_token", ` + algs}
		} else {
			challenges = []string{schemeBearer + ` error="invalid_token"`}
		}
	}
	h := w.Header()
	for _, c := range challenges {
		h.Add("WWW-Authenticate", c)
	}
	h.Set("Cache-Control", "no-store")
	if code == "" {
		w.WriteHeader(status)
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"error":"` + code + `"}`))
}
