package identity

import (
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/store"
)

// Client is a registered OAuth client. Field names follow RFC 7591 client
// metadata where one exists.
type Client struct {
	ID   string `json:"client_id"`
	Name string `json:"client_name,omitempty"`
	// Profile is ProfileFAPI2 (default) or ProfileOAuth2.
	Profile string `json:"profile"`
	// TokenEndpointAuthMethod is private_key_jwt, tls_client_auth,
	// self_signed_tls_client_auth, or none (public clients, PKCE only).
	TokenEndpointAuthMethod string `json:"token_endpoint_auth_method"`
	// JWKS holds the client's public keys: for private_key_jwt the keys
	// that sign its assertions, for self_signed_tls_client_auth the keys
	// whose "x5c" certificates it presents.
	JWKS *jose.JSONWebKeySet `json:"jwks,omitempty"`
	// For tls_client_auth, exactly one of these names the certificate the
	// client presents (RFC 8705 §2.1.2); its chain must verify against
	// identity.mtls_client_ca_file.
	TLSClientAuthSubjectDN string `json:"tls_client_auth_subject_dn,omitempty"`
	TLSClientAuthSANDNS    string `json:"tls_client_auth_san_dns,omitempty"`
	TLSClientAuthSANURI    string `json:"tls_client_auth_san_uri,omitempty"`
	// RedirectURIs are matched exactly, byte for byte.
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// GrantTypes the client may use.
	GrantTypes []string `json:"grant_types"`
	// Scopes the client may request.
	Scopes []string `json:"scopes"`
	// Audiences (resource indicators) the client may get tokens for; the
	// first is the default when a request names none.
	Audiences []string `json:"audiences"`
	// RequirePAR makes pushed authorization requests mandatory (always
	// true for ProfileFAPI2).
	RequirePAR bool `json:"require_pushed_authorization_requests"`
	// DPoPBoundAccessTokens requires DPoP for every token request
	// (RFC 9449 §5.2).
	DPoPBoundAccessTokens bool `json:"dpop_bound_access_tokens"`
	// TLSClientCertificateBoundAccessTokens binds tokens to the client's
	// certificate when it does not use DPoP (RFC 8705 §3).
	TLSClientCertificateBoundAccessTokens bool      `json:"tls_client_certificate_bound_access_tokens"`
	CreatedAt                             time.Time `json:"created_at"`
	UpdatedAt                             time.Time `json:"updated_at"`
	Disabled                              bool      `json:"disabled"`
}

// Public reports whether c is a public client (no authentication).
func (c *Client) Public() bool { return c.TokenEndpointAuthMethod == AuthNone }

// AllowsGrant reports whether c may use grant type g.
func (c *Client) AllowsGrant(g string) bool { return slices.Contains(c.GrantTypes, g) }

// SenderConstrained reports whether c's tokens must be sender-constrained.
func (c *Client) SenderConstrained() bool {
	return c.DPoPBoundAccessTokens || c.TLSClientCertificateBoundAccessTokens
}

