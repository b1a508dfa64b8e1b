package identity

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// maxMgmtForm bounds the form body of the introspection and revocation
// endpoints.
const maxMgmtForm = 64 << 10

// nbfLeeway absorbs clock skew between replicas for a token's nbf and iat.
const nbfLeeway = 5 * time.Second

func (s *Server) registerTokenManagement(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathIntrospect, s.handleIntrospect)
	mux.HandleFunc("POST "+PathRevoke, s.handleRevoke)
	mux.HandleFunc("GET "+PathRevocations, s.handleRevocationFeed)
	mux.HandleFunc("GET "+PathUserInfo, s.handleUserInfo)
	mux.HandleFunc("POST "+PathUserInfo, s.handleUserInfo)
}

// parseMgmtForm reads an application/x-www-form-urlencoded body of at most
// maxMgmtForm bytes in which no parameter repeats. Parameters in the URL
// are refused: tokens do not belong in URLs.
func parseMgmtForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	if r.URL.RawQuery != "" {
		return nil, ErrInvalidRequest.WithDescription("parameters must be sent in the request body, not the URL")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, ErrInvalidRequest.WithDescription("the body must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxMgmtForm))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, ErrInvalidRequest.WithDescription("the request body is larger than %d KiB", maxMgmtForm>>10)
		}
		return nil, ErrInvalidRequest.WithDescription("the request body could not be read").WithCause(err)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, ErrInvalidRequest.WithDescription("malformed form body")
	}
	for k, vs := range form {
		if len(vs) > 1 {
			if len(k) > 64 {
				k = k[:64]
			}
			return nil, ErrInvalidRequest.WithDescription("parameter %q is repeated", k)
		}
	}
	return form, nil
}

// failMgmt counts and writes a refused introspection or revocation request.
func (s *Server) failMgmt(w http.ResponseWriter, r *http.Request, endpoint string, err error) {
	code := ErrServerError.Code
	if oe, ok := errors.AsType[*Error](err); ok {
		code = oe.Code
	}
	s.metrics.tokenErrors.WithLabelValues(endpoint, code).Inc()
	s.writeOAuthError(w, r, err)
}

// inspectedToken is what introspection, revocation and userinfo read from
// an access token of this server (RFC 9068).
type inspectedToken struct {
	jwt.Claims
	ClientID string          `json:"client_id"`
	Scope    string          `json:"scope"`
	AuthTime int64           `json:"auth_time,omitempty"`
	Cnf      *inspectedCnf   `json:"cnf,omitempty"`
	Act      json.RawMessage `json:"act,omitempty"`
}

// inspectedCnf is a token's confirmation claim: the DPoP key thumbprint
// (RFC 9449 §6) or the client certificate's (RFC 8705 §3.1).
type inspectedCnf struct {
	JKT     string `json:"jkt,omitempty"`
	X5TS256 string `json:"x5t#S256,omitempty"`
}

// errTokenInactive is returned by inspectAccessToken for a token of this
// server that is expired, not yet valid, malformed or revoked.
var errTokenInactive = errors.New("token is not active")

