package identity

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
)

// atClaims are the claims of an access token (RFC 9068 §2.2, RFC 8693
// §4.1 for act and may_act, RFC 9449 §6.1 and RFC 8705 §3.1 for cnf).
type atClaims struct {
	Issuer    string       `json:"iss"`
	Subject   string       `json:"sub"`
	Audience  audienceList `json:"aud"`
	Expiry    int64        `json:"exp"`
	IssuedAt  int64        `json:"iat"`
	NotBefore int64        `json:"nbf"`
	JTI       string       `json:"jti"`
	ClientID  string       `json:"client_id"`
	Scope     string       `json:"scope,omitempty"`
	AuthTime  int64        `json:"auth_time,omitempty"`
	Cnf       *cnfClaim    `json:"cnf,omitempty"`
	Act       *actClaim    `json:"act,omitempty"`
	MayAct    *actClaim    `json:"may_act,omitempty"`
	// SubjectType is "user" or "client" in a token obtained by token
	// exchange, whose client_id is the acting client and so no longer tells
	// whether sub is a user; other tokens leave it out (sub is a user when
	// it is not the client_id).
	SubjectType string `json:"subject_type,omitempty"`
}

// Subject types of exchanged tokens (atClaims.SubjectType).
const (
	subjectTypeUser   = "user"
	subjectTypeClient = "client"
)

// subjectIsUser reports whether the token's subject is a user.
func (c *atClaims) subjectIsUser() bool {
	if c.Act != nil {
		return c.SubjectType == subjectTypeUser
	}
	return c.Subject != c.ClientID
}

// cnfClaim is the confirmation of a sender-constrained token: the DPoP
// key's RFC 7638 thumbprint or the client certificate's SHA-256.
type cnfClaim struct {
	JKT     string `json:"jkt,omitempty"`
	X5TS256 string `json:"x5t#S256,omitempty"`
}

// empty reports whether c binds nothing.
func (c *cnfClaim) empty() bool { return c == nil || (c.JKT == "" && c.X5TS256 == "") }

// actClaim is an actor in a delegation chain (RFC 8693 §4.1): the current
// actor, and in Act the one before it.
type actClaim struct {
	Subject string    `json:"sub"`
	Act     *actClaim `json:"act,omitempty"`
}

// depth is the length of the chain starting at a.
func (a *actClaim) depth() int {
	n := 0
	for ; a != nil; a = a.Act {
		n++
	}
	return n
}

// audienceList is the "aud" claim: one string when it has one value, an
// array otherwise (RFC 7519 §4.1.3); both forms decode.
type audienceList []string

// MarshalJSON writes a single audience as a string.
func (a audienceList) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON reads a string or an array of strings.
func (a *audienceList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audienceList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud: not a string or an array of strings")
	}
	*a = many
	return nil
}

// idTokenClaims are the claims of an ID token (OIDC Core §2, §5.1).
type idTokenClaims struct {
	Issuer            string   `json:"iss"`
	Subject           string   `json:"sub"`
	Audience          string   `json:"aud"`
	Expiry            int64    `json:"exp"`
	IssuedAt          int64    `json:"iat"`
	AuthTime          int64    `json:"auth_time,omitempty"`
	Nonce             string   `json:"nonce,omitempty"`
	AMR               []string `json:"amr,omitempty"`
	AZP               string   `json:"azp"`
	Name              string   `json:"name,omitempty"`
	Email             string   `json:"email,omitempty"`
	PreferredUsername string   `json:"preferred_username,omitempty"`
}

// refreshData is what a refresh token stands for
// (identity_refresh_tokens.data).
type refreshData struct {
	Scopes    []string `json:"scopes"`
	Audiences []string `json:"audiences"`
	UserID    string   `json:"user_id"`
	AuthTime  int64    `json:"auth_time"`
	AMR       []string `json:"amr,omitempty"`
	// JKT and X5TS256 bind the refresh token to the DPoP key or client
	// certificate it was issued to.
	JKT     string `json:"jkt,omitempty"`
	X5TS256 string `json:"x5t#S256,omitempty"`
}

