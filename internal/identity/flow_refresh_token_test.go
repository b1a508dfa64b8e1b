package identity

import (
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"slices"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// refreshForm is the form of a refresh request.
func refreshForm(token string, extra ...string) url.Values {
	form := url.Values{"grant_type": {GrantRefreshToken}, "refresh_token": {token}}
	for i := 0; i+1 < len(extra); i += 2 {
		form.Set(extra[i], extra[i+1])
	}
	return form
}

func TestRefreshRotationAndReuseDetection(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		pub := f.addPublicClient("app-spa", nil)
		u := f.addUser("dave")
		key := f.newSigner()
		k := f.newCode(pub, u, func(d *codeData) { d.DPoPJKT = key.Thumbprint(); d.Scopes = []string{"read", "write"} })
		first := f.mustToken(tokReq{client: pub, form: k.redeem(), signer: key})
		rt1 := first.str("refresh_token")

		// Every use rotates: a new refresh token, the old one spent.
		second := f.mustToken(tokReq{client: pub, form: refreshForm(rt1), signer: key})
		rt2 := second.str("refresh_token")
		if rt2 == "" || rt2 == rt1 {
			t.Fatalf("refresh not rotated: %v", second.body)
		}
		if second.str("token_type") != "DPoP" {
			t.Errorf("token_type %q", second.str("token_type"))
		}
		// Narrowing is allowed and the next token still has the whole grant.
		third := f.mustToken(tokReq{client: pub, form: refreshForm(rt2, "scope", "read"), signer: key})
		if third.str("scope") != "read" {
			t.Errorf("narrowed scope %q", third.str("scope"))
		}
		rt3 := third.str("refresh_token")
		// A public client's refresh token is bound to its DPoP key.
		f.wantError(f.post(tokReq{client: pub, form: refreshForm(rt3), signer: f.newSigner()}), "invalid_grant")
		f.wantError(f.post(tokReq{client: pub, form: refreshForm(rt3)}), "invalid_grant")
		// Widening is refused.
		f.wantError(f.post(tokReq{client: pub, form: refreshForm(rt3, "scope", "read admin"), signer: key}), "invalid_scope")
		f.wantError(f.post(tokReq{client: pub, form: refreshForm(rt3, "resource", tkAPI2), signer: key}), "invalid_target")

		// Presenting a rotated token revokes the whole family.
		jtis := []string{f.claims(first.str("access_token")).JTI, f.claims(second.str("access_token")).JTI, f.claims(third.str("access_token")).JTI}
		f.wantError(f.post(tokReq{client: pub, form: refreshForm(rt1), signer: key}), "invalid_grant")
		for _, jti := range jtis {
			if !f.revoked(jti) {
				t.Errorf("access token %s not revoked after refresh-token reuse", jti)
			}
		}
		f.wantError(f.post(tokReq{client: pub, form: refreshForm(rt3), signer: key}), "invalid_grant")
		if got := f.env.countEvents(classAuthentication, actServiceTicketRenew, audit.StatusSuccess); got != 2 {
			t.Errorf("%d refreshes audited, want 2", got)
		}
		var reuse int
		for _, e := range f.env.auditEvents() {
			if e.ActivityID == actServiceTicketRenew && e.StatusID == audit.StatusFailure && e.Unmapped["replay"] == "refresh token reuse" {
				reuse++
			}
		}
		if reuse != 1 {
			t.Errorf("%d refresh-token reuses audited", reuse)
		}
		f.noSecretsInAudit(rt1, rt2, rt3)
	})
}

