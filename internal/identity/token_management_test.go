package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// mgmtFixture is a test server with helpers to register clients and users
// and to mint the tokens and rows the token-management endpoints read.
type mgmtFixture struct {
	t   *testing.T
	env *testEnv
	ctx context.Context
}

// mgmtAPI is the audience of the fixture's tokens.
const mgmtAPI = "https://api.example.test"

func newMgmtFixture(t *testing.T, db *store.DB) *mgmtFixture {
	t.Helper()
	return &mgmtFixture{t: t, env: newTestEnv(t, db), ctx: context.Background()}
}

// mgmtClient is a registered client and, for private_key_jwt, its key.
type mgmtClient struct {
	*Client
	key ed25519.PrivateKey
	kid string
}

// addClient registers a private_key_jwt client (or, with public, a public
// client) allowed the scopes openid, profile, email and read.
func (f *mgmtFixture) addClient(id string, public bool) *mgmtClient {
	f.t.Helper()
	c := &Client{ID: id, Profile: ProfileOAuth2, Scopes: []string{"openid", "profile", "email", "read"}, Audiences: []string{mgmtAPI}}
	mc := &mgmtClient{Client: c}
	if public {
		c.TokenEndpointAuthMethod = AuthNone
		c.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken}
		c.RedirectURIs = []string{"https://app.example.test/cb"}
	} else {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			f.t.Fatal(err)
		}
		mc.key, mc.kid = priv, id+"-key"
		c.TokenEndpointAuthMethod = AuthPrivateKeyJWT
		c.GrantTypes = []string{GrantClientCredentials}
		c.JWKS = &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: mc.kid, Algorithm: string(jose.EdDSA), Use: "sig"}}}
	}
	if err := f.env.srv.clients.create(f.ctx, c); err != nil {
		f.t.Fatalf("register client %s: %v", id, err)
	}
	return mc
}

