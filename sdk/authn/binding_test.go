package authn

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
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// newServerTLS asks clients for a certificate without requiring one or
// checking its chain: the verifier checks the binding.
func newServerTLS() *tls.Config {
	return &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
}

// selfSignedCert makes a client certificate.
func selfSignedCert(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// x5t is the cnf value binding a token to cert.
func x5t(cert tls.Certificate) string {
	sum := sha256.Sum256(cert.Leaf.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// customProof signs arbitrary DPoP claims with key.
func customProof(t testing.TB, key ed25519.PrivateKey, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt")
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, opts)
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

func TestDPoPBoundTokens(t *testing.T) {
	iss := newTestIssuer(t)
	rec := &recorder{}
	v := newVerifier(t, iss, rec, nil)
	rs := resourceServer(t, v, nil)
	client := rs.Client()

	_, holderKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := dpop.NewSigner(holderKey)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := dpop.NewSigner(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	tok := iss.token("ed", iss.claims(map[string]any{"cnf": map[string]any{"jkt": holder.Thumbprint()}}))
	unbound := iss.token("ed", iss.claims(nil))
	url := rs.URL + "/accounts"
	proof := func(s *dpop.Signer, method, u, token string) string {
		t.Helper()
		p, err := s.Proof(method, u, "", token)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	replayed := proof(holder, "GET", url, tok)
	now := iss.clock.Now()
	claims := func(iat time.Time) map[string]any {
		return map[string]any{"jti": "j-" + iat.String(), "htm": "GET", "htu": url, "iat": iat.Unix(), "ath": dpop.AccessTokenHash(tok)}
	}

	for _, tc := range []struct {
		name      string
		authz     string
		proofs    []string
		reason    string // "" accepted
		challenge string
	}{
		{name: "valid", authz: "DPoP " + tok, proofs: []string{replayed}},
		{name: "valid, query ignored", authz: "DPoP " + tok, proofs: []string{proof(holder, "GET", url+"?page=1", tok)}},
		{name: "replayed proof", authz: "DPoP " + tok, proofs: []string{replayed}, reason: ReasonDPoPReplay, challenge: `DPoP error="invalid_dpop_proof", algs="EdDSA ES256 PS256"`},
		{name: "bearer use of a DPoP-bound token", authz: "Bearer " + tok, reason: ReasonDPoPRequired, challenge: `DPoP error="invalid_token", algs="EdDSA ES256 PS256"`},
		{name: "bearer with a proof", authz: "Bearer " + tok, proofs: []string{proof(holder, "GET", url, tok)}, reason: ReasonDPoPRequired},
		{name: "no proof", authz: "DPoP " + tok, reason: ReasonDPoPRequired},
		{name: "proof from another key", authz: "DPoP " + tok, proofs: []string{proof(other, "GET", url, tok)}, reason: ReasonBindingMismatch, challenge: `DPoP error="invalid_token", algs="EdDSA ES256 PS256"`},
		{name: "wrong htm", authz: "DPoP " + tok, proofs: []string{proof(holder, "POST", url, tok)}, reason: ReasonDPoPInvalid},
		{name: "wrong htu path", authz: "DPoP " + tok, proofs: []string{proof(holder, "GET", rs.URL+"/admin", tok)}, reason: ReasonDPoPInvalid},
		{name: "wrong htu host", authz: "DPoP " + tok, proofs: []string{proof(holder, "GET", "https://api.example.com/accounts", tok)}, reason: ReasonDPoPInvalid},
		{name: "no ath", authz: "DPoP " + tok, proofs: []string{proof(holder, "GET", url, "")}, reason: ReasonDPoPInvalid},
		{name: "ath of another token", authz: "DPoP " + tok, proofs: []string{proof(holder, "GET", url, unbound)}, reason: ReasonDPoPInvalid},
		{name: "iat too old", authz: "DPoP " + tok, proofs: []string{customProof(t, holderKey, claims(now.Add(-2*DefaultDPoPWindow)))}, reason: ReasonDPoPInvalid},
		{name: "iat in the future", authz: "DPoP " + tok, proofs: []string{customProof(t, holderKey, claims(now.Add(2*DefaultDPoPWindow)))}, reason: ReasonDPoPInvalid},
		{name: "iat within the window", authz: "DPoP " + tok, proofs: []string{customProof(t, holderKey, claims(now.Add(-DefaultDPoPWindow/2)))}},
		{name: "two proofs", authz: "DPoP " + tok, proofs: []string{proof(holder, "GET", url, tok), proof(holder, "GET", url, tok)}, reason: ReasonDPoPInvalid},
		{name: "garbage proof", authz: "DPoP " + tok, proofs: []string{"a.b.c"}, reason: ReasonDPoPInvalid},
		{name: "DPoP scheme with an unbound token", authz: "DPoP " + unbound, proofs: []string{proof(holder, "GET", url, unbound)}, reason: ReasonDPoPInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, before := rec.last()
			resp, body := call(t, client, "GET", url, []string{tc.authz}, tc.proofs)
			rf, n := rec.last()
			if tc.reason == "" {
				if resp.StatusCode != http.StatusOK || n != before {
					t.Fatalf("status %d %q, refusal %+v", resp.StatusCode, body, rf)
				}
				return
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d %q, want 401", resp.StatusCode, body)
			}
			if n != before+1 || rf.Reason != tc.reason {
				t.Fatalf("refusal %+v (%d new), want %s", rf, n-before, tc.reason)
			}
			if rf.JTI == "" || rf.ClientID != "cli_web" {
				t.Errorf("refusal does not name the token: %+v", rf)
			}
			if tc.challenge != "" && resp.Header.Get("WWW-Authenticate") != tc.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", resp.Header.Get("WWW-Authenticate"), tc.challenge)
			}
		})
	}

	if _, err := v.VerifyToken(t.Context(), tok); err == nil || err.(*Error).Reason != ReasonDPoPRequired {
		t.Errorf("VerifyToken of a DPoP-bound token: %v", err)
	}
}

func TestDPoPPublicURL(t *testing.T) {
	iss := newTestIssuer(t)
	v := newVerifier(t, iss, nil, func(c *Config) {
		c.PublicURL = func(r *http.Request) string { return "https://api.example.com/public" + r.URL.Path }
	})
	rs := resourceServer(t, v, nil)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	s, err := dpop.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	tok := iss.token("ed", iss.claims(map[string]any{"cnf": map[string]any{"jkt": s.Thumbprint()}}))
	for _, tc := range []struct {
		htu    string
		status int
	}{
		{"https://api.example.com/public/accounts", http.StatusOK},
		{rs.URL + "/accounts", http.StatusUnauthorized},
	} {
		p, err := s.Proof("GET", tc.htu, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		if resp, body := call(t, rs.Client(), "GET", rs.URL+"/accounts", []string{"DPoP " + tok}, []string{p}); resp.StatusCode != tc.status {
			t.Errorf("htu %s: status %d %q, want %d", tc.htu, resp.StatusCode, body, tc.status)
		}
	}
}

func TestCertificateBoundTokens(t *testing.T) {
	iss := newTestIssuer(t)
	rec := &recorder{}
	v := newVerifier(t, iss, rec, nil)
	rs := resourceServer(t, v, nil)
	certA, certB := selfSignedCert(t, "client-a"), selfSignedCert(t, "client-b")
	tok := iss.token("ed", iss.claims(map[string]any{"cnf": map[string]any{"x5t#S256": x5t(certA)}}))
	clientWith := func(certs ...tls.Certificate) *http.Client {
		c := rs.Client()
		tr := c.Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = certs
		return &http.Client{Transport: tr}
	}
	for _, tc := range []struct {
		name   string
		client *http.Client
		authz  string
		reason string
	}{
		{"the bound certificate", clientWith(certA), "Bearer " + tok, ""},
		{"no certificate", clientWith(), "Bearer " + tok, ReasonCertRequired},
		{"another certificate", clientWith(certB), "Bearer " + tok, ReasonBindingMismatch},
		{"DPoP scheme", clientWith(certA), "DPoP " + tok, ReasonDPoPInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, before := rec.last()
			resp, body := call(t, tc.client, "GET", rs.URL+"/accounts", []string{tc.authz}, nil)
			rf, n := rec.last()
			if tc.reason == "" {
				if resp.StatusCode != http.StatusOK || n != before {
					t.Fatalf("status %d %q, refusal %+v", resp.StatusCode, body, rf)
				}
				return
			}
			if resp.StatusCode != http.StatusUnauthorized || n != before+1 || rf.Reason != tc.reason {
				t.Fatalf("status %d, refusal %+v, want 401 %s", resp.StatusCode, rf, tc.reason)
			}
			if !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_") {
				t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	if _, err := v.VerifyToken(t.Context(), tok); err == nil || err.(*Error).Reason != ReasonCertRequired {
		t.Errorf("VerifyToken of a certificate-bound token: %v", err)
	}
}
