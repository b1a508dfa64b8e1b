package identity

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// TestOAuth2ClientCredentials drives the token endpoint with the real
// golang.org/x/oauth2 client-credentials client, unchanged: private_key_jwt
// through EndpointParams, mutual TLS through the HTTP client, and DPoP
// (with server nonces) through the sdk/dpop transport.
func TestOAuth2ClientCredentials(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db, func(c *Config) { c.DPoPNonce = true })
		tokenURL := f.env.url + PathToken

		t.Run("private_key_jwt", func(t *testing.T) {
			f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
			c := f.addKeyClient("svc-x-oauth2", nil)
			ctx := context.WithValue(context.Background(), oauth2.HTTPClient, f.env.client())
			var jtis []string
			for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleAutoDetect} {
				// A new assertion for every fetch: each is single-use.
				conf := clientcredentials.Config{
					ClientID: c.reg.ID, TokenURL: tokenURL, Scopes: []string{"read"}, AuthStyle: style,
					EndpointParams: url.Values{"client_assertion_type": {ClientAssertionTypeJWT}, "client_assertion": {f.assertion(c)},
						"resource": {tkAPI2}},
				}
				tok, err := conf.Token(ctx)
				if err != nil {
					t.Fatalf("auth style %d: %v", style, err)
				}
				if tok.Type() != "Bearer" || !tok.Valid() {
					t.Errorf("token type %q valid %v", tok.Type(), tok.Valid())
				}
				cl := f.claims(tok.AccessToken)
				if cl.Subject != c.reg.ID || cl.ClientID != c.reg.ID || cl.Scope != "read" || !slices.Equal(cl.Audience, []string{tkAPI2}) ||
					cl.Issuer != f.env.url || cl.Expiry <= cl.IssuedAt || cl.Cnf != nil {
					t.Errorf("claims %+v", cl)
				}
				jtis = append(jtis, cl.JTI)
			}
			if jtis[0] == jtis[1] {
				t.Error("two tokens share a jti")
			}
			// The same assertion a second time is refused.
			conf := clientcredentials.Config{ClientID: c.reg.ID, TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams,
				EndpointParams: url.Values{"client_assertion_type": {ClientAssertionTypeJWT}, "client_assertion": {f.assertion(c)}}}
			if _, err := conf.Token(ctx); err != nil {
				t.Fatal(err)
			}
			_, err := conf.Token(ctx)
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
				t.Fatalf("replayed assertion: %v", err)
			}
		})

		t.Run("self_signed_tls_client_auth", func(t *testing.T) {
			f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
			c := f.addSelfSignedClient("svc-x-mtls", func(c *Client) {
				c.Profile, c.TLSClientCertificateBoundAccessTokens = ProfileFAPI2, true
			})
			ctx := context.WithValue(context.Background(), oauth2.HTTPClient, f.env.client(*c.cert))
			conf := clientcredentials.Config{ClientID: c.reg.ID, TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams}
			tok, err := conf.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cl := f.claims(tok.AccessToken)
			if cl.Cnf == nil || cl.Cnf.X5TS256 != certThumbprint(c.cert.Leaf) || cl.Cnf.JKT != "" {
				t.Errorf("cnf %+v, want x5t#S256 of the client certificate", cl.Cnf)
			}
			if tok.Type() != "Bearer" {
				t.Errorf("token type %q", tok.Type())
			}
			// Without its certificate the client is refused.
			ctx = context.WithValue(context.Background(), oauth2.HTTPClient, f.env.client())
			if _, err := conf.Token(ctx); err == nil {
				t.Error("token issued without the client certificate")
			}
		})

		t.Run("DPoP with nonces", func(t *testing.T) {
			f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
			c := f.dpopClient("svc-x-dpop")
			signer := f.newSigner()
			base := f.env.client()
			hc := &http.Client{Transport: &dpop.Transport{Base: base.Transport, Signer: signer.Signer}}
			ctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
			conf := clientcredentials.Config{ClientID: c.reg.ID, TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams,
				EndpointParams: url.Values{"client_assertion_type": {ClientAssertionTypeJWT}, "client_assertion": {f.assertion(c)}}}
			// The first request is answered use_dpop_nonce and retried by the
			// transport with the same body: the assertion was not spent.
			tok, err := conf.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tok.Type() != "DPoP" {
				t.Errorf("token type %q", tok.Type())
			}
			if cl := f.claims(tok.AccessToken); cl.Cnf == nil || cl.Cnf.JKT != signer.Thumbprint() {
				t.Errorf("cnf %+v", cl.Cnf)
			}
		})
	})
}
