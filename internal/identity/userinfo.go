package identity

import (
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// userInfo is the UserInfo response (OIDC Core §5.3.2): the subject and
// the standard claims its scopes grant.
type userInfo struct {
	Sub               string `json:"sub"`
	Name              string `json:"name,omitempty"`
	PreferredUsername string `json:"preferred_username,omitempty"`
	Email             string `json:"email,omitempty"`
}

// bearerError is a refusal of a protected-resource request (RFC 6750 §3,
// RFC 9449 §7.1), answered with a WWW-Authenticate challenge.
type bearerError struct {
	status int
	code   string // "" when the request carried no token
	desc   string
	scheme string // the challenge's scheme; "" offers both
	scope  string
}

func invalidToken(scheme, format string, args ...any) *bearerError {
	return &bearerError{status: http.StatusUnauthorized, code: "invalid_token", desc: fmt.Sprintf(format, args...), scheme: scheme}
}

// writeBearerError writes e with its challenge. The DPoP challenge lists
// the proof algorithms accepted.
func writeBearerError(w http.ResponseWriter, e *bearerError) {
	challenge := func(scheme string) string {
		var params []string
		if scheme == "DPoP" {
			params = append(params, `algs="`+strings.Join(allowedClientAlgs, " ")+`"`)
		}
		if e.code != "" {
			params = append(params, `error="`+challengeValue(e.code)+`"`)
		}
		if e.desc != "" {
			params = append(params, `error_description="`+challengeValue(e.desc)+`"`)
		}
		if e.scope != "" {
			params = append(params, `scope="`+challengeValue(e.scope)+`"`)
		}
		if len(params) == 0 {
			return scheme
		}
		return scheme + " " + strings.Join(params, ", ")
	}
	h := w.Header()
	switch e.scheme {
	case "":
		h.Add("WWW-Authenticate", challenge("DPoP"))
		h.Add("WWW-Authenticate", challenge("Bearer"))
	default:
		h.Add("WWW-Authenticate", challenge(e.scheme))
	}
	h.Set("Cache-Control", "no-store")
	if e.code == "" {
		w.WriteHeader(e.status)
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: e.code, Description: e.desc})
}

// challengeValue keeps the characters RFC 6750 §3 allows in a challenge's
// quoted values (%x20-21 / %x23-5B / %x5D-7E), dropping the rest.
func challengeValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}

// handleUserInfo serves GET and POST /oauth2/userinfo (OIDC Core §5.3).
// The access token comes in the Authorization header: "Bearer" for bearer
// and certificate-bound tokens, "DPoP" with a proof for DPoP-bound ones.
// It must carry the openid scope and belong to an enabled user.
func (s *Server) handleUserInfo(w http.ResponseWriter, r *http.Request) {
	info, berr, err := s.userInfo(w, r)
	switch {
	case err != nil:
		s.writeOAuthError(w, r, err)
	case berr != nil:
		code := berr.code
		if code == "" {
			code = "no_token"
		}
		s.metrics.tokenErrors.WithLabelValues("userinfo", code).Inc()
		writeBearerError(w, berr)
	default:
		writeNoStoreJSON(w, info)
	}
}