// tokenUser is the part of a user account that goes into tokens.
type tokenUser struct {
	ID, Username, Email, Name string
}

// loadTokenUser reads user id; a missing or disabled user is invalid_grant,
// since the grant can no longer be used.
func (s *Server) loadTokenUser(ctx context.Context, id string) (*tokenUser, error) {
	u := tokenUser{ID: id}
	var disabled sql.NullInt64
	err := s.db.QueryRowContext(ctx, "SELECT username, email, name, disabled_at FROM identity_users WHERE user_id = ?", id).
		Scan(&u.Username, &u.Email, &u.Name, &disabled)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && disabled.Valid) {
		return nil, ErrInvalidGrant.WithDescription("the user of this grant no longer exists or is disabled")
	}
	if err != nil {
		return nil, fmt.Errorf("load user: %w", err)
	}
	return &u, nil
}

// accessSpec describes an access token to issue.
type accessSpec struct {
	subject   string
	user      *tokenUser // nil for a client's own token
	scopes    []string
	audiences []string
	authTime  int64 // Unix seconds; 0 for a client's own token
	cnf       *cnfClaim
	act       *actClaim
	// notAfter caps the expiry (token exchange); zero means no cap.
	notAfter time.Time
}

// issuedAccess is a signed access token.
type issuedAccess struct {
	token  string
	jti    string
	expiry time.Time
	ttl    time.Duration
}

// signAccessToken builds and signs an RFC 9068 access token for client.
func (s *Server) signAccessToken(client *Client, spec accessSpec) (*issuedAccess, error) {
	if len(spec.audiences) == 0 {
		return nil, errors.New("access token without an audience")
	}
	now := s.now().Truncate(time.Second)
	exp := now.Add(s.cfg.AccessTokenTTL)
	if !spec.notAfter.IsZero() && spec.notAfter.Before(exp) {
		exp = spec.notAfter.Truncate(time.Second)
	}
	if !exp.After(now) {
		return nil, ErrInvalidGrant.WithDescription("the token would already be expired")
	}
	c := atClaims{
		Issuer:    s.cfg.Issuer,
		Subject:   spec.subject,
		Audience:  audienceList(spec.audiences),
		Expiry:    exp.Unix(),
		IssuedAt:  now.Unix(),
		NotBefore: now.Unix(),
		JTI:       newID("at"),
		ClientID:  client.ID,
		Scope:     joinScope(spec.scopes),
		AuthTime:  spec.authTime,
		Act:       spec.act,
	}
	if spec.act != nil {
		c.SubjectType = subjectTypeClient
		if spec.user != nil {
			c.SubjectType = subjectTypeUser
		}
	}
	if !spec.cnf.empty() {
		c.Cnf = spec.cnf
	}
	tok, err := s.keys.sign(TypAccessToken, c)
	if err != nil {
		return nil, fmt.Errorf("sign access token: %w", err)
	}
	return &issuedAccess{token: tok, jti: c.JTI, expiry: exp, ttl: exp.Sub(now)}, nil
}

// idTokenSpec describes an ID token to issue.
type idTokenSpec struct {
	user     *tokenUser
	scopes   []string
	authTime int64
	nonce    string
	amr      []string
}

// signIDToken builds and signs an ID token for client.
func (s *Server) signIDToken(client *Client, spec idTokenSpec) (string, error) {
	now := s.now().Truncate(time.Second)
	c := idTokenClaims{
		Issuer:   s.cfg.Issuer,
		Subject:  spec.user.ID,
		Audience: client.ID,
		Expiry:   now.Add(s.cfg.IDTokenTTL).Unix(),
		IssuedAt: now.Unix(),
		AuthTime: spec.authTime,
		Nonce:    spec.nonce,
		AMR:      spec.amr,
		AZP:      client.ID,
	}
	if slices.Contains(spec.scopes, "profile") {
		c.Name, c.PreferredUsername = spec.user.Name, spec.user.Username
	}
	if slices.Contains(spec.scopes, "email") {
		c.Email = spec.user.Email
	}
	tok, err := s.keys.sign(TypIDToken, c)
	if err != nil {
		return "", fmt.Errorf("sign ID token: %w", err)
	}
	return tok, nil
}

