package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// selfSignedCert returns a client certificate and its cnf x5t#S256.
func selfSignedCert(t *testing.T, cn string) (tls.Certificate, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, base64.RawURLEncoding.EncodeToString(sum[:])
}

func newDPoPSigner(t *testing.T) *dpop.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := dpop.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestUserInfo(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		f := newMgmtFixture(t, db)
		f.addClient("app", false)
		f.addUser("usr_alice", "alice", "alice@example.test", "Alice Liddell")
		f.addUser("usr_bob", "bob", "bob@example.test", "Bob")
		f.exec("UPDATE identity_users SET disabled_at = 1 WHERE user_id = 'usr_bob'")
		endpoint := f.env.url + PathUserInfo

		key, otherKey := newDPoPSigner(t), newDPoPSigner(t)
		cert, certX5T := selfSignedCert(t, "app")
		otherCert, _ := selfSignedCert(t, "other")

		full, _ := f.mint("app", map[string]any{"scope": "openid profile email"})
		openidOnly, _ := f.mint("app", nil)
		noOpenID, _ := f.mint("app", map[string]any{"scope": "read"})
		expired, _ := f.mint("app", map[string]any{"exp": f.env.clock.Now().Add(-time.Second).Unix()})
		revoked, revokedJTI := f.mint("app", nil)
		if err := f.env.srv.revokeAccessToken(f.ctx, revokedJTI, f.env.clock.Now().Add(time.Hour), "test"); err != nil {
			t.Fatal(err)
		}
		serviceToken, _ := f.mint("app", map[string]any{"sub": "app", "auth_time": nil})
		disabledUser, _ := f.mint("app", map[string]any{"sub": "usr_bob"})
		unknownClient, _ := f.mint("gone", nil)
		dpopBound, _ := f.mint("app", map[string]any{"scope": "openid email", "cnf": map[string]any{"jkt": key.Thumbprint()}})
		mtlsBound, _ := f.mint("app", map[string]any{"cnf": map[string]any{"x5t#S256": certX5T}})

		proof := func(s *dpop.Signer, method, token string) string {
			p, err := s.Proof(method, endpoint, "", token)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		replayed := proof(key, http.MethodGet, dpopBound)

		cases := []struct {
			name      string
			method    string
			authz     string
			dpop      string
			cert      *tls.Certificate
			status    int
			want      map[string]any // the claims, or the error code
			challenge string         // a substring of WWW-Authenticate
		}{
			{name: "bearer with profile and email", authz: "Bearer " + full, status: 200,
				want: map[string]any{"sub": "usr_alice", "name": "Alice Liddell", "preferred_username": "alice", "email": "alice@example.test"}},
			{name: "openid only", authz: "Bearer " + openidOnly, status: 200, want: map[string]any{"sub": "usr_alice"}},
			{name: "POST", method: http.MethodPost, authz: "bearer " + openidOnly, status: 200, want: map[string]any{"sub": "usr_alice"}},
			{name: "no token", status: 401, challenge: `Bearer`},
			{name: "unknown scheme", authz: "Basic YTpi", status: 401, challenge: `DPoP algs=`},
			{name: "two tokens", authz: "Bearer a b", status: 400, want: map[string]any{"error": "invalid_request"}},
			{name: "without openid", authz: "Bearer " + noOpenID, status: 403,
				want: map[string]any{"error": "insufficient_scope"}, challenge: `scope="openid"`},
			{name: "expired", authz: "Bearer " + expired, status: 401, want: map[string]any{"error": "invalid_token"}, challenge: `error="invalid_token"`},
			{name: "revoked", authz: "Bearer " + revoked, status: 401, want: map[string]any{"error": "invalid_token"}},
			{name: "not a token of ours", authz: "Bearer eyJhbGciOiJFZERTQSJ9.e30.AAAA", status: 401, want: map[string]any{"error": "invalid_token"}},
			{name: "service token without a user", authz: "Bearer " + serviceToken, status: 401, want: map[string]any{"error": "invalid_token"}},
			{name: "disabled user", authz: "Bearer " + disabledUser, status: 401, want: map[string]any{"error": "invalid_token"}},
			{name: "unknown client", authz: "Bearer " + unknownClient, status: 401, want: map[string]any{"error": "invalid_token"}},
			{name: "DPoP-bound with proof", authz: "DPoP " + dpopBound, dpop: replayed, status: 200,
				want: map[string]any{"sub": "usr_alice", "email": "alice@example.test"}},
			{name: "DPoP-bound, POST proof", method: http.MethodPost, authz: "DPoP " + dpopBound, dpop: proof(key, http.MethodPost, dpopBound), status: 200,
				want: map[string]any{"sub": "usr_alice", "email": "alice@example.test"}},
			{name: "DPoP proof replayed", authz: "DPoP " + dpopBound, dpop: replayed, status: 401,
				want: map[string]any{"error": "invalid_dpop_proof"}, challenge: `DPoP`},
			{name: "DPoP-bound as bearer", authz: "Bearer " + dpopBound, status: 401, want: map[string]any{"error": "invalid_token"}, challenge: "DPoP"},
			{name: "DPoP-bound without proof", authz: "DPoP " + dpopBound, status: 401, want: map[string]any{"error": "invalid_token"}},
			{name: "DPoP proof of another key", authz: "DPoP " + dpopBound, dpop: proof(otherKey, http.MethodGet, dpopBound), status: 401,
				want: map[string]any{"error": "invalid_token"}},
			{name: "DPoP proof for another token", authz: "DPoP " + dpopBound, dpop: proof(key, http.MethodGet, full), status: 401,
				want: map[string]any{"error": "invalid_dpop_proof"}},
			{name: "DPoP proof with the wrong method", authz: "DPoP " + dpopBound, dpop: proof(key, http.MethodPost, dpopBound), status: 401,
				want: map[string]any{"error": "invalid_dpop_proof"}},
			{name: "bearer token with the DPoP scheme", authz: "DPoP " + openidOnly, dpop: proof(key, http.MethodGet, openidOnly), status: 401,
				want: map[string]any{"error": "invalid_token"}},
			{name: "mTLS-bound with its certificate", authz: "Bearer " + mtlsBound, cert: &cert, status: 200, want: map[string]any{"sub": "usr_alice"}},
			{name: "mTLS-bound with another certificate", authz: "Bearer " + mtlsBound, cert: &otherCert, status: 401,
				want: map[string]any{"error": "invalid_token"}},
			{name: "mTLS-bound without a certificate", authz: "Bearer " + mtlsBound, status: 401, want: map[string]any{"error": "invalid_token"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				method := tc.method
				if method == "" {
					method = http.MethodGet
				}
				req, err := http.NewRequest(method, endpoint, nil)
				if err != nil {
					t.Fatal(err)
				}
				if tc.authz != "" {
					req.Header.Set("Authorization", tc.authz)
				}
				if tc.dpop != "" {
					req.Header.Set("DPoP", tc.dpop)
				}
				var certs []tls.Certificate
				if tc.cert != nil {
					certs = append(certs, *tc.cert)
				}
				resp, err := f.env.client(certs...).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d (%s), want %d; WWW-Authenticate %q", resp.StatusCode, body, tc.status, resp.Header.Values("WWW-Authenticate"))
				}
				if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q", cc)
				}
				challenges := strings.Join(resp.Header.Values("WWW-Authenticate"), "; ")
				if tc.status != 200 && !strings.Contains(challenges, tc.challenge) {
					t.Errorf("WWW-Authenticate %q lacks %q", challenges, tc.challenge)
				}
				if tc.want == nil {
					return
				}
				var got map[string]any
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("%v: %s", err, body)
				}
				for k, v := range tc.want {
					if got[k] != v {
						t.Errorf("%s = %v, want %v (%s)", k, got[k], v, body)
					}
				}
				if tc.status == 200 && len(got) != len(tc.want) {
					t.Errorf("claims %v, want exactly %v", got, tc.want)
				}
			})
		}
	})
}
