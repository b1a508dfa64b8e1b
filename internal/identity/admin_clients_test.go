package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// adminDo sends a request to the client admin API and returns the status
// and body.
func adminDo(t *testing.T, env *testEnv, method, path, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, env.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := env.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// testKey returns the JWK of a fresh Ed25519 key.
func testKey(t *testing.T) jose.JSONWebKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewClientKey(pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testRegistration is a valid FAPI 2.0 private_key_jwt client.
func testRegistration(t *testing.T, id string) *Client {
	t.Helper()
	return &Client{
		ID: id, Name: "Payments service", TokenEndpointAuthMethod: AuthPrivateKeyJWT,
		JWKS:       &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{testKey(t)}},
		GrantTypes: []string{GrantClientCredentials, GrantAuthorizationCode}, RedirectURIs: []string{"https://app.example/cb"},
		Scopes: []string{"openid", "accounts:read"}, Audiences: []string{"bank-api"}, DPoPBoundAccessTokens: true,
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func decodeClient(t *testing.T, b []byte) *Client {
	t.Helper()
	var c Client
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("decode client %s: %v", b, err)
	}
	return &c
}

func TestClientAdminLifecycle(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newTestEnv(t, db)
		ctx := context.Background()
		reg := testRegistration(t, "payments")

		status, body := adminDo(t, env, http.MethodPost, PathAdminClients, mustJSON(t, reg))
		if status != http.StatusCreated {
			t.Fatalf("create: %d %s", status, body)
		}
		created := decodeClient(t, body)
		if created.Profile != ProfileFAPI2 || !created.RequirePAR || created.CreatedAt.IsZero() || created.Disabled {
			t.Fatalf("create did not fill the defaults: %+v", created)
		}
		if got, err := env.srv.clients.get(ctx, "payments"); err != nil || got.JWKS.Keys[0].KeyID != reg.JWKS.Keys[0].KeyID {
			t.Fatalf("the token endpoint does not see the client: %v", err)
		}

		status, body = adminDo(t, env, http.MethodGet, PathAdminClients+"/payments", "")
		if status != http.StatusOK || decodeClient(t, body).Name != "Payments service" {
			t.Fatalf("get: %d %s", status, body)
		}

		// A GET answer, edited, goes back as a PUT.
		edited := decodeClient(t, body)
		edited.Scopes = append(edited.Scopes, "payments:write")
		edited.Name = "Payments"
		status, body = adminDo(t, env, http.MethodPut, PathAdminClients+"/payments", mustJSON(t, edited))
		if status != http.StatusOK {
			t.Fatalf("update: %d %s", status, body)
		}
		updated := decodeClient(t, body)
		if !slices.Contains(updated.Scopes, "payments:write") || !updated.CreatedAt.Equal(created.CreatedAt) {
			t.Fatalf("update: %+v", updated)
		}

		status, body = adminDo(t, env, http.MethodPost, PathAdminClients+"/payments/disable", "")
		if status != http.StatusOK || !decodeClient(t, body).Disabled {
			t.Fatalf("disable: %d %s", status, body)
		}
		if _, err := env.srv.clients.get(ctx, "payments"); !errors.Is(err, ErrClientNotFound) {
			t.Fatalf("a disabled client still authenticates: %v", err)
		}
		// The admin API still shows a disabled client, and a PUT of it
		// keeps it disabled.
		status, body = adminDo(t, env, http.MethodGet, PathAdminClients+"/payments", "")
		if status != http.StatusOK || !decodeClient(t, body).Disabled {
			t.Fatalf("get disabled: %d %s", status, body)
		}
		if status, body = adminDo(t, env, http.MethodPut, PathAdminClients+"/payments", string(body)); status != http.StatusOK || !decodeClient(t, body).Disabled {
			t.Fatalf("put disabled: %d %s", status, body)
		}
		status, body = adminDo(t, env, http.MethodPost, PathAdminClients+"/payments/enable", "")
		if status != http.StatusOK || decodeClient(t, body).Disabled {
			t.Fatalf("enable: %d %s", status, body)
		}

		if status, body = adminDo(t, env, http.MethodPost, PathAdminClients, mustJSON(t, testRegistration(t, "another"))); status != http.StatusCreated {
			t.Fatalf("create another: %d %s", status, body)
		}
		status, body = adminDo(t, env, http.MethodGet, PathAdminClients, "")
		var list ClientList
		if err := json.Unmarshal(body, &list); status != http.StatusOK || err != nil || len(list.Clients) != 2 ||
			list.Clients[0].ID != "another" || list.Clients[1].ID != "payments" {
			t.Fatalf("list: %d %s", status, body)
		}

		if status, body = adminDo(t, env, http.MethodDelete, PathAdminClients+"/payments", ""); status != http.StatusNoContent {
			t.Fatalf("delete: %d %s", status, body)
		}
		if status, _ = adminDo(t, env, http.MethodGet, PathAdminClients+"/payments", ""); status != http.StatusNotFound {
			t.Fatalf("get after delete: %d", status)
		}

		for _, tc := range []struct {
			act, want int
		}{{actCreate, 2}, {actUpdate, 2}, {actDisable, 1}, {actEnable, 1}, {actDelete, 1}} {
			if n := env.countEvents(classEntityManagement, tc.act, audit.StatusSuccess); n != tc.want {
				t.Errorf("activity %d: %d success events, want %d", tc.act, n, tc.want)
			}
		}
		if n := env.countEvents(classEntityManagement, actRead, audit.StatusFailure); n != 1 {
			t.Errorf("refused read: %d failure events, want 1", n)
		}
		for _, e := range env.auditEvents() {
			if e.ClassUID != classEntityManagement || e.ActivityID != actCreate {
				continue
			}
			if e.Actor == nil || e.Actor.User == nil || e.Actor.User.UID == "" || len(e.Resources) != 1 || e.Resources[0].Type != "oauth_client" {
				t.Errorf("create event lacks actor or resource: %+v", e)
			}
			raw, _ := json.Marshal(e)
			if bytes.Contains(raw, []byte(`"x":`)) {
				t.Errorf("create event carries key material: %s", raw)
			}
		}
	})
}