// inspectAccessToken verifies that token is an access token signed by
// this server, unexpired, valid now and not revoked, and returns its
// claims. Errors other than errNotOurToken and errTokenInactive are
// storage failures.
func (s *Server) inspectAccessToken(ctx context.Context, token string) (*inspectedToken, error) {
	payload, err := s.keys.verify(token, TypAccessToken)
	if err != nil {
		return nil, errNotOurToken
	}
	var t inspectedToken
	if err := json.Unmarshal(payload, &t); err != nil {
		return nil, errNotOurToken
	}
	now := s.now()
	switch {
	case t.Issuer != s.cfg.Issuer:
		return nil, errNotOurToken
	case t.ID == "" || t.Subject == "" || t.ClientID == "" || t.Expiry == nil || len(t.Audience) == 0:
		return nil, fmt.Errorf("%w: missing claims", errTokenInactive)
	case !now.Before(t.Expiry.Time()):
		return nil, fmt.Errorf("%w: expired", errTokenInactive)
	case t.NotBefore != nil && now.Add(nbfLeeway).Before(t.NotBefore.Time()):
		return nil, fmt.Errorf("%w: not yet valid", errTokenInactive)
	}
	revoked, err := s.isRevoked(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	if revoked {
		return nil, fmt.Errorf("%w: revoked", errTokenInactive)
	}
	return &t, nil
}

// refreshTokenRow is a stored refresh token with its grant.
type refreshTokenRow struct {
	grantID, clientID     string
	created, expires      int64
	used, revoked         bool
	subject, scope        string
	grantFound, grantGone bool
}

// active reports whether the refresh token can still be used at now.
func (rt *refreshTokenRow) active(now time.Time) bool {
	return !rt.used && !rt.revoked && rt.grantFound && !rt.grantGone && now.UnixMilli() < rt.expires
}

// lookupRefreshToken finds a refresh token by its hash; nil if unknown.
func (s *Server) lookupRefreshToken(ctx context.Context, token string) (*refreshTokenRow, error) {
	var (
		rt                    refreshTokenRow
		used, revoked, gone   sql.NullInt64
		subject, scope, grant sql.NullString
	)
	err := s.db.QueryRowContext(ctx, `SELECT t.grant_id, t.client_id, t.created_at, t.expires_at, t.used_at, t.revoked_at,
			g.grant_id, g.subject, g.scope, g.revoked_at
		FROM identity_refresh_tokens t LEFT JOIN identity_grants g ON g.grant_id = t.grant_id
		WHERE t.token_hash = ?`, hashSecret(token)).
		Scan(&rt.grantID, &rt.clientID, &rt.created, &rt.expires, &used, &revoked, &grant, &subject, &scope, &gone)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up refresh token: %w", err)
	}
	rt.used, rt.revoked, rt.grantGone = used.Valid, revoked.Valid, gone.Valid
	rt.grantFound, rt.subject, rt.scope = grant.Valid, subject.String, scope.String
	return &rt, nil
}

// looksLikeJWT tells an access token (a compact JWS) from an opaque
// refresh token, which has no dots.
func looksLikeJWT(token string) bool { return strings.Count(token, ".") == 2 }

// introspection is an RFC 7662 introspection response.
type introspection struct {
	Active    bool            `json:"active"`
	Scope     string          `json:"scope,omitempty"`
	ClientID  string          `json:"client_id,omitempty"`
	Username  string          `json:"username,omitempty"`
	TokenType string          `json:"token_type,omitempty"`
	Exp       int64           `json:"exp,omitempty"`
	Iat       int64           `json:"iat,omitempty"`
	Nbf       int64           `json:"nbf,omitempty"`
	Sub       string          `json:"sub,omitempty"`
	Aud       jwt.Audience    `json:"aud,omitempty"`
	Iss       string          `json:"iss,omitempty"`
	JTI       string          `json:"jti,omitempty"`
	Cnf       *inspectedCnf   `json:"cnf,omitempty"`
	Act       json.RawMessage `json:"act,omitempty"`
}

// clientActor is the audit actor of an authenticated client.
func clientActor(c *Client, jti string) *audit.Actor {
	return &audit.Actor{AppUID: c.ID, AppName: c.Name, SessionUID: jti}
}