// userInfo authorizes the request and returns the user's claims, a
// refusal, or a storage error.
func (s *Server) userInfo(w http.ResponseWriter, r *http.Request) (*userInfo, *bearerError, error) {
	authz := r.Header.Values("Authorization")
	if len(authz) == 0 {
		return nil, &bearerError{status: http.StatusUnauthorized}, nil
	}
	scheme, token, ok := strings.Cut(authz[0], " ")
	switch {
	case len(authz) > 1 || !ok || token == "" || strings.ContainsAny(token, " \t"):
		return nil, &bearerError{status: http.StatusBadRequest, code: "invalid_request", desc: "one Authorization header with one token is required"}, nil
	case strings.EqualFold(scheme, "Bearer"):
		scheme = "Bearer"
	case strings.EqualFold(scheme, "DPoP"):
		scheme = "DPoP"
	default:
		return nil, &bearerError{status: http.StatusUnauthorized}, nil
	}

	ctx := r.Context()
	t, err := s.inspectAccessToken(ctx, token)
	switch {
	case errors.Is(err, errNotOurToken):
		return nil, invalidToken(scheme, "the access token was not issued by this server"), nil
	case errors.Is(err, errTokenInactive):
		return nil, invalidToken(scheme, "the access token is expired, revoked or not yet valid"), nil
	case err != nil:
		return nil, nil, err
	}

	var jkt, x5t string
	if t.Cnf != nil {
		jkt, x5t = t.Cnf.JKT, t.Cnf.X5TS256
	}
	switch {
	case jkt != "" && scheme != "DPoP":
		return nil, invalidToken("DPoP", "a DPoP-bound access token needs the DPoP scheme and a proof"), nil
	case jkt == "" && scheme == "DPoP":
		return nil, invalidToken("Bearer", "the access token is not DPoP-bound"), nil
	case jkt != "":
		proof, err := s.checkDPoP(w, r, token)
		if err != nil {
			if oe, ok := errors.AsType[*Error](err); ok && (errors.Is(oe, ErrUseDPoPNonce) || errors.Is(oe, ErrInvalidDPoPProof)) {
				// A resource server answers proof errors with 401 and a
				// challenge (RFC 9449 §7.1, §9); the DPoP-Nonce header is
				// already set.
				return nil, &bearerError{status: http.StatusUnauthorized, code: oe.Code, desc: oe.Description, scheme: "DPoP"}, nil
			}
			if oe, ok := errors.AsType[*Error](err); ok {
				return nil, invalidToken("DPoP", "%s", oe.Description), nil
			}
			return nil, nil, err
		}
		if proof == nil {
			return nil, invalidToken("DPoP", "a DPoP proof is required"), nil
		}
		if subtle.ConstantTimeCompare([]byte(proof.Thumbprint), []byte(jkt)) != 1 {
			return nil, invalidToken("DPoP", "the DPoP proof is not signed by the key the token is bound to"), nil
		}
	}
	if x5t != "" {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return nil, invalidToken(scheme, "the access token is bound to a client certificate, and none was presented"), nil
		}
		sum := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
		if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(x5t)) != 1 {
			return nil, invalidToken(scheme, "the access token is bound to another client certificate"), nil
		}
	}

	scopes := splitScope(t.Scope)
	if !slices.Contains(scopes, ScopeOpenID) {
		return nil, &bearerError{status: http.StatusForbidden, code: "insufficient_scope",
			desc: "the access token lacks the openid scope", scheme: scheme, scope: ScopeOpenID}, nil
	}
	if _, err := s.clients.get(ctx, t.ClientID); errors.Is(err, ErrClientNotFound) {
		return nil, invalidToken(scheme, "the access token's client is disabled"), nil
	} else if err != nil {
		return nil, nil, err
	}
	var (
		username, email, name string
		disabled              sql.NullInt64
	)
	err = s.db.QueryRowContext(ctx, "SELECT username, email, name, disabled_at FROM identity_users WHERE user_id = ?", t.Subject).
		Scan(&username, &email, &name, &disabled)
	switch {
	case errors.Is(err, sql.ErrNoRows) || (err == nil && disabled.Valid):
		return nil, invalidToken(scheme, "the access token does not belong to an active user"), nil
	case err != nil:
		return nil, nil, fmt.Errorf("userinfo: look up user: %w", err)
	}
	info := &userInfo{Sub: t.Subject}
	if slices.Contains(scopes, "profile") {
		info.Name, info.PreferredUsername = name, username
	}
	if slices.Contains(scopes, "email") {
		info.Email = email
	}
	return info, nil, nil
}