func TestClientAdminRefusesBadInput(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, storetest.Open(t, store.SQLite))
	existing := testRegistration(t, "existing")
	if err := env.srv.CreateClient(context.Background(), existing); err != nil {
		t.Fatal(err)
	}
	if err := env.srv.SetClientDisabled(context.Background(), "existing", true); err != nil {
		t.Fatal(err)
	}
	withPrivateKey := testRegistration(t, "leaky")
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	withPrivateKey.JWKS.Keys[0] = jose.JSONWebKey{Key: priv, Algorithm: "EdDSA"}
	mutate := func(f func(c *Client)) string {
		c := testRegistration(t, "new")
		f(c)
		return mustJSON(t, c)
	}

	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantCode, wantMessage    string
	}{
		{"unknown field", http.MethodPost, PathAdminClients, `{"client_id":"x","is_admin":true}`, 400, httpapi.CodeInvalidJSON, "is_admin"},
		{"not JSON", http.MethodPost, PathAdminClients, `client_id=x`, 400, httpapi.CodeInvalidJSON, ""},
		{"trailing data", http.MethodPost, PathAdminClients, mutate(func(*Client) {}) + `{}`, 400, httpapi.CodeInvalidJSON, ""},
		{"too large", http.MethodPost, PathAdminClients, `{"client_name":"` + strings.Repeat("a", maxClientBody) + `"}`, 413, httpapi.CodeTooLarge, ""},
		{"bad client_id", http.MethodPost, PathAdminClients, mutate(func(c *Client) { c.ID = "../x" }), 400, CodeInvalidClientMetadata, "client_id"},
		{"public FAPI client", http.MethodPost, PathAdminClients, mutate(func(c *Client) { c.TokenEndpointAuthMethod, c.JWKS = AuthNone, nil }), 400, CodeInvalidClientMetadata, "token_endpoint_auth_method"},
		{"no audience", http.MethodPost, PathAdminClients, mutate(func(c *Client) { c.Audiences = nil }), 400, CodeInvalidClientMetadata, "audiences"},
		{"http redirect", http.MethodPost, PathAdminClients, mutate(func(c *Client) { c.RedirectURIs = []string{"http://evil.example/cb"} }), 400, CodeInvalidClientMetadata, "redirect_uris"},
		{"implicit grant", http.MethodPost, PathAdminClients, mutate(func(c *Client) { c.GrantTypes = []string{"implicit"} }), 400, CodeInvalidClientMetadata, "grant_types"},
		{"not sender-constrained", http.MethodPost, PathAdminClients, mutate(func(c *Client) { c.DPoPBoundAccessTokens = false }), 400, CodeInvalidClientMetadata, "sender-constrained"},
		{"private key", http.MethodPost, PathAdminClients, mustJSON(t, withPrivateKey), 400, CodeInvalidClientMetadata, "jwks.keys[0]"},
		{"created disabled", http.MethodPost, PathAdminClients, strings.Replace(mutate(func(*Client) {}), `"disabled":false`, `"disabled":true`, 1), 400, CodeInvalidClientMetadata, "disabled"},
		{"exists", http.MethodPost, PathAdminClients, mutate(func(c *Client) { c.ID = "existing" }), 409, CodeClientExists, ""},
		{"put other id", http.MethodPut, PathAdminClients + "/existing", mutate(func(*Client) {}), 400, CodeInvalidClientMetadata, "client_id"},
		{"put enables", http.MethodPut, PathAdminClients + "/existing", mutate(func(c *Client) { c.ID = "existing" }), 400, CodeInvalidClientMetadata, "disabled"},
		{"put invalid", http.MethodPut, PathAdminClients + "/existing", mutate(func(c *Client) { c.ID, c.Disabled, c.Scopes = "existing", true, []string{"a b"} }), 400, CodeInvalidClientMetadata, "scopes"},
		{"put unknown", http.MethodPut, PathAdminClients + "/nobody", mutate(func(c *Client) { c.ID = "nobody" }), 404, httpapi.CodeNotFound, ""},
		{"get unknown", http.MethodGet, PathAdminClients + "/nobody", "", 404, httpapi.CodeNotFound, ""},
		{"delete unknown", http.MethodDelete, PathAdminClients + "/nobody", "", 404, httpapi.CodeNotFound, ""},
		{"disable unknown", http.MethodPost, PathAdminClients + "/nobody/disable", "", 404, httpapi.CodeNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := adminDo(t, env, tt.method, tt.path, tt.body)
			var eb httpapi.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || status != tt.wantStatus || eb.Error.Code != tt.wantCode ||
				!strings.Contains(eb.Error.Message, tt.wantMessage) || eb.Error.RequestID == "" {
				t.Fatalf("got %d %s; want %d %s mentioning %q", status, body, tt.wantStatus, tt.wantCode, tt.wantMessage)
			}
		})
	}

	// Nothing changed: the only client is the one registered first, as it was.
	list, err := env.srv.ListClients(context.Background())
	if err != nil || len(list) != 1 || list[0].ID != "existing" || !list[0].Disabled || !slices.Equal(list[0].Scopes, existing.Scopes) {
		t.Fatalf("bad input changed the registry: %v %+v", err, list)
	}
}

