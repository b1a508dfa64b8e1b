package identity

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// Limits on token requests.
const (
	// maxTokenFormBytes bounds the body of a token request.
	maxTokenFormBytes = 64 << 10
	// maxTokenFormParams bounds the distinct parameters of a token request.
	maxTokenFormParams = 64
	// maxRepeatedParam bounds the values of a parameter that may repeat.
	maxRepeatedParam = 16
)

// repeatableParams may occur more than once (RFC 8707 §2, RFC 8693 §2.1);
// every other parameter must not (RFC 6749 §3.2).
var repeatableParams = []string{"resource", "audience"}

// parseTokenForm parses the body of a token request: an
// application/x-www-form-urlencoded body (UTF-8) of at most
// maxTokenFormBytes, valid UTF-8 once decoded, with no parameter repeated
// except resource and audience. Errors are invalid_request.
func parseTokenForm(body []byte, contentType string) (url.Values, error) {
	if len(body) > maxTokenFormBytes {
		return nil, ErrInvalidRequest.WithDescription("the request body is larger than %d bytes", maxTokenFormBytes)
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, ErrInvalidRequest.WithDescription("the request body must be application/x-www-form-urlencoded")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, ErrInvalidRequest.WithDescription("the request body must be UTF-8")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, ErrInvalidRequest.WithDescription("the request body is not a valid form")
	}
	if len(form) > maxTokenFormParams {
		return nil, ErrInvalidRequest.WithDescription("too many parameters")
	}
	for k, vs := range form {
		if !utf8.ValidString(k) || k == "" {
			return nil, ErrInvalidRequest.WithDescription("a parameter name is empty or not UTF-8")
		}
		if len(vs) > 1 && (!slices.Contains(repeatableParams, k) || len(vs) > maxRepeatedParam) {
			return nil, ErrInvalidRequest.WithDescription("parameter %q is repeated", truncate(k, 40))
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return nil, ErrInvalidRequest.WithDescription("parameter %q is not UTF-8", truncate(k, 40))
			}
		}
	}
	return form, nil
}

// truncate shortens s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (s *Server) registerToken(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathToken, s.handleToken)
}

// tokenRequest is a token request being served.
type tokenRequest struct {
	r      *http.Request
	form   url.Values
	client *Client
	grant  string
	// proof is the request's verified DPoP proof, if any.
	proof *dpop.Proof
	// cnf is the sender constraint of the tokens issued, if any.
	cnf *cnfClaim
	// audit holds attributes for the audit event of a refusal.
	audit map[string]any
}

