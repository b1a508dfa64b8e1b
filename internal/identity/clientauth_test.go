package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// TestClientAssertionRefusals mirrors the client-authentication modules of
// the OpenID FAPI 2.0 conformance suite: each bad assertion is refused with
// invalid_client and audited.
func TestClientAssertionRefusals(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		c := f.addKeyClient("svc-assert", nil)
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		// A second client with an RSA key (PS256 is allowed, RS256 not).
		rc := f.addKeyClient("svc-rsa", func(cl *Client) {
			cl.JWKS = &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rsaKey.Public(), KeyID: "rsa-1", Use: "sig"}}}
		})
		_, otherKey, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		now := f.env.clock.Now()
		with := func(k string, v any) map[string]any {
			m := f.assertionClaimsFor(c)
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
			return m
		}
		sign := func(claims map[string]any) string {
			return signAssertion(t, jose.EdDSA, c.key, c.kid, "", false, claims)
		}
		b64 := base64.RawURLEncoding.EncodeToString
		noneClaims, _ := json.Marshal(f.assertionClaimsFor(c))
		replayed := f.assertion(c)
		f.mustToken(tokReq{form: url.Values{"grant_type": {GrantClientCredentials}, "client_assertion_type": {ClientAssertionTypeJWT},
			"client_assertion": {replayed}}})

		for _, tc := range []struct {
			name      string
			assertion string
			form      url.Values
			code      string
		}{
			{"wrong aud", sign(with("aud", "https://evil.test")), nil, "invalid_client"},
			{"aud array with a stranger", sign(with("aud", []string{f.env.url, "https://evil.test"})), nil, "invalid_client"},
			{"no aud", sign(with("aud", nil)), nil, "invalid_client"},
			{"expired", sign(with("exp", now.Add(-time.Second).Unix())), nil, "invalid_client"},
			{"no exp", sign(with("exp", nil)), nil, "invalid_client"},
			{"exp far ahead", sign(with("exp", now.Add(time.Hour).Unix())), nil, "invalid_client"},
			{"iat beyond 60s ahead", sign(with("iat", now.Add(90*time.Second).Unix())), nil, "invalid_client"},
			{"no iat", sign(with("iat", nil)), nil, "invalid_client"},
			{"nbf ahead", sign(with("nbf", now.Add(5*time.Minute).Unix())), nil, "invalid_client"},
			{"missing sub", sign(with("sub", nil)), nil, "invalid_client"},
			{"sub of another client", sign(with("sub", "svc-rsa")), nil, "invalid_client"},
			{"no jti", sign(with("jti", nil)), nil, "invalid_client"},
			{"replayed jti", replayed, nil, "invalid_client"},
			{"RS256", signAssertion(t, jose.RS256, rsaKey, "rsa-1", "", false, f.assertionClaimsFor(rc)), nil, "invalid_client"},
			{"HS256", signAssertion(t, jose.HS256, []byte("0123456789abcdef0123456789abcdef"), c.kid, "", false, f.assertionClaimsFor(c)), nil, "invalid_client"},
			{"alg none", b64([]byte(`{"alg":"none"}`)) + "." + b64(noneClaims) + ".", nil, "invalid_client"},
			{"unregistered key", signAssertion(t, jose.EdDSA, otherKey, c.kid, "", false, f.assertionClaimsFor(c)), nil, "invalid_client"},
			{"unregistered key embedded", signAssertion(t, jose.EdDSA, otherKey, "", "", true, f.assertionClaimsFor(c)), nil, "invalid_client"},
			{"typ of an access token", signAssertion(t, jose.EdDSA, c.key, c.kid, TypAccessToken, false, f.assertionClaimsFor(c)), nil, "invalid_client"},
			{"unknown client", signAssertion(t, jose.EdDSA, c.key, c.kid, "", false, map[string]any{"iss": "nobody", "sub": "nobody",
				"aud": f.env.url, "jti": "j", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}), nil, "invalid_client"},
			{"client_id differs", f.assertion(c), url.Values{"client_id": {"svc-rsa"}}, "invalid_client"},
			{"wrong assertion type", f.assertion(c), url.Values{"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}}, "invalid_client"},
			{"not a JWS", "abc.def.ghi", nil, "invalid_client"},
			{"assertion and secret", f.assertion(c), url.Values{"client_secret": {"s3cret"}}, "invalid_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
				before := f.env.countEvents(classAuthentication, actPreauth, audit.StatusFailure)
				form := url.Values{"grant_type": {GrantClientCredentials}, "client_assertion_type": {ClientAssertionTypeJWT},
					"client_assertion": {tc.assertion}}
				for k, v := range tc.form {
					form[k] = v
				}
				resp := f.post(tokReq{form: form})
				f.wantError(resp, tc.code)
				if tc.code == "invalid_client" && resp.status != http.StatusUnauthorized {
					t.Errorf("status %d, want 401", resp.status)
				}
				if got := f.env.countEvents(classAuthentication, actPreauth, audit.StatusFailure); got != before+1 {
					t.Errorf("%d client-authentication failures audited, want %d", got, before+1)
				}
			})
		}
		// The same assertion with the token endpoint as aud is accepted.
		f.mustToken(tokReq{form: url.Values{"grant_type": {GrantClientCredentials}, "client_assertion_type": {ClientAssertionTypeJWT},
			"client_assertion": {sign(with("aud", f.env.url+PathToken))}}})
		// PS256 with the RSA key is accepted.
		f.mustToken(tokReq{form: url.Values{"grant_type": {GrantClientCredentials}, "client_assertion_type": {ClientAssertionTypeJWT},
			"client_assertion": {signAssertion(t, jose.PS256, rsaKey, "", "", false, f.assertionClaimsFor(rc))}}})
		// The failure audit names the claimed client, never the assertion.
		var found bool
		for _, e := range f.env.auditEvents() {
			if e.ClassUID == classAuthentication && e.ActivityID == actPreauth && e.Actor != nil && e.Actor.AppUID == c.reg.ID {
				found = true
			}
		}
		if !found {
			t.Error("no audit event names the client")
		}
		f.noSecretsInAudit(replayed)
	})
}

