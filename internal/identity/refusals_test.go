package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
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
	"github.com/bulwarksec/bulwark/sdk/authn"
)

// TestResourceServerRefusalsAreAudited attacks a service protected by
// sdk/authn, verifying tokens of a real identity server, and checks that
// each refused request is refused and lands in the audit log with its
// reason — and that a revoked token is refused within 5 seconds.
func TestResourceServerRefusalsAreAudited(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newTokFixture(t, db)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		client := f.addKeyClient("svc-caller", nil)
		other := f.addKeyClient("svc-other", nil)

		v, err := authn.New(ctx, authn.Config{
			Issuer: f.env.url, Audience: tkAPI1, HTTPClient: f.env.client(),
			RevocationWait: 2 * time.Second,
			OnRefusal:      AuditRefusals(f.env.audit, nil),
			Logger:         slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		api := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, _ := authn.FromContext(r.Context())
			w.Write([]byte(p.Subject))
		})))
		defer api.Close()
		call := func(authz string) int {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, api.URL+"/accounts", nil)
			if authz != "" {
				req.Header.Set("Authorization", authz)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		token := func(c *tokClient, resource string) string {
			t.Helper()
			return f.mustToken(tokReq{client: c, form: url.Values{"grant_type": {GrantClientCredentials}, "resource": {resource}}}).str("access_token")
		}
		good := token(client, tkAPI1)
		if code := call("Bearer " + good); code != http.StatusOK {
			t.Fatalf("valid token: %d", code)
		}

		parts := strings.Split(good, ".")
		b64 := func(v any) string {
			raw, _ := json.Marshal(v)
			return base64.RawURLEncoding.EncodeToString(raw)
		}
		var hdr map[string]any
		raw, _ := base64.RawURLEncoding.DecodeString(parts[0])
		json.Unmarshal(raw, &hdr)
		_, attackerKey, _ := ed25519.GenerateKey(rand.Reader)
		embedded, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: attackerKey},
			(&jose.SignerOptions{EmbedJWK: true}).WithType("at+jwt"))
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		forged, _ := embedded.Sign(payload)
		forgedJWK, _ := forged.CompactSerialize()

		attacks := []struct {
			name, authz, reason string
		}{
			{"no token", "", authn.ReasonMissingToken},
			{"alg none", "Bearer " + b64(map[string]any{"alg": "none", "typ": "at+jwt", "kid": hdr["kid"]}) + "." + parts[1] + ".", authn.ReasonAlgNotAllowed},
			{"signature stripped", "Bearer " + parts[0] + "." + parts[1] + ".", authn.ReasonBadSignature},
			{"claims swapped", "Bearer " + parts[0] + "." + b64(map[string]any{"sub": "mallory"}) + "." + parts[2], authn.ReasonBadSignature},
			{"embedded attacker jwk", "Bearer " + forgedJWK, authn.ReasonForbiddenHeader},
			{"token for another audience", "Bearer " + token(other, tkAPI2), authn.ReasonWrongAudience},
		}
		for _, a := range attacks {
			if code := call(a.authz); code != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401", a.name, code)
			}
		}

		// Revocation: the feed reaches the running verifier within 5 s.
		f.mustRevoke(client, good)
		start := time.Now()
		for call("Bearer "+good) == http.StatusOK {
			if time.Since(start) > 5*time.Second {
				t.Fatal("revoked token still accepted after 5 s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("revoked token refused after %v", time.Since(start))

		want := map[string]int{}
		for _, a := range attacks {
			want[a.reason]++
		}
		want[authn.ReasonRevoked] = 1
		got := map[string]int{}
		for _, e := range f.env.auditEvents() {
			if e.ClassUID == classAuthentication && e.ActivityID == actServiceTicket && e.StatusID == audit.StatusFailure && e.Metadata.Product == "bulwark authn" {
				got[e.StatusDetail]++
				if raw, _ := json.Marshal(e); strings.Contains(string(raw), parts[2]) {
					t.Errorf("a refusal event holds the token's signature: %s", raw)
				}
			}
		}
		for reason, n := range want {
			if got[reason] < n {
				t.Errorf("audit has %d %q refusals, want at least %d (all: %v)", got[reason], reason, n, got)
			}
		}
	})
}

// mustRevoke revokes token at the revocation endpoint as client c.
func (f *tokFixture) mustRevoke(c *tokClient, token string) {
	f.t.Helper()
	form := f.creds(c)
	form.Set("token", token)
	resp, err := f.env.client().PostForm(f.env.url+PathRevoke, form)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("revoke: %d", resp.StatusCode)
	}
}
