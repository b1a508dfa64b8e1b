package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// Audiences and scopes of the token tests' clients.
const (
	tkAPI1 = "https://api.one.test"
	tkAPI2 = "https://api.two.test"
	tkAPI3 = "https://api.three.test"
)

var tkScopes = []string{"openid", "profile", "email", "read", "write"}

// tokFixture drives the token endpoint of a test server with real HTTP
// requests.
type tokFixture struct {
	t   *testing.T
	env *testEnv
	ctx context.Context
	// nonce is the DPoP-Nonce the server last sent.
	nonce string
}

func newTokFixture(t *testing.T, db *store.DB, opts ...func(*Config)) *tokFixture {
	t.Helper()
	return &tokFixture{t: t, env: newTestEnv(t, db, opts...), ctx: context.Background()}
}

// tokClient is a registered client and what it authenticates with.
type tokClient struct {
	reg *Client
	// key signs client assertions (private_key_jwt); kid names it.
	key crypto.Signer
	kid string
	// cert is the client's TLS certificate (mTLS methods).
	cert *tls.Certificate
}

// register creates c after mutate and returns it as stored.
func (f *tokFixture) register(c *Client, mutate func(*Client)) {
	f.t.Helper()
	if mutate != nil {
		mutate(c)
	}
	if err := f.env.srv.clients.create(f.ctx, c); err != nil {
		f.t.Fatalf("register client %s: %v", c.ID, err)
	}
}

// addKeyClient registers a private_key_jwt client with an Ed25519 key,
// allowed the client-credentials grant, tkScopes and the three test
// audiences (profile oauth2: not sender-constrained unless mutate says).
func (f *tokFixture) addKeyClient(id string, mutate func(*Client)) *tokClient {
	f.t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	tc := &tokClient{key: priv, kid: id + "-key-1"}
	tc.reg = &Client{
		ID: id, Profile: ProfileOAuth2, TokenEndpointAuthMethod: AuthPrivateKeyJWT,
		JWKS:       &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: tc.kid, Algorithm: "EdDSA", Use: "sig"}}},
		GrantTypes: []string{GrantClientCredentials}, Scopes: tkScopes, Audiences: []string{tkAPI1, tkAPI2, tkAPI3},
	}
	f.register(tc.reg, mutate)
	return tc
}

// addSelfSignedClient registers a self_signed_tls_client_auth client with
// a fresh certificate.
func (f *tokFixture) addSelfSignedClient(id string, mutate func(*Client)) *tokClient {
	f.t.Helper()
	cert := tkSelfSigned(f.t, id)
	tc := &tokClient{cert: &cert}
	tc.reg = &Client{
		ID: id, Profile: ProfileOAuth2, TokenEndpointAuthMethod: AuthSelfSignedTLSClient,
		JWKS:       &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: cert.Leaf.PublicKey, Certificates: []*x509.Certificate{cert.Leaf}, Use: "sig"}}},
		GrantTypes: []string{GrantClientCredentials}, Scopes: tkScopes, Audiences: []string{tkAPI1, tkAPI2, tkAPI3},
	}
	f.register(tc.reg, mutate)
	return tc
}

// addPublicClient registers a public client (PKCE only) for the
// authorization-code and refresh-token grants.
func (f *tokFixture) addPublicClient(id string, mutate func(*Client)) *tokClient {
	f.t.Helper()
	tc := &tokClient{reg: &Client{
		ID: id, Profile: ProfileOAuth2, TokenEndpointAuthMethod: AuthNone,
		GrantTypes:   []string{GrantAuthorizationCode, GrantRefreshToken},
		RedirectURIs: []string{"http://127.0.0.1/callback"}, Scopes: tkScopes, Audiences: []string{tkAPI1, tkAPI2},
	}}
	f.register(tc.reg, mutate)
	return tc
}

// tkSelfSigned returns a self-signed ECDSA client certificate.
func tkSelfSigned(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	return tkIssueCert(t, cn, nil, nil)
}