func TestClientAuthenticationMethods(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ca, caKey := tkCA(t, "client CA")
		otherCA, otherCAKey := tkCA(t, "another CA")
		f := newTokFixture(t, db, func(c *Config) {
			c.ClientCAs = x509.NewCertPool()
			c.ClientCAs.AddCert(ca)
		})
		cc := url.Values{"grant_type": {GrantClientCredentials}}
		self := f.addSelfSignedClient("svc-self", func(c *Client) { c.TLSClientCertificateBoundAccessTokens = true })
		pkiCert := tkIssueCert(t, "svc.client.test", ca, caKey)
		pki := &tokClient{cert: &pkiCert}
		pki.reg = &Client{ID: "svc-pki", Profile: ProfileFAPI2, TokenEndpointAuthMethod: AuthTLSClient, TLSClientAuthSANDNS: "svc.client.test",
			TLSClientCertificateBoundAccessTokens: true, GrantTypes: []string{GrantClientCredentials}, Scopes: tkScopes, Audiences: []string{tkAPI1}}
		f.register(pki.reg, nil)
		key := f.addKeyClient("svc-key", nil)
		public := f.addPublicClient("app-public", nil)

		// The right certificate authenticates, and binds the token.
		for _, c := range []*tokClient{self, pki} {
			resp := f.mustToken(tokReq{client: c, form: cc})
			if got := f.claims(resp.str("access_token")).Cnf; got == nil || got.X5TS256 != certThumbprint(c.cert.Leaf) {
				t.Errorf("%s: cnf %+v", c.reg.ID, got)
			}
		}

		wrongName := tkIssueCert(t, "other.client.test", ca, caKey)
		wrongCA := tkIssueCert(t, "svc.client.test", otherCA, otherCAKey)
		stranger := tkSelfSigned(t, "svc-self")
		id := func(c *tokClient) url.Values {
			return url.Values{"grant_type": {GrantClientCredentials}, "client_id": {c.reg.ID}}
		}
		for _, tc := range []struct {
			name  string
			form  url.Values
			certs []tls.Certificate
			basic bool
			code  string
		}{
			{"self-signed: no certificate", id(self), nil, false, "invalid_client"},
			{"self-signed: another certificate", id(self), []tls.Certificate{stranger}, false, "invalid_client"},
			{"self-signed: the PKI certificate", id(self), []tls.Certificate{pkiCert}, false, "invalid_client"},
			{"tls_client_auth: no certificate", id(pki), nil, false, "invalid_client"},
			{"tls_client_auth: other subject", id(pki), []tls.Certificate{wrongName}, false, "invalid_client"},
			{"tls_client_auth: other CA", id(pki), []tls.Certificate{wrongCA}, false, "invalid_client"},
			{"tls_client_auth: self-signed", id(pki), []tls.Certificate{stranger}, false, "invalid_client"},
			{"private_key_jwt client without assertion", id(key), nil, false, "invalid_client"},
			{"private_key_jwt client with a certificate only", id(key), []tls.Certificate{stranger}, false, "invalid_client"},
			{"client secret", url.Values{"grant_type": {GrantClientCredentials}, "client_id": {key.reg.ID}, "client_secret": {"x"}}, nil, false, "invalid_client"},
			{"HTTP Basic", cc, nil, true, "invalid_client"},
			{"no client at all", cc, nil, false, "invalid_client"},
			{"unknown client", url.Values{"grant_type": {GrantClientCredentials}, "client_id": {"nobody"}}, nil, false, "invalid_client"},
			{"public client, client credentials", id(public), nil, false, "invalid_client"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
				before := f.env.countEvents(classAuthentication, actPreauth, audit.StatusFailure)
				req := tokReq{form: tc.form, certs: tc.certs}
				if tc.basic {
					req.header = http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("svc-key:secret"))}}
				}
				f.wantError(f.post(req), tc.code)
				if got := f.env.countEvents(classAuthentication, actPreauth, audit.StatusFailure); got != before+1 {
					t.Errorf("%d client-authentication failures audited, want %d", got, before+1)
				}
			})
		}
		// A disabled client is refused like an unknown one.
		if err := f.env.srv.clients.setDisabled(f.ctx, self.reg.ID, true); err != nil {
			t.Fatal(err)
		}
		resp := f.post(tokReq{client: self, form: cc})
		f.wantError(resp, "invalid_client")
		if resp.str("error_description") != "client authentication failed" {
			t.Errorf("description %q reveals more than a failure", resp.str("error_description"))
		}
	})
}