// auth adds the client's authentication to form: a fresh private_key_jwt
// assertion for the issuer, or client_id alone for a public client.
func (f *mgmtFixture) auth(c *mgmtClient, form url.Values) url.Values {
	f.t.Helper()
	form.Set("client_id", c.ID)
	if c.key == nil {
		return form
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: c.key},
		(&jose.SignerOptions{}).WithHeader(jose.HeaderKey("kid"), c.kid))
	if err != nil {
		f.t.Fatal(err)
	}
	now := f.env.clock.Now()
	payload, _ := json.Marshal(map[string]any{"iss": c.ID, "sub": c.ID, "aud": f.env.url, "jti": newID("jti"),
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
	jws, err := signer.Sign(payload)
	if err != nil {
		f.t.Fatal(err)
	}
	a, err := jws.CompactSerialize()
	if err != nil {
		f.t.Fatal(err)
	}
	form.Set("client_assertion_type", ClientAssertionTypeJWT)
	form.Set("client_assertion", a)
	return form
}

// post sends form to path as the client (nil: unauthenticated) and returns
// the status and body.
func (f *mgmtFixture) post(path string, c *mgmtClient, form url.Values) (int, []byte) {
	f.t.Helper()
	if c != nil {
		form = f.auth(c, form)
	}
	return f.do(http.MethodPost, path, "application/x-www-form-urlencoded", form.Encode())
}

func (f *mgmtFixture) do(method, path, contentType, body string) (int, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.env.url+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := f.env.client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// mint signs an access token of the fixture's server for client. The
// claims start as a 5-minute token for user usr_alice with scope
// "openid read"; set replaces or (with a nil value) removes claims.
func (f *mgmtFixture) mint(client string, set map[string]any) (token, jti string) {
	f.t.Helper()
	now := f.env.clock.Now()
	c := map[string]any{"iss": f.env.url, "sub": "usr_alice", "aud": mgmtAPI, "exp": now.Add(5 * time.Minute).Unix(),
		"iat": now.Unix(), "nbf": now.Unix(), "jti": newID("at"), "client_id": client, "scope": "openid read",
		"auth_time": now.Unix()}
	for k, v := range set {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	tok, err := f.env.srv.keys.sign(TypAccessToken, c)
	if err != nil {
		f.t.Fatal(err)
	}
	jti, _ = c["jti"].(string)
	return tok, jti
}

// exec runs a statement on the fixture's store.
func (f *mgmtFixture) exec(query string, args ...any) {
	f.t.Helper()
	if _, err := f.env.db.ExecContext(f.ctx, query, args...); err != nil {
		f.t.Fatalf("%s: %v", query, err)
	}
}

// addUser stores a user with the given ID and username.
func (f *mgmtFixture) addUser(id, username, email, name string) {
	f.t.Helper()
	now := f.env.clock.Now().UnixMilli()
	f.exec(`INSERT INTO identity_users (user_id, username, password_hash, email, name, created_at, updated_at)
		VALUES (?, ?, 'unused', ?, ?, ?, ?)`, id, username, email, name, now, now)
}

// addGrant stores a grant with a refresh token and the given access-token
// records (jti → expiry) and returns the refresh token.
func (f *mgmtFixture) addGrant(grantID, client, subject, scope string, accessTokens map[string]time.Time) string {
	f.t.Helper()
	now := f.env.clock.Now()
	f.exec("INSERT INTO identity_grants (grant_id, client_id, subject, scope, created_at) VALUES (?, ?, ?, ?, ?)",
		grantID, client, subject, scope, now.UnixMilli())
	rt := newSecret()
	f.exec(`INSERT INTO identity_refresh_tokens (token_hash, grant_id, client_id, data, created_at, expires_at)
		VALUES (?, ?, ?, '{}', ?, ?)`, hashSecret(rt), grantID, client, now.UnixMilli(), now.Add(time.Hour).UnixMilli())
	for jti, exp := range accessTokens {
		f.exec("INSERT INTO identity_access_tokens (jti, grant_id, expires_at) VALUES (?, ?, ?)", jti, grantID, exp.UnixMilli())
	}
	return rt
}

// introspect posts token to the introspection endpoint as c.
func (f *mgmtFixture) introspect(c *mgmtClient, token string) map[string]any {
	f.t.Helper()
	status, body := f.post(PathIntrospect, c, url.Values{"token": {token}})
	if status != http.StatusOK {
		f.t.Fatalf("introspect: status %d: %s", status, body)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		f.t.Fatalf("introspect: %v: %s", err, body)
	}
	return out
}

// oauthError decodes an OAuth error body.
func oauthError(t *testing.T, body []byte) string {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not an OAuth error: %v: %s", err, body)
	}
	return e.Error
}

func TestIntrospection(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newMgmtFixture(t, db)
		rs := f.addClient("resource-server", false)
		app := f.addClient("app", false)
		other := f.addClient("other", false)
		f.addUser("usr_alice", "alice", "alice@example.test", "Alice")

		own, ownJTI := f.mint("app", nil)
		dpopBound, _ := f.mint("app", map[string]any{"cnf": map[string]any{"jkt": "thumbprint"}})
		forRS, _ := f.mint("app", map[string]any{"aud": []string{mgmtAPI, "resource-server"}, "act": map[string]any{"sub": "svc-a"}})
		ccToken, _ := f.mint("app", map[string]any{"sub": "app", "auth_time": nil})
		expired, _ := f.mint("app", map[string]any{"exp": f.env.clock.Now().Add(-time.Second).Unix()})
		future, _ := f.mint("app", map[string]any{"nbf": f.env.clock.Now().Add(time.Minute).Unix()})
		wrongIss, _ := f.mint("app", map[string]any{"iss": "https://evil.example.test"})
		revoked, revokedJTI := f.mint("app", nil)
		if err := f.env.srv.revokeAccessToken(f.ctx, revokedJTI, f.env.clock.Now().Add(time.Hour), "test"); err != nil {
			t.Fatal(err)
		}
		idToken, err := f.env.srv.keys.sign(TypIDToken, map[string]any{"iss": f.env.url, "sub": "usr_alice", "aud": "app",
			"exp": f.env.clock.Now().Add(time.Minute).Unix(), "jti": "x", "client_id": "app"})
		if err != nil {
			t.Fatal(err)
		}
		refresh := f.addGrant("grt_1", "app", "usr_alice", "openid offline", nil)
		revokedRefresh := f.addGrant("grt_2", "app", "usr_alice", "openid", nil)
		if err := f.env.srv.revokeGrant(f.ctx, "grt_2", "test"); err != nil {
			t.Fatal(err)
		}

		cases := []struct {
			name   string
			client *mgmtClient
			token  string
			want   map[string]any // nil: inactive
		}{
			{"own access token", app, own, map[string]any{"active": true, "client_id": "app", "sub": "usr_alice", "username": "alice",
				"scope": "openid read", "aud": mgmtAPI, "iss": f.env.url, "jti": ownJTI, "token_type": "Bearer"}},
			{"DPoP-bound token", app, dpopBound, map[string]any{"active": true, "token_type": "DPoP",
				"cnf": map[string]any{"jkt": "thumbprint"}}},
			{"token naming the caller as audience", rs, forRS, map[string]any{"active": true, "client_id": "app",
				"aud": []any{mgmtAPI, "resource-server"}, "act": map[string]any{"sub": "svc-a"}}},
			{"client credentials token", app, ccToken, map[string]any{"active": true, "sub": "app"}},
			{"expired", app, expired, nil},
			{"not yet valid", app, future, nil},
			{"wrong issuer", app, wrongIss, nil},
			{"revoked", app, revoked, nil},
			{"ID token", app, idToken, nil},
			{"garbage JWT", app, "eyJhbGciOiJub25lIn0.e30.", nil},
			{"garbage opaque", app, "not-a-token", nil},
			{"own refresh token", app, refresh, map[string]any{"active": true, "client_id": "app", "sub": "usr_alice",
				"username": "alice", "scope": "openid offline", "iss": f.env.url}},
			{"revoked refresh token", app, revokedRefresh, nil},
			{"other client's refresh token", other, refresh, nil},
			{"other client's access token", other, own, nil},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				got := f.introspect(tc.client, tc.token)
				if tc.want == nil {
					if len(got) != 1 || got["active"] != false {
						t.Fatalf("got %v, want only {\"active\":false}", got)
					}
					return
				}
				for k, v := range tc.want {
					g, _ := json.Marshal(got[k])
					w, _ := json.Marshal(v)
					if string(g) != string(w) {
						t.Errorf("%s = %s, want %s (response %v)", k, g, w, got)
					}
				}
				if got["exp"] == nil {
					t.Errorf("no exp in %v", got)
				}
			})
		}
		// Two denials: the other client's refresh and access tokens.
		if n := f.env.countEvents(classAPIActivity, actRead, audit.StatusFailure); n != 2 {
			t.Errorf("introspection denials audited: %d, want 2", n)
		}
		for _, e := range f.env.auditEvents() {
			if raw, _ := json.Marshal(e); strings.Contains(string(raw), own) || strings.Contains(string(raw), refresh) {
				t.Fatalf("audit event contains a token: %s", raw)
			}
		}
	})
}