// handleIntrospect serves POST /oauth2/introspect (RFC 7662). Only an
// authenticated confidential client may introspect, and only tokens issued
// to it or naming it as an audience; for any other token the answer is
// {"active":false} and the attempt is audited.
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	const endpoint = "introspect"
	form, err := parseMgmtForm(w, r)
	if err != nil {
		s.failMgmt(w, r, endpoint, err)
		return
	}
	client, err := s.authenticateClient(r, form, PathIntrospect)
	if err != nil {
		s.writeOAuthError(w, r, err) // counted and audited by authenticateClient
		return
	}
	if client.Public() {
		s.failMgmt(w, r, endpoint, ErrInvalidClient.WithDescription("public clients cannot use introspection"))
		return
	}
	token := form.Get("token")
	if token == "" {
		s.failMgmt(w, r, endpoint, ErrInvalidRequest.WithDescription("token is required"))
		return
	}
	ctx := r.Context()
	var resp *introspection
	if looksLikeJWT(token) {
		resp, err = s.introspectAccessToken(ctx, r, client, token)
	} else {
		resp, err = s.introspectRefreshToken(ctx, r, client, token)
	}
	if err != nil {
		s.failMgmt(w, r, endpoint, err)
		return
	}
	if resp == nil {
		resp = &introspection{}
	}
	writeNoStoreJSON(w, resp)
}