// tkIssueCert returns a client certificate for cn (also its DNS SAN),
// signed by ca/caKey, or self-signed when ca is nil.
func tkIssueCert(t testing.TB, cn string, ca *x509.Certificate, caKey crypto.Signer) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	parent, signer := tmpl, crypto.Signer(key)
	if ca != nil {
		parent, signer = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// tkCA returns a CA certificate and key for tls_client_auth tests.
func tkCA(t testing.TB, cn string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

// assertionClaimsFor returns the claims of a valid assertion of c.
func (f *tokFixture) assertionClaimsFor(c *tokClient) map[string]any {
	now := f.env.clock.Now()
	return map[string]any{
		"iss": c.reg.ID, "sub": c.reg.ID, "aud": f.env.url, "jti": newID("jti"),
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
	}
}

// signAssertion signs claims as a compact JWS with alg and key, kid and
// typ in the header when set, and the public key embedded when embed.
func signAssertion(t testing.TB, alg jose.SignatureAlgorithm, key any, kid, typ string, embed bool, claims any) string {
	t.Helper()
	opts := &jose.SignerOptions{EmbedJWK: embed}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	if kid != "" && !embed {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// assertion returns a fresh, valid client assertion of c.
func (f *tokFixture) assertion(c *tokClient) string {
	return signAssertion(f.t, jose.EdDSA, c.key, c.kid, "", false, f.assertionClaimsFor(c))
}

// creds returns the authentication parameters of c: a fresh assertion,
// or the client ID for mTLS and public clients.
func (f *tokFixture) creds(c *tokClient) url.Values {
	if c.key != nil {
		return url.Values{"client_assertion_type": {ClientAssertionTypeJWT}, "client_assertion": {f.assertion(c)}}
	}
	return url.Values{"client_id": {c.reg.ID}}
}

// tokReq is a token request.
type tokReq struct {
	client *tokClient // adds its credentials and certificate when set
	form   url.Values
	certs  []tls.Certificate
	dpop   []string // DPoP header values
	// signer, when set, adds a proof made for this request at the
	// server's clock; with exactNonce, its nonce is nonce and a
	// use_dpop_nonce answer is not retried.
	signer     *tkDPoP
	nonce      string
	exactNonce bool
	// contentType defaults to the form type; body replaces the form.
	contentType string
	body        *string
	header      http.Header
}

// tokResp is a token response, decoded.
type tokResp struct {
	status int
	body   map[string]any
	header http.Header
}

func (r tokResp) str(k string) string { s, _ := r.body[k].(string); return s }

// errCode is the OAuth error, or "" for a success.
func (r tokResp) errCode() string { return r.str("error") }

// post sends req to the token endpoint. With a DPoP signer and no
// explicit nonce it behaves like a DPoP client: it sends the nonce it last
// got and, answered use_dpop_nonce, retries once with the new one.
func (f *tokFixture) post(req tokReq) tokResp {
	f.t.Helper()
	if req.signer == nil || req.exactNonce {
		return f.send(req)
	}
	req.nonce = f.nonce
	resp := f.send(req)
	if resp.errCode() == ErrUseDPoPNonce.Code {
		req.nonce = resp.header.Get(HeaderDPoPNonce)
		resp = f.send(req)
	}
	if n := resp.header.Get(HeaderDPoPNonce); n != "" {
		f.nonce = n
	}
	return resp
}

// send sends req once.
func (f *tokFixture) send(req tokReq) tokResp {
	f.t.Helper()
	form := url.Values{}
	if req.client != nil {
		for k, v := range f.creds(req.client) {
			form[k] = v
		}
		if req.client.cert != nil {
			req.certs = append(req.certs, *req.client.cert)
		}
	}
	for k, v := range req.form {
		form[k] = v
	}
	body := form.Encode()
	if req.body != nil {
		body = *req.body
	}
	r, err := http.NewRequest(http.MethodPost, f.env.url+PathToken, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if req.contentType != "" {
		r.Header.Set("Content-Type", req.contentType)
	}
	for k, vs := range req.header {
		r.Header[k] = vs
	}
	for _, v := range req.dpop {
		r.Header.Add("DPoP", v)
	}
	if req.signer != nil {
		// The proof's iat follows the server's (test) clock.
		r.Header.Add("DPoP", tkProof(f.t, req.signer, http.MethodPost, f.env.url+PathToken, req.nonce, f.env.clock.Now()))
	}
	resp, err := f.env.client(req.certs...).Do(r)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	out := tokResp{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		f.t.Fatalf("token response %d is not JSON: %q", resp.StatusCode, raw)
	}
	return out
}

// mustToken posts req and fails the test unless it succeeds.
func (f *tokFixture) mustToken(req tokReq) tokResp {
	f.t.Helper()
	resp := f.post(req)
	if resp.status != http.StatusOK || resp.str("access_token") == "" {
		f.t.Fatalf("token request: %d %v", resp.status, resp.body)
	}
	if resp.header.Get("Cache-Control") != "no-store" {
		f.t.Errorf("token response Cache-Control %q", resp.header.Get("Cache-Control"))
	}
	return resp
}

// wantError checks that resp is the OAuth error code.
func (f *tokFixture) wantError(resp tokResp, code string) {
	f.t.Helper()
	if resp.errCode() != code || resp.status < 400 {
		f.t.Fatalf("want %s, got %d %v", code, resp.status, resp.body)
	}
	if resp.str("access_token") != "" {
		f.t.Fatalf("an error response carries a token: %v", resp.body)
	}
}

// claims verifies an access token with the server's keys and returns its
// claims (whether or not it has been revoked since).
func (f *tokFixture) claims(token string) atClaims {
	f.t.Helper()
	payload, err := f.env.srv.keys.verify(token, TypAccessToken)
	if err != nil {
		f.t.Fatalf("access token does not verify: %v", err)
	}
	var c atClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		f.t.Fatal(err)
	}
	return c
}

// revoked reports whether the access token jti is in the revocation feed.
func (f *tokFixture) revoked(jti string) bool {
	f.t.Helper()
	var n int
	if err := f.env.db.QueryRowContext(f.ctx, "SELECT COUNT(*) FROM identity_revocations WHERE jti = ?", jti).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n == 1
}

// tkDPoP is a client's DPoP key and its signer.
type tkDPoP struct {
	*dpop.Signer
	key ed25519.PrivateKey
}

// newSigner returns a DPoP signer with a fresh Ed25519 key.
func (f *tokFixture) newSigner() *tkDPoP {
	f.t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	s, err := dpop.NewSigner(priv)
	if err != nil {
		f.t.Fatal(err)
	}
	return &tkDPoP{Signer: s, key: priv}
}

// noSecretsInAudit fails if any audit event contains one of secrets.
func (f *tokFixture) noSecretsInAudit(secrets ...string) {
	f.t.Helper()
	for _, e := range f.env.auditEvents() {
		raw, err := json.Marshal(e)
		if err != nil {
			f.t.Fatal(err)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(string(raw), s) {
				f.t.Fatalf("audit event %s/%s contains a secret", e.ClassName, e.ActivityName)
			}
		}
	}
}

func TestTokenEndpointRefusesMalformedRequests(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		c := f.addKeyClient("svc-malformed", nil)
		big := "grant_type=client_credentials&pad=" + strings.Repeat("a", maxTokenFormBytes)
		jsonBody := `{"grant_type":"client_credentials"}`
		for _, tc := range []struct {
			name string
			req  tokReq
			code string
		}{
			{"json body", tokReq{contentType: "application/json", body: &jsonBody}, "invalid_request"},
			{"no content type", tokReq{client: c, contentType: "text/plain", form: url.Values{"grant_type": {GrantClientCredentials}}}, "invalid_request"},
			{"latin-1 charset", tokReq{client: c, contentType: "application/x-www-form-urlencoded; charset=iso-8859-1",
				form: url.Values{"grant_type": {GrantClientCredentials}}}, "invalid_request"},
			{"repeated grant_type", tokReq{client: c, form: url.Values{"grant_type": {GrantClientCredentials, GrantClientCredentials}}}, "invalid_request"},
			{"repeated scope", tokReq{client: c, form: url.Values{"grant_type": {GrantClientCredentials}, "scope": {"read", "write"}}}, "invalid_request"},
			{"body too large", tokReq{body: &big}, "invalid_request"},
			{"no grant_type", tokReq{client: c, form: url.Values{}}, "invalid_request"},
			{"unknown grant_type", tokReq{client: c, form: url.Values{"grant_type": {"password"}}}, "unsupported_grant_type"},
			{"implicit grant_type", tokReq{client: c, form: url.Values{"grant_type": {"implicit"}}}, "unsupported_grant_type"},
			{"grant not registered", tokReq{client: c, form: url.Values{"grant_type": {GrantAuthorizationCode}, "code": {"x"}}}, "unauthorized_client"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
				f.wantError(f.post(tc.req), tc.code)
			})
		}

		// Parameters in the URL, and other methods, are refused too.
		resp, err := f.env.client().Post(f.env.url+PathToken+"?grant_type=client_credentials", "application/x-www-form-urlencoded",
			strings.NewReader(f.creds(c).Encode()))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("query parameters: status %d", resp.StatusCode)
		}
		resp, err = f.env.client().Get(f.env.url + PathToken)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET: status %d", resp.StatusCode)
		}
	})
}