// newRefreshToken returns a fresh refresh token and the statement that
// stores it (hashed) under grantID; run save in the issuing transaction.
func (s *Server) newRefreshToken(client *Client, grantID string, data refreshData) (token string, save func(context.Context, *store.Tx) error, err error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return "", nil, fmt.Errorf("encode refresh token: %w", err)
	}
	token = newSecret()
	now := s.now()
	save = func(ctx context.Context, tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO identity_refresh_tokens
			(token_hash, grant_id, client_id, data, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`,
			hashSecret(token), grantID, client.ID, string(raw), unixMilli(now), unixMilli(now.Add(s.cfg.RefreshTokenTTL)))
		if err != nil {
			return fmt.Errorf("store refresh token: %w", err)
		}
		return nil
	}
	return token, save, nil
}

// errGrantRevoked is returned inside an issuing transaction when the
// grant was revoked meanwhile.
var errGrantRevoked = errors.New("grant revoked")

// recordAccessToken records at under grantID so that revoking the grant
// revokes it, after checking (and locking, until the transaction ends)
// that the grant is still live. A concurrent revocation of the grant either
// sees the record or makes this fail with errGrantRevoked.
func recordAccessToken(ctx context.Context, tx *store.Tx, grantID string, at *issuedAccess) error {
	res, err := tx.ExecContext(ctx, "UPDATE identity_grants SET scope = scope WHERE grant_id = ? AND revoked_at IS NULL", grantID)
	if err != nil {
		return fmt.Errorf("lock grant: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("lock grant: %w", err)
	} else if n == 0 {
		return errGrantRevoked
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO identity_access_tokens (jti, grant_id, expires_at) VALUES (?, ?, ?)",
		at.jti, grantID, unixMilli(at.expiry)); err != nil {
		return fmt.Errorf("record access token: %w", err)
	}
	return nil
}

// grantRevokedError is the OAuth error for a grant found revoked.
func grantRevokedError() *Error {
	return ErrInvalidGrant.WithDescription("the grant has been revoked")
}

// certThumbprint is the x5t#S256 of a certificate (RFC 8705 §3.1).
func certThumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// issueEvent is the audit record of a token response.
type issueEvent struct {
	activity  int
	grantType string
	client    *Client
	user      *tokenUser
	at        *issuedAccess
	scopes    []string
	audiences []string
	refresh   bool
	idToken   bool
	act       *actClaim
}

// auditIssue records a token response (never the tokens) and counts it.
func (s *Server) auditIssue(r *http.Request, e issueEvent) error {
	ev := newEvent(classAuthentication, e.activity, true, "")
	ev.Message = "access token issued"
	ev.Actor = &audit.Actor{AppUID: e.client.ID, AppName: e.client.Name, SessionUID: e.at.jti}
	if e.user != nil {
		ev.Actor.User = &audit.User{UID: e.user.ID, Name: e.user.Username}
	}
	ev.Unmapped = map[string]any{
		"grant_type": e.grantType,
		"scope":      joinScope(e.scopes),
		"aud":        joinScope(e.audiences),
		"exp":        e.at.expiry.Unix(),
	}
	if e.refresh {
		ev.Unmapped["refresh_token_issued"] = true
	}
	if e.idToken {
		ev.Unmapped["id_token_issued"] = true
	}
	if e.act != nil {
		var chain []any
		for a := e.act; a != nil; a = a.Act {
			chain = append(chain, a.Subject)
		}
		ev.Unmapped["act_chain"] = chain
	}
	if err := s.emit(r.Context(), r, ev); err != nil {
		return err
	}
	s.metrics.tokensIssued.WithLabelValues(e.grantType).Inc()
	return nil
}