// tokenResponse is a successful token response (RFC 6749 §5.1, RFC 8693
// §2.2.1).
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
	RefreshToken    string `json:"refresh_token,omitempty"`
	IDToken         string `json:"id_token,omitempty"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
}

// response returns the token response for access token at with scopes.
func (tr *tokenRequest) response(at *issuedAccess, scopes []string) *tokenResponse {
	typ := "Bearer"
	if tr.cnf != nil && tr.cnf.JKT != "" {
		typ = "DPoP"
	}
	return &tokenResponse{AccessToken: at.token, TokenType: typ, ExpiresIn: int64(at.ttl.Seconds()), Scope: joinScope(scopes)}
}

// noteAudit adds an attribute to the audit event of a refusal.
func (tr *tokenRequest) noteAudit(k string, v any) {
	if tr.audit == nil {
		tr.audit = map[string]any{}
	}
	tr.audit[k] = v
}

// grantFlow serves one grant type.
type grantFlow func(s *Server, ctx context.Context, tr *tokenRequest) (*tokenResponse, error)

// grantFlows are the grant types the token endpoint serves.
var grantFlows = map[string]grantFlow{
	GrantAuthorizationCode: (*Server).authorizationCodeGrant,
	GrantClientCredentials: (*Server).clientCredentialsGrant,
	GrantRefreshToken:      (*Server).refreshTokenGrant,
	GrantTokenExchange:     (*Server).tokenExchangeGrant,
}

// grantActivity is the audit activity of a grant type's token responses.
func grantActivity(grant string) int {
	switch grant {
	case GrantRefreshToken:
		return actServiceTicketRenew
	case GrantTokenExchange:
		return actServiceTicket
	}
	return actAuthTicket
}

// handleToken serves POST /oauth2/token.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	tr := &tokenRequest{r: r}
	resp, err := s.serveToken(w, tr)
	if err != nil {
		s.tokenRefused(w, tr, err)
		return
	}
	s.setDPoPNonce(w)
	writeNoStoreJSON(w, resp)
}

// errClientAuthAudited wraps client-authentication failures, which
// authenticateClient has already audited and counted.
type errClientAuthAudited struct{ err error }

func (e errClientAuthAudited) Error() string { return e.err.Error() }
func (e errClientAuthAudited) Unwrap() error { return e.err }

// serveToken authenticates the request and runs its grant.
func (s *Server) serveToken(w http.ResponseWriter, tr *tokenRequest) (*tokenResponse, error) {
	r := tr.r
	if r.URL.RawQuery != "" {
		return nil, ErrInvalidRequest.WithDescription("token request parameters belong in the request body, not the URL")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTokenFormBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, ErrInvalidRequest.WithDescription("the request body is larger than %d bytes", maxTokenFormBytes)
		}
		return nil, ErrInvalidRequest.WithDescription("the request body could not be read").WithCause(err)
	}
	if tr.form, err = parseTokenForm(body, r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	tr.grant = tr.form.Get("grant_type")
	// DPoP comes before client authentication, so that a request refused
	// for want of a server nonce can be repeated with its client assertion
	// unspent.
	if tr.proof, err = s.checkDPoP(w, r, ""); err != nil {
		return nil, err
	}
	if tr.client, err = s.authenticateClient(r, tr.form, PathToken); err != nil {
		return nil, errClientAuthAudited{err}
	}
	flow, known := grantFlows[tr.grant]
	switch {
	case tr.grant == "":
		return nil, ErrInvalidRequest.WithDescription("grant_type is required")
	case !known:
		return nil, ErrUnsupportedGrantType.WithDescription("grant_type %q is not supported", truncate(tr.grant, 80))
	case !tr.client.AllowsGrant(tr.grant):
		return nil, ErrUnauthorizedClient.WithDescription("the client is not registered for grant_type %s", tr.grant)
	}
	if tr.cnf, err = senderConstraint(r, tr.client, tr.proof); err != nil {
		return nil, err
	}
	return flow(s, r.Context(), tr)
}

// senderConstraint returns what the tokens of a request are bound to: the
// DPoP key when a proof was sent, else the client certificate when the
// client is registered for certificate-bound tokens and presented one.
// FAPI 2.0 clients must have one or the other.
func senderConstraint(r *http.Request, c *Client, proof *dpop.Proof) (*cnfClaim, error) {
	if proof != nil {
		return &cnfClaim{JKT: proof.Thumbprint}, nil
	}
	if c.DPoPBoundAccessTokens {
		return nil, ErrInvalidDPoPProof.WithDescription("this client must send a DPoP proof")
	}
	if chain := peerCertificates(r); c.TLSClientCertificateBoundAccessTokens && len(chain) > 0 {
		return &cnfClaim{X5TS256: certThumbprint(chain[0])}, nil
	}
	if c.SenderConstrained() {
		return nil, ErrInvalidRequest.WithDescription("this client's tokens must be sender-constrained: send a DPoP proof or a client certificate")
	}
	return nil, nil
}

// tokenRefused writes the error response of a refused token request,
// counts it and audits it. Client-authentication failures were audited
// when they happened; a request for a DPoP nonce is part of the protocol,
// not an event.
func (s *Server) tokenRefused(w http.ResponseWriter, tr *tokenRequest, err error) {
	var authFail errClientAuthAudited
	if errors.As(err, &authFail) {
		s.writeOAuthError(w, tr.r, authFail.err)
		return
	}
	code := errorLabel(err)
	s.metrics.tokenErrors.WithLabelValues("token", code).Inc()
	if tr.form != nil && code != ErrUseDPoPNonce.Code && code != ErrServerError.Code {
		ev := newEvent(classAuthentication, grantActivity(tr.grant), false, code)
		ev.Message = "token request refused"
		var oe *Error
		if errors.As(err, &oe) && oe.Description != "" {
			ev.StatusDetail = code + ": " + oe.Description
		}
		ev.Actor = &audit.Actor{AppUID: auditText(tr.form.Get("client_id"), maxClaimedIDLen)}
		if tr.client != nil {
			ev.Actor.AppUID, ev.Actor.AppName = tr.client.ID, tr.client.Name
		}
		ev.Unmapped = map[string]any{"grant_type": auditText(tr.grant, 80)}
		for k, v := range tr.audit {
			ev.Unmapped[k] = v
		}
		if aerr := s.emit(tr.r.Context(), tr.r, ev); aerr != nil {
			err = aerr // nothing is refused unrecorded either
		}
	}
	s.writeOAuthError(w, tr.r, err)
}

// requestedAudiences returns the audiences a request names (resource and
// audience parameters), each of which must be in allowed, or def when it
// names none.
func requestedAudiences(form url.Values, allowed, def []string) ([]string, error) {
	var out []string
	for _, a := range slices.Concat(form["resource"], form["audience"]) {
		if a == "" || slices.Contains(out, a) {
			continue
		}
		if !slices.Contains(allowed, a) {
			return nil, ErrInvalidTarget.WithDescription("the audience %q is not allowed here", truncate(a, 200))
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return slices.Clone(def), nil
	}
	return out, nil
}

// narrowScopes returns the scopes of the scope parameter, each of which
// must be in allowed, or def when the parameter is empty.
func narrowScopes(param string, allowed, def []string) ([]string, error) {
	req := splitScope(param)
	if len(req) == 0 {
		return slices.Clone(def), nil
	}
	for _, sc := range req {
		if !slices.Contains(allowed, sc) {
			return nil, ErrInvalidScope.WithDescription("the scope %q is not allowed here", truncate(sc, 128))
		}
	}
	return req, nil
}