func TestIntrospectionRefusals(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newMgmtFixture(t, db)
		app := f.addClient("app", false)
		public := f.addClient("spa", true)
		tok, _ := f.mint("app", nil)

		cases := []struct {
			name        string
			contentType string
			body        func() string
			path        string
			status      int
			code        string
		}{
			{"no client authentication", "application/x-www-form-urlencoded",
				func() string { return url.Values{"token": {tok}}.Encode() }, PathIntrospect, 401, "invalid_client"},
			{"public client", "application/x-www-form-urlencoded",
				func() string { return f.auth(public, url.Values{"token": {tok}}).Encode() }, PathIntrospect, 401, "invalid_client"},
			{"missing token", "application/x-www-form-urlencoded",
				func() string { return f.auth(app, url.Values{}).Encode() }, PathIntrospect, 400, "invalid_request"},
			{"repeated parameter", "application/x-www-form-urlencoded",
				func() string { return f.auth(app, url.Values{}).Encode() + "&token=a&token=b" }, PathIntrospect, 400, "invalid_request"},
			{"body over 64 KiB", "application/x-www-form-urlencoded",
				func() string { return f.auth(app, url.Values{"token": {strings.Repeat("a", 65<<10)}}).Encode() }, PathIntrospect, 400, "invalid_request"},
			{"JSON body", "application/json", func() string { return `{"token":"x"}` }, PathIntrospect, 400, "invalid_request"},
			{"parameters in the URL", "application/x-www-form-urlencoded",
				func() string { return f.auth(app, url.Values{}).Encode() }, PathIntrospect + "?token=" + tok, 400, "invalid_request"},
			{"revoke: missing token", "application/x-www-form-urlencoded",
				func() string { return f.auth(app, url.Values{}).Encode() }, PathRevoke, 400, "invalid_request"},
			{"revoke: no client authentication", "application/x-www-form-urlencoded",
				func() string { return url.Values{"token": {tok}}.Encode() }, PathRevoke, 401, "invalid_client"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				status, body := f.do(http.MethodPost, tc.path, tc.contentType, tc.body())
				if status != tc.status || oauthError(t, body) != tc.code {
					t.Fatalf("got %d %s, want %d %s", status, body, tc.status, tc.code)
				}
			})
		}
		if status, _ := f.do(http.MethodGet, PathIntrospect, "", ""); status != http.StatusMethodNotAllowed {
			t.Errorf("GET introspect: %d, want 405", status)
		}
		if revoked, err := f.env.srv.isRevoked(f.ctx, "x"); err != nil || revoked {
			t.Fatalf("isRevoked = %v, %v", revoked, err)
		}
	})
}