func TestRefreshFAPINotRotatedAndBound(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		c := f.codeClient("app-fapi")
		other := f.codeClient("app-fapi-2")
		u := f.addUser("erin")
		key := f.newSigner()
		k := f.newCode(c, u, func(d *codeData) { d.DPoPJKT = key.Thumbprint(); d.Audiences = []string{tkAPI1, tkAPI2} })
		first := f.mustToken(tokReq{client: c, form: k.redeem(), signer: key})
		rt := first.str("refresh_token")
		if got := f.claims(first.str("access_token")).Audience; !slices.Equal(got, []string{tkAPI1, tkAPI2}) {
			t.Errorf("aud %v", got)
		}

		for range 2 {
			resp := f.mustToken(tokReq{client: c, form: refreshForm(rt), signer: key})
			if resp.str("refresh_token") != "" {
				t.Errorf("a FAPI client's refresh token was rotated: %v", resp.body)
			}
			if resp.str("id_token") == "" {
				t.Error("no ID token on refresh of an openid grant")
			}
		}
		narrowed := f.mustToken(tokReq{client: c, form: refreshForm(rt, "scope", "read", "resource", tkAPI2), signer: key})
		if cl := f.claims(narrowed.str("access_token")); cl.Scope != "read" || !slices.Equal(cl.Audience, []string{tkAPI2}) {
			t.Errorf("narrowed token %+v", cl)
		}
		for _, tc := range []struct {
			name string
			req  tokReq
			code string
		}{
			{"another DPoP key", tokReq{client: c, form: refreshForm(rt), signer: f.newSigner()}, "invalid_grant"},
			{"no DPoP proof", tokReq{client: c, form: refreshForm(rt)}, "invalid_dpop_proof"},
			{"another client", tokReq{client: other, form: refreshForm(rt), signer: key}, "invalid_grant"},
			{"unknown token", tokReq{client: c, form: refreshForm(newSecret()), signer: key}, "invalid_grant"},
			{"no token", tokReq{client: c, form: url.Values{"grant_type": {GrantRefreshToken}}, signer: key}, "invalid_request"},
			{"wider scope", tokReq{client: c, form: refreshForm(rt, "scope", "read write"), signer: key}, "invalid_scope"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := &tokFixture{t: t, env: f.env, ctx: f.ctx}
				f.wantError(f.post(tc.req), tc.code)
			})
		}
		// Still usable: refusals do not spend it.
		f.mustToken(tokReq{client: c, form: refreshForm(rt), signer: key})

		// Expired.
		f.env.clock.Advance(f.env.srv.cfg.RefreshTokenTTL)
		f.wantError(f.post(tokReq{client: c, form: refreshForm(rt), signer: key}), "invalid_grant")
	})
}

func TestRefreshCertificateBound(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		c := f.addSelfSignedClient("app-mtls", func(c *Client) {
			c.Profile, c.TLSClientCertificateBoundAccessTokens = ProfileFAPI2, true
			c.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken}
			c.RedirectURIs = []string{tkRedirect}
		})
		u := f.addUser("frank")
		first := f.mustToken(tokReq{client: c, form: f.newCode(c, u, nil).redeem()})
		rt := first.str("refresh_token")
		resp := f.mustToken(tokReq{client: c, form: refreshForm(rt)})
		if cl := f.claims(resp.str("access_token")); cl.Cnf == nil || cl.Cnf.X5TS256 != certThumbprint(c.cert.Leaf) {
			t.Errorf("cnf %+v", cl.Cnf)
		}
		// The same client re-registered with a new certificate cannot use
		// the refresh token bound to the old one.
		newCert := tkSelfSigned(t, "app-mtls")
		c.reg.JWKS = &jose.JSONWebKeySet{Keys: append(slices.Clone(c.reg.JWKS.Keys),
			jose.JSONWebKey{Key: newCert.Leaf.PublicKey, Certificates: []*x509.Certificate{newCert.Leaf}, Use: "sig"})}
		if err := f.env.srv.clients.update(f.ctx, c.reg); err != nil {
			t.Fatal(err)
		}
		f.wantError(f.post(tokReq{form: refreshForm(rt, "client_id", c.reg.ID), certs: []tls.Certificate{newCert}}), "invalid_grant")
	})
}