// dpopClient registers a FAPI 2.0 private_key_jwt client that must use
// DPoP.
func (f *tokFixture) dpopClient(id string) *tokClient {
	return f.addKeyClient(id, func(c *Client) {
		c.Profile, c.DPoPBoundAccessTokens = ProfileFAPI2, true
	})
}

func TestDPoPAtTheTokenEndpoint(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db, func(c *Config) { c.DPoPNonce = true })
		c := f.dpopClient("svc-dpop")
		signer := f.newSigner()
		cc := url.Values{"grant_type": {GrantClientCredentials}}

		// Without a nonce: use_dpop_nonce, with the nonce in the header.
		resp := f.post(tokReq{client: c, form: cc, signer: signer, exactNonce: true})
		f.wantError(resp, "use_dpop_nonce")
		nonce := resp.header.Get(HeaderDPoPNonce)
		if nonce == "" || resp.status != http.StatusBadRequest {
			t.Fatalf("use_dpop_nonce: status %d, nonce %q", resp.status, nonce)
		}
		// With it: a DPoP-bound token and a fresh nonce.
		resp = f.mustToken(tokReq{client: c, form: cc, signer: signer, nonce: nonce, exactNonce: true})
		if resp.str("token_type") != "DPoP" {
			t.Errorf("token_type %q", resp.str("token_type"))
		}
		if got := f.claims(resp.str("access_token")).Cnf; got == nil || got.JKT != signer.Thumbprint() {
			t.Errorf("cnf %+v, want jkt %s", got, signer.Thumbprint())
		}
		if resp.header.Get(HeaderDPoPNonce) == "" {
			t.Error("a successful token response carries no DPoP-Nonce")
		}

		proof := func(method, u string, iat time.Time) string {
			t.Helper()
			return tkProof(t, signer, method, u, nonce, iat)
		}
		now := f.env.clock.Now()
		replayed, err := signer.Proof(http.MethodPost, f.env.url+PathToken, nonce, "")
		if err != nil {
			t.Fatal(err)
		}
		f.mustToken(tokReq{client: c, form: cc, dpop: []string{replayed}})
		for _, tc := range []struct {
			name string
			dpop []string
			code string
		}{
			{"no proof", nil, "invalid_dpop_proof"},
			{"replayed proof", []string{replayed}, "invalid_dpop_proof"},
			{"wrong htm", []string{proof(http.MethodGet, f.env.url+PathToken, now)}, "invalid_dpop_proof"},
			{"wrong htu", []string{proof(http.MethodPost, f.env.url+PathPAR, now)}, "invalid_dpop_proof"},
			{"htu of another host", []string{proof(http.MethodPost, "https://evil.test"+PathToken, now)}, "invalid_dpop_proof"},
			{"iat too old", []string{proof(http.MethodPost, f.env.url+PathToken, now.Add(-2*time.Minute))}, "invalid_dpop_proof"},
			{"iat in the future", []string{proof(http.MethodPost, f.env.url+PathToken, now.Add(2*time.Minute))}, "invalid_dpop_proof"},
			{"two proofs", []string{proof(http.MethodPost, f.env.url+PathToken, now), proof(http.MethodPost, f.env.url+PathToken, now)}, "invalid_dpop_proof"},
			{"garbage", []string{"not.a.proof"}, "invalid_dpop_proof"},
			{"bad nonce", []string{tkProof(t, signer, http.MethodPost, f.env.url+PathToken, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", now)}, "use_dpop_nonce"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
				f.wantError(f.post(tokReq{client: c, form: cc, dpop: tc.dpop}), tc.code)
			})
		}

		// The nonce is good for its window and the next, then no more.
		f.env.clock.Advance(dpopNonceWindow)
		f.mustToken(tokReq{client: c, form: cc, signer: signer, nonce: nonce, exactNonce: true})
		f.env.clock.Advance(dpopNonceWindow)
		f.wantError(f.post(tokReq{client: c, form: cc, signer: signer, nonce: nonce, exactNonce: true}), "use_dpop_nonce")
	})
}

// tkProof makes a DPoP proof with an arbitrary iat, which dpop.Signer
// does not offer, from the key behind k.
func tkProof(t testing.TB, k *tkDPoP, method, u, nonce string, iat time.Time) string {
	t.Helper()
	claims := map[string]any{"jti": newID("p"), "htm": method, "htu": u, "iat": iat.Unix()}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	return signAssertion(t, jose.EdDSA, k.key, "", TypDPoP, true, claims)
}