// flakyAuditor is the real audit log with an injectable failure.
type flakyAuditor struct {
	Auditor
	fail atomic.Bool
}

func (f *flakyAuditor) Append(ctx context.Context, events []*audit.Event) (audit.AppendResult, error) {
	if f.fail.Load() {
		return audit.AppendResult{}, errors.New("injected audit failure")
	}
	return f.Auditor.Append(ctx, events)
}

func TestClientChangesThatCannotBeAudited(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, storetest.Open(t, store.SQLite))
	ctx := context.Background()
	fa := &flakyAuditor{Auditor: env.srv.auditor}
	env.srv.auditor = fa
	reg := testRegistration(t, "svc")
	if err := env.srv.CreateClient(ctx, reg); err != nil {
		t.Fatal(err)
	}
	fa.fail.Store(true)

	// Changes that grant access are undone.
	if err := env.srv.CreateClient(ctx, testRegistration(t, "unaudited")); err == nil {
		t.Fatal("an unaudited registration succeeded")
	}
	wider := testRegistration(t, "svc")
	wider.Scopes = append(wider.Scopes, "admin")
	if err := env.srv.UpdateClient(ctx, wider); err == nil {
		t.Fatal("an unaudited update succeeded")
	}
	fa.fail.Store(false)
	if err := env.srv.SetClientDisabled(ctx, "svc", true); err != nil {
		t.Fatal(err)
	}
	fa.fail.Store(true)
	if err := env.srv.SetClientDisabled(ctx, "svc", false); err == nil {
		t.Fatal("an unaudited enable succeeded")
	}
	status, body := adminDo(t, env, http.MethodPost, PathAdminClients+"/svc/enable", "")
	if status != http.StatusInternalServerError || bytes.Contains(body, []byte("injected")) {
		t.Fatalf("unaudited enable over HTTP: %d %s", status, body)
	}
	fa.fail.Store(false)
	list, err := env.srv.ListClients(ctx)
	if err != nil || len(list) != 1 || !list[0].Disabled || slices.Contains(list[0].Scopes, "admin") {
		t.Fatalf("an unaudited change stayed: %v %+v", err, list)
	}

	// Changes that remove access stand, and report the failure.
	if err := env.srv.SetClientDisabled(ctx, "svc", false); err != nil {
		t.Fatal(err)
	}
	fa.fail.Store(true)
	if err := env.srv.DeleteClient(ctx, "svc"); err == nil || !strings.Contains(err.Error(), "not audited") {
		t.Fatalf("unaudited delete: %v", err)
	}
	fa.fail.Store(false)
	if _, err := env.srv.GetClient(ctx, "svc"); !errors.Is(err, ErrClientNotFound) {
		t.Fatalf("delete did not stand: %v", err)
	}
}