var (
	validClientID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	validScope    = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]{1,128}$`) // RFC 6749 §3.3 scope-token
)

// Limits on a registration.
const (
	maxRedirectURIs = 20
	maxScopes       = 100
	maxAudiences    = 50
	maxClientKeys   = 10
	maxURILen       = 2000
)

var knownGrants = []string{GrantAuthorizationCode, GrantClientCredentials, GrantRefreshToken, GrantTokenExchange}

// Normalize fills defaults and checks c; the error names the field.
func (c *Client) Normalize() error {
	if c.Profile == "" {
		c.Profile = ProfileFAPI2
	}
	if !validClientID.MatchString(c.ID) {
		return fmt.Errorf("client_id: must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit, got %q", c.ID)
	}
	if len(c.Name) > 200 {
		return errors.New("client_name: longer than 200 characters")
	}
	switch c.Profile {
	case ProfileFAPI2, ProfileOAuth2:
	default:
		return fmt.Errorf("profile: must be %q or %q, got %q", ProfileFAPI2, ProfileOAuth2, c.Profile)
	}
	switch c.TokenEndpointAuthMethod {
	case AuthPrivateKeyJWT, AuthSelfSignedTLSClient:
		if c.JWKS == nil || len(c.JWKS.Keys) == 0 {
			return fmt.Errorf("jwks: %s needs at least one public key", c.TokenEndpointAuthMethod)
		}
	case AuthTLSClient:
		n := 0
		for _, v := range []string{c.TLSClientAuthSubjectDN, c.TLSClientAuthSANDNS, c.TLSClientAuthSANURI} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			return errors.New("tls_client_auth needs exactly one of tls_client_auth_subject_dn, tls_client_auth_san_dns, tls_client_auth_san_uri")
		}
	case AuthNone:
		if c.Profile == ProfileFAPI2 {
			return errors.New("token_endpoint_auth_method: FAPI 2.0 clients are confidential; public clients (none) need profile \"oauth2\"")
		}
	default:
		return fmt.Errorf("token_endpoint_auth_method: must be %s, %s, %s or %s, got %q",
			AuthPrivateKeyJWT, AuthTLSClient, AuthSelfSignedTLSClient, AuthNone, c.TokenEndpointAuthMethod)
	}
	if c.JWKS != nil {
		if len(c.JWKS.Keys) > maxClientKeys {
			return fmt.Errorf("jwks: at most %d keys", maxClientKeys)
		}
		for i, k := range c.JWKS.Keys {
			if err := checkClientKey(k, c.TokenEndpointAuthMethod); err != nil {
				return fmt.Errorf("jwks.keys[%d]: %w", i, err)
			}
		}
	}
	if len(c.GrantTypes) == 0 {
		return errors.New("grant_types: at least one is required")
	}
	for _, g := range c.GrantTypes {
		if !slices.Contains(knownGrants, g) {
			return fmt.Errorf("grant_types: unknown grant type %q (implicit and password grants do not exist here)", g)
		}
	}
	if c.Public() && (c.AllowsGrant(GrantClientCredentials) || c.AllowsGrant(GrantTokenExchange)) {
		return errors.New("grant_types: a public client can use only authorization_code and refresh_token")
	}
	if c.AllowsGrant(GrantRefreshToken) && !c.AllowsGrant(GrantAuthorizationCode) {
		return errors.New("grant_types: refresh_token needs authorization_code")
	}
	if c.AllowsGrant(GrantAuthorizationCode) != (len(c.RedirectURIs) > 0) {
		return errors.New("redirect_uris: required with authorization_code, and only with it")
	}
	if len(c.RedirectURIs) > maxRedirectURIs {
		return fmt.Errorf("redirect_uris: at most %d", maxRedirectURIs)
	}
	for _, u := range c.RedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return fmt.Errorf("redirect_uris: %q: %w", u, err)
		}
	}
	if len(c.Scopes) > maxScopes {
		return fmt.Errorf("scopes: at most %d", maxScopes)
	}
	for _, s := range c.Scopes {
		if !validScope.MatchString(s) {
			return fmt.Errorf("scopes: %q is not a valid scope token", s)
		}
	}
	if len(c.Audiences) == 0 {
		return errors.New("audiences: at least one is required: every access token names its audience")
	}
	if len(c.Audiences) > maxAudiences {
		return fmt.Errorf("audiences: at most %d", maxAudiences)
	}
	for _, a := range c.Audiences {
		if a == "" || len(a) > maxURILen || strings.ContainsAny(a, " \t\r\n") {
			return fmt.Errorf("audiences: %q is not a valid audience", a)
		}
	}
	if c.Profile == ProfileFAPI2 {
		c.RequirePAR = true
		if !c.SenderConstrained() {
			return errors.New("FAPI 2.0 clients need sender-constrained tokens: set dpop_bound_access_tokens or tls_client_certificate_bound_access_tokens")
		}
	}
	return nil
}

// checkClientKey accepts only public asymmetric keys of allowed algorithms.
func checkClientKey(k jose.JSONWebKey, method string) error {
	if !k.Valid() {
		return errors.New("not a valid key")
	}
	if !k.IsPublic() {
		return errors.New("must be a public key (a private or symmetric key was given)")
	}
	if k.Use != "" && k.Use != "sig" {
		return fmt.Errorf("use %q: must be \"sig\"", k.Use)
	}
	if k.Algorithm != "" && !slices.Contains(allowedClientAlgs, k.Algorithm) {
		return fmt.Errorf("alg %q is not allowed (allowed: %s)", k.Algorithm, strings.Join(allowedClientAlgs, ", "))
	}
	if method == AuthSelfSignedTLSClient && len(k.Certificates) == 0 {
		return errors.New("self_signed_tls_client_auth keys need the certificate in x5c")
	}
	return nil
}

// allowedClientAlgs are the JWS algorithms accepted from clients (client
// assertions, DPoP proofs): FAPI 2.0 §5.4 allows PS256, ES256 and EdDSA.
var allowedClientAlgs = []string{"EdDSA", "ES256", "PS256"}

// checkRedirectURI accepts absolute URIs without fragments; http only for
// loopback (RFC 8252 §7.3).
func checkRedirectURI(raw string) error {
	if len(raw) > maxURILen {
		return errors.New("too long")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return errors.New("must be an absolute URI")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return errors.New("must not have a fragment")
	}
	switch u.Scheme {
	case "https":
		if u.Host == "" {
			return errors.New("needs a host")
		}
	case "http":
		h := u.Hostname()
		if h != "127.0.0.1" && h != "::1" && h != "localhost" {
			return errors.New("http is allowed only for loopback hosts")
		}
	case "javascript", "data", "file", "vbscript":
		return fmt.Errorf("scheme %q is not allowed", u.Scheme)
	}
	return nil
}

// ErrClientNotFound is returned for an unknown or disabled client.
var ErrClientNotFound = errors.New("client not found")

// ErrClientExists is returned when registering a client ID that exists.
var ErrClientExists = errors.New("client already exists")

// clientCacheTTL bounds how long a change to a client takes to reach the
// token endpoint of another replica.
const clientCacheTTL = 2 * time.Second

type clientStore struct {
	db  *store.DB
	now func() time.Time

	mu    sync.Mutex
	cache map[string]cachedClient
}

type cachedClient struct {
	c       *Client
	fetched time.Time
}

func newClientStore(db *store.DB, now func() time.Time) *clientStore {
	return &clientStore{db: db, now: now, cache: map[string]cachedClient{}}
}

// get returns the enabled client id. The result is shared: do not modify.
func (cs *clientStore) get(ctx context.Context, id string) (*Client, error) {
	now := cs.now()
	cs.mu.Lock()
	cc, ok := cs.cache[id]
	cs.mu.Unlock()
	if ok && now.Sub(cc.fetched) < clientCacheTTL {
		if cc.c == nil {
			return nil, ErrClientNotFound
		}
		return cc.c, nil
	}
	c, err := cs.load(ctx, cs.db, id)
	if err != nil && !errors.Is(err, ErrClientNotFound) {
		return nil, err
	}
	if c != nil && c.Disabled {
		c = nil
	}
	cs.mu.Lock()
	if len(cs.cache) > 10000 {
		clear(cs.cache)
	}
	cs.cache[id] = cachedClient{c: c, fetched: now}
	cs.mu.Unlock()
	if c == nil {
		return nil, ErrClientNotFound
	}
	return c, nil
}

func (cs *clientStore) forget(id string) {
	cs.mu.Lock()
	delete(cs.cache, id)
	cs.mu.Unlock()
}

type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// load reads client id, enabled or not.
func (cs *clientStore) load(ctx context.Context, q queryRower, id string) (*Client, error) {
	var (
		meta     string
		created  int64
		updated  int64
		disabled sql.NullInt64
	)
	err := q.QueryRowContext(ctx, "SELECT metadata, created_at, updated_at, disabled_at FROM identity_clients WHERE client_id = ?", id).
		Scan(&meta, &created, &updated, &disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrClientNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load client %q: %w", id, err)
	}
	var c Client
	if err := json.Unmarshal([]byte(meta), &c); err != nil {
		return nil, fmt.Errorf("load client %q: %w", id, err)
	}
	c.ID = id
	c.CreatedAt, c.UpdatedAt = time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
	c.Disabled = disabled.Valid
	return &c, nil
}

// create registers c after Normalize.
func (cs *clientStore) create(ctx context.Context, c *Client) error {
	if err := c.Normalize(); err != nil {
		return err
	}
	now := cs.now()
	c.CreatedAt, c.UpdatedAt, c.Disabled = now.UTC().Truncate(time.Millisecond), now.UTC().Truncate(time.Millisecond), false
	meta, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode client %q: %w", c.ID, err)
	}
	_, err = cs.db.ExecContext(ctx, "INSERT INTO identity_clients (client_id, metadata, created_at, updated_at) VALUES (?, ?, ?, ?)",
		c.ID, string(meta), now.UnixMilli(), now.UnixMilli())
	if store.IsUniqueViolation(err) {
		return ErrClientExists
	}
	if err != nil {
		return fmt.Errorf("create client %q: %w", c.ID, err)
	}
	cs.forget(c.ID)
	return nil
}

// update replaces the registration of an existing client after Normalize.
func (cs *clientStore) update(ctx context.Context, c *Client) error {
	if err := c.Normalize(); err != nil {
		return err
	}
	now := cs.now()
	err := cs.db.InTx(ctx, func(tx *store.Tx) error {
		old, err := cs.load(ctx, tx, c.ID)
		if err != nil {
			return err
		}
		c.CreatedAt, c.UpdatedAt, c.Disabled = old.CreatedAt, now.UTC().Truncate(time.Millisecond), old.Disabled
		meta, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("encode client %q: %w", c.ID, err)
		}
		_, err = tx.ExecContext(ctx, "UPDATE identity_clients SET metadata = ?, updated_at = ? WHERE client_id = ?", string(meta), now.UnixMilli(), c.ID)
		return err
	})
	cs.forget(c.ID)
	return err
}

// setDisabled enables or disables a client.
func (cs *clientStore) setDisabled(ctx context.Context, id string, disabled bool) error {
	now := cs.now().UnixMilli()
	var res sql.Result
	var err error
	if disabled {
		res, err = cs.db.ExecContext(ctx, "UPDATE identity_clients SET disabled_at = ?, updated_at = ? WHERE client_id = ?", now, now, id)
	} else {
		res, err = cs.db.ExecContext(ctx, "UPDATE identity_clients SET disabled_at = NULL, updated_at = ? WHERE client_id = ?", now, id)
	}
	cs.forget(id)
	if err != nil {
		return fmt.Errorf("update client %q: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrClientNotFound
	}
	return nil
}

// remove deletes a client registration.
func (cs *clientStore) remove(ctx context.Context, id string) error {
	res, err := cs.db.ExecContext(ctx, "DELETE FROM identity_clients WHERE client_id = ?", id)
	cs.forget(id)
	if err != nil {
		return fmt.Errorf("delete client %q: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrClientNotFound
	}
	return nil
}

// list returns every client, ordered by ID.
func (cs *clientStore) list(ctx context.Context) ([]*Client, error) {
	rows, err := cs.db.QueryContext(ctx, "SELECT client_id FROM identity_clients ORDER BY client_id")
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list clients: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	out := make([]*Client, 0, len(ids))
	for _, id := range ids {
		c, err := cs.load(ctx, cs.db, id)
		if errors.Is(err, ErrClientNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// certificates returns the leaf certificates registered in c's JWKS (x5c),
// for self_signed_tls_client_auth.
func (c *Client) certificates() []*x509.Certificate {
	if c.JWKS == nil {
		return nil
	}
	var out []*x509.Certificate
	for _, k := range c.JWKS.Keys {
		if len(k.Certificates) > 0 {
			out = append(out, k.Certificates[0])
		}
	}
	return out
}