func TestRevocationEndpoint(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newMgmtFixture(t, db)
		app := f.addClient("app", false)
		other := f.addClient("other", false)
		spa := f.addClient("spa", true)
		f.addUser("usr_alice", "alice", "", "")
		ctx := f.ctx

		revoke := func(c *mgmtClient, token, hint string) {
			t.Helper()
			form := url.Values{"token": {token}}
			if hint != "" {
				form.Set("token_type_hint", hint)
			}
			status, body := f.post(PathRevoke, c, form)
			if status != http.StatusOK || len(body) != 0 {
				t.Fatalf("revoke: %d %s, want 200 and no body", status, body)
			}
		}
		revoked := func(jti string) bool {
			t.Helper()
			ok, err := f.env.srv.isRevoked(ctx, jti)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		grantRevoked := func(id string) bool {
			t.Helper()
			var n int
			if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM identity_grants WHERE grant_id = ? AND revoked_at IS NOT NULL", id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 1
		}

		t.Run("own access token", func(t *testing.T) {
			tok, jti := f.mint("app", nil)
			revoke(app, tok, "access_token")
			if !revoked(jti) {
				t.Fatal("the token is not in the revocation feed")
			}
			if got := f.introspect(app, tok); got["active"] != false {
				t.Fatalf("revoked token introspects as %v", got)
			}
			revoke(app, tok, "") // a second revocation is a no-op
		})
		t.Run("another client's access token", func(t *testing.T) {
			tok, jti := f.mint("app", nil)
			revoke(other, tok, "")
			if revoked(jti) {
				t.Fatal("a client revoked another client's token")
			}
		})
		t.Run("refresh token revokes the grant", func(t *testing.T) {
			exp := f.env.clock.Now().Add(5 * time.Minute)
			rt := f.addGrant("grt_app", "app", "usr_alice", "openid", map[string]time.Time{"at_g1": exp, "at_g2": exp})
			revoke(app, rt, "refresh_token")
			if !grantRevoked("grt_app") || !revoked("at_g1") || !revoked("at_g2") {
				t.Fatal("the grant and its access tokens are not all revoked")
			}
			if got := f.introspect(app, rt); got["active"] != false {
				t.Fatalf("revoked refresh token introspects as %v", got)
			}
		})
		t.Run("another client's refresh token", func(t *testing.T) {
			rt := f.addGrant("grt_other", "app", "usr_alice", "openid", map[string]time.Time{"at_o1": f.env.clock.Now().Add(time.Minute)})
			revoke(other, rt, "")
			if grantRevoked("grt_other") || revoked("at_o1") {
				t.Fatal("a client revoked another client's grant")
			}
		})
		t.Run("public client's refresh token", func(t *testing.T) {
			rt := f.addGrant("grt_spa", "spa", "usr_alice", "openid", nil)
			revoke(spa, rt, "refresh_token")
			if !grantRevoked("grt_spa") {
				t.Fatal("the public client's grant is not revoked")
			}
		})
		t.Run("unknown and invalid tokens", func(t *testing.T) {
			expired, jti := f.mint("app", map[string]any{"exp": f.env.clock.Now().Add(-time.Minute).Unix()})
			for _, tok := range []string{"unknown-refresh-token", "a.b.c", expired} {
				revoke(app, tok, "")
			}
			revoke(app, "x", "unknown_hint")
			if revoked(jti) {
				t.Fatal("an expired token was put in the feed")
			}
		})

		// Successes: the access token, and the two grants (as grant
		// revocations). Failures: the other client's access and refresh
		// tokens, the repeated revocation and the four unrecognized tokens.
		if n := f.env.countEvents(classAPIActivity, actDelete, audit.StatusSuccess); n != 3 {
			t.Errorf("successful revocations audited: %d, want 3", n)
		}
		if n := f.env.countEvents(classAPIActivity, actDelete, audit.StatusFailure); n != 7 {
			t.Errorf("refused revocations audited: %d, want 7", n)
		}
	})
}

func FuzzParseMgmtForm(f *testing.F) {
	for _, s := range []string{"token=abc", "token=a&token=b", "token=%zz", "a=1&b=2&token_type_hint=refresh_token", ""} {
		f.Add(s, "application/x-www-form-urlencoded")
	}
	f.Add("token=x", "application/json")
	f.Add("token=x", "application/x-www-form-urlencoded; charset=utf-8")
	f.Fuzz(func(t *testing.T, body, contentType string) {
		r := httptest.NewRequest(http.MethodPost, PathIntrospect, strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		form, err := parseMgmtForm(httptest.NewRecorder(), r)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		if len(body) > maxMgmtForm {
			t.Fatalf("accepted a body of %d bytes", len(body))
		}
		for k, vs := range form {
			if len(vs) != 1 {
				t.Fatalf("parameter %q repeated but accepted", k)
			}
		}
	})
}