func TestClientGoAPI(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t, storetest.Open(t, store.SQLite))
	ctx := context.Background()
	bad := testRegistration(t, "bad")
	bad.GrantTypes = []string{GrantRefreshToken}
	if err := env.srv.CreateClient(ctx, bad); !errors.Is(err, ErrInvalidRegistration) || !strings.Contains(err.Error(), "grant_types") {
		t.Fatalf("invalid registration: %v", err)
	}
	if err := env.srv.CreateClient(ctx, nil); !errors.Is(err, ErrInvalidRegistration) {
		t.Fatalf("nil registration: %v", err)
	}
	c := testRegistration(t, "svc")
	if err := env.srv.CreateClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := env.srv.CreateClient(ctx, testRegistration(t, "svc")); !errors.Is(err, ErrClientExists) {
		t.Fatalf("duplicate: %v", err)
	}
	got, err := env.srv.GetClient(ctx, "svc")
	if err != nil || got.Name != c.Name || got.Profile != ProfileFAPI2 {
		t.Fatalf("get: %v %+v", err, got)
	}
	if err := env.srv.UpdateClient(ctx, testRegistration(t, "nobody")); !errors.Is(err, ErrClientNotFound) {
		t.Fatalf("update unknown: %v", err)
	}
	if err := env.srv.SetClientDisabled(ctx, "nobody", true); !errors.Is(err, ErrClientNotFound) {
		t.Fatalf("disable unknown: %v", err)
	}
	if err := env.srv.DeleteClient(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	if err := env.srv.DeleteClient(ctx, "svc"); !errors.Is(err, ErrClientNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if list, err := env.srv.ListClients(ctx); err != nil || len(list) != 0 {
		t.Fatalf("list: %v %v", list, err)
	}
}

func TestNewClientKey(t *testing.T) {
	t.Parallel()
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // the test checks that short keys are refused
	certFor := func(signer crypto.Signer) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "svc"},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	tests := []struct {
		name    string
		pub     crypto.PublicKey
		cert    *x509.Certificate
		wantAlg string
		wantErr string
	}{
		{"Ed25519", edPub, nil, "EdDSA", ""},
		{"P-256", &p256.PublicKey, nil, "ES256", ""},
		{"RSA 2048", &rsa2048.PublicKey, nil, "PS256", ""},
		{"Ed25519 with certificate", edPub, certFor(edPriv), "EdDSA", ""},
		{"P-256 with certificate", &p256.PublicKey, certFor(p256), "ES256", ""},
		{"P-384", &p384.PublicKey, nil, "", "P-256"},
		{"RSA 1024", &rsa1024.PublicKey, nil, "", "2048"},
		{"private key", edPriv, nil, "", "unsupported"},
		{"certificate of another key", edPub, certFor(p256), "", "not for this public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k, err := NewClientKey(tt.pub, tt.cert)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tp, _ := k.Thumbprint(crypto.SHA256)
			if k.Algorithm != tt.wantAlg || k.Use != "sig" || k.KeyID != base64.RawURLEncoding.EncodeToString(tp) {
				t.Fatalf("key %+v", k)
			}
			method := AuthPrivateKeyJWT
			if tt.cert != nil {
				method = AuthSelfSignedTLSClient
			}
			if err := checkClientKey(k, method); err != nil {
				t.Fatalf("the registration check refuses the key: %v", err)
			}
		})
	}
}