// introspectAccessToken returns the introspection of an access token for
// client, or nil when it is not active for it.
func (s *Server) introspectAccessToken(ctx context.Context, r *http.Request, client *Client, token string) (*introspection, error) {
	t, err := s.inspectAccessToken(ctx, token)
	if errors.Is(err, errNotOurToken) || errors.Is(err, errTokenInactive) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if t.ClientID != client.ID && !slices.Contains(t.Audience, client.ID) {
		return nil, s.auditIntrospectionDenied(ctx, r, client, "access_token", t.ID, t.ClientID)
	}
	if _, err := s.clients.get(ctx, t.ClientID); errors.Is(err, ErrClientNotFound) {
		return nil, nil // the token's client was disabled or removed
	} else if err != nil {
		return nil, err
	}
	resp := &introspection{
		Active: true, Scope: t.Scope, ClientID: t.ClientID, TokenType: "Bearer",
		Sub: t.Subject, Aud: t.Audience, Iss: t.Issuer, JTI: t.ID, Cnf: t.Cnf, Act: t.Act,
		Exp: t.Expiry.Time().Unix(),
	}
	if t.Cnf != nil && t.Cnf.JKT != "" {
		resp.TokenType = "DPoP"
	}
	if t.IssuedAt != nil {
		resp.Iat = t.IssuedAt.Time().Unix()
	}
	if t.NotBefore != nil {
		resp.Nbf = t.NotBefore.Time().Unix()
	}
	if t.Subject != t.ClientID {
		if resp.Username, err = s.username(ctx, t.Subject); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// introspectRefreshToken returns the introspection of a refresh token for
// client, or nil when it is not active or not client's.
func (s *Server) introspectRefreshToken(ctx context.Context, r *http.Request, client *Client, token string) (*introspection, error) {
	rt, err := s.lookupRefreshToken(ctx, token)
	if err != nil || rt == nil {
		return nil, err
	}
	if rt.clientID != client.ID {
		return nil, s.auditIntrospectionDenied(ctx, r, client, "refresh_token", rt.grantID, rt.clientID)
	}
	if !rt.active(s.now()) {
		return nil, nil
	}
	username, err := s.username(ctx, rt.subject)
	if err != nil {
		return nil, err
	}
	return &introspection{
		Active: true, Scope: rt.scope, ClientID: rt.clientID, Sub: rt.subject, Username: username, Iss: s.cfg.Issuer,
		Exp: rt.expires / 1000, Iat: rt.created / 1000,
	}, nil
}

// auditIntrospectionDenied records a client's attempt to introspect a
// token that is neither issued to it nor meant for it. id is the token's
// jti or, for a refresh token, its grant.
func (s *Server) auditIntrospectionDenied(ctx context.Context, r *http.Request, client *Client, kind, id, owner string) error {
	ev := newEvent(classAPIActivity, actRead, false, "introspection denied")
	ev.Actor = clientActor(client, "")
	ev.Message = "client introspected a token that was not issued to it or meant for it"
	ev.Resources = []audit.Resource{{Type: kind, UID: id}}
	ev.Unmapped = map[string]any{"token_client_id": owner}
	return s.emit(ctx, r, ev)
}

// username returns the username of the user userID, or "" if there is
// no such user.
func (s *Server) username(ctx context.Context, userID string) (string, error) {
	if userID == "" {
		return "", nil
	}
	var name string
	err := s.db.QueryRowContext(ctx, "SELECT username FROM identity_users WHERE user_id = ?", userID).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up user: %w", err)
	}
	return name, nil
}

// handleRevoke serves POST /oauth2/revoke (RFC 7009). A client may revoke
// its own tokens: an access token goes into the revocation feed, a refresh
// token revokes its whole grant. Invalid, unknown and other clients' tokens
// get 200 too (RFC 7009 §2.2) but change nothing; every attempt is
// audited.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	const endpoint = "revoke"
	form, err := parseMgmtForm(w, r)
	if err != nil {
		s.failMgmt(w, r, endpoint, err)
		return
	}
	client, err := s.authenticateClient(r, form, PathRevoke)
	if err != nil {
		s.writeOAuthError(w, r, err) // counted and audited by authenticateClient
		return
	}
	token := form.Get("token")
	if token == "" {
		s.failMgmt(w, r, endpoint, ErrInvalidRequest.WithDescription("token is required"))
		return
	}
	// token_type_hint only orders a search, and the token's shape already
	// tells the two kinds apart, so it is not needed.
	if looksLikeJWT(token) {
		err = s.revokeAccessTokenFor(r, client, token)
	} else {
		err = s.revokeRefreshTokenFor(r, client, token)
	}
	if err != nil {
		s.failMgmt(w, r, endpoint, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// revokeAccessTokenFor revokes an access token at client's request.
func (s *Server) revokeAccessTokenFor(r *http.Request, client *Client, token string) error {
	ctx := r.Context()
	t, err := s.inspectAccessToken(ctx, token)
	switch {
	case errors.Is(err, errNotOurToken) || errors.Is(err, errTokenInactive):
		return s.auditRevocation(ctx, r, client, false, "token not recognized or no longer active", "access_token", "", "")
	case err != nil:
		return err
	case t.ClientID != client.ID:
		return s.auditRevocation(ctx, r, client, false, "token issued to another client", "access_token", t.ID, t.ClientID)
	}
	if err := s.revokeAccessToken(ctx, t.ID, t.Expiry.Time(), reasonClientRequest); err != nil {
		return err
	}
	return s.auditRevocation(ctx, r, client, true, "access token revoked", "access_token", t.ID, t.ClientID)
}

// revokeRefreshTokenFor revokes a refresh token, and so its grant, at
// client's request.
func (s *Server) revokeRefreshTokenFor(r *http.Request, client *Client, token string) error {
	ctx := r.Context()
	rt, err := s.lookupRefreshToken(ctx, token)
	switch {
	case err != nil:
		return err
	case rt == nil:
		return s.auditRevocation(ctx, r, client, false, "token not recognized or no longer active", "refresh_token", "", "")
	case rt.clientID != client.ID:
		return s.auditRevocation(ctx, r, client, false, "token issued to another client", "oauth_grant", rt.grantID, rt.clientID)
	}
	return s.revokeGrantBy(ctx, r, clientActor(client, ""), rt.grantID, reasonClientRequest)
}

// auditRevocation records a revocation request's outcome. id is the
// access token's jti or the grant's ID, never the token.
func (s *Server) auditRevocation(ctx context.Context, r *http.Request, client *Client, ok bool, detail, kind, id, owner string) error {
	ev := newEvent(classAPIActivity, actDelete, ok, detail)
	ev.Actor = clientActor(client, "")
	ev.Message = "token revocation request"
	if id != "" {
		ev.Resources = []audit.Resource{{Type: kind, UID: id}}
	}
	ev.Unmapped = map[string]any{"token_kind": kind}
	if owner != "" {
		ev.Unmapped["token_client_id"] = owner
	}
	return s.emit(ctx, r, ev)
}
