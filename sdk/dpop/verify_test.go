package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"
)

const (
	testMethod = "POST"
	testURL    = "https://api.example.com/v1/payments"
	testToken  = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
)

func TestVerifyAcceptsSignerProofs(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"EdDSA", "ES256", "PS256"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			key := testKeys()[alg]
			s, err := NewSigner(key)
			if err != nil {
				t.Fatal(err)
			}
			if s.Algorithm() != alg {
				t.Fatalf("Algorithm() = %s, want %s", s.Algorithm(), alg)
			}
			s.now = func() time.Time { return testNow }
			proof, err := s.Proof(testMethod, testURL+"?page=2#frag", "n-1", testToken)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Verify(proof, VerifyOptions{Method: testMethod, URL: testURL, Now: testNow.Add(30 * time.Second), AccessToken: testToken})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want, err := Thumbprint(key.Public())
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case p.Thumbprint != want || p.Thumbprint != s.Thumbprint():
				t.Errorf("thumbprint = %q, want %q", p.Thumbprint, want)
			case p.Nonce != "n-1":
				t.Errorf("nonce = %q", p.Nonce)
			case p.HTM != testMethod || p.HTU != testURL:
				t.Errorf("htm/htu = %q %q", p.HTM, p.HTU)
			case !p.IssuedAt.Equal(testNow):
				t.Errorf("iat = %v", p.IssuedAt)
			case p.ATH != AccessTokenHash(testToken):
				t.Errorf("ath = %q", p.ATH)
			case len(p.JTI) < 16:
				t.Errorf("jti = %q", p.JTI)
			}
			if pk, ok := p.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(key.Public()) {
				t.Errorf("public key %T is not the signer's", p.PublicKey)
			}
		})
	}
}

func TestVerifyNormalizesURLs(t *testing.T) {
	t.Parallel()
	key := testKeys()["EdDSA"]
	hdr := `{"typ":"dpop+jwt","alg":"EdDSA","jwk":` + jwkJSON(t, key.Public()) + `}`
	for _, tc := range []struct{ name, htu, request string }{
		{"case and default port", "HTTPS://API.Example.COM:443/v1/payments", testURL},
		{"query and fragment ignored", testURL + "?a=1#x", testURL + "?b=2"},
		{"unreserved escape", "https://api.example.com/v1/%7Euser", "https://api.example.com/v1/~user"},
		{"lower-case escape", "https://api.example.com/v1/a%2fb", "https://api.example.com/v1/a%2Fb"},
		{"empty path", "https://api.example.com", "https://api.example.com/"},
		{"http default port", "http://localhost:80/x", "http://localhost/x"},
		{"ipv6", "https://[::1]:443/x", "https://[::1]/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			claims := claimsJSON(t, map[string]any{"jti": "j1", "htm": "GET", "htu": tc.htu, "iat": testNow.Unix()})
			proof := rawProof(hdr, claims, signWith(t, "EdDSA", key))
			if _, err := Verify(proof, VerifyOptions{Method: "GET", URL: tc.request, Now: testNow}); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	ed, ec, rs := keys["EdDSA"], keys["ES256"], keys["PS256"]
	edJWK, ecJWK, rsJWK := jwkJSON(t, ed.Public()), jwkJSON(t, ec.Public()), jwkJSON(t, rs.Public())
	edHdr := `{"typ":"dpop+jwt","alg":"EdDSA","jwk":` + edJWK + `}`
	good := map[string]any{"jti": "j1", "htm": testMethod, "htu": testURL, "iat": testNow.Unix(), "ath": AccessTokenHash(testToken)}
	with := func(k string, v any) string {
		m := map[string]any{}
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return claimsJSON(t, m)
	}
	goodClaims := with("jti", "j1")
	edSign := signWith(t, "EdDSA", ed)
	privJWK := strings.TrimSuffix(jwkJSON(t, ed.Public()), "}") + `,"d":"` + b64(string(ed.(ed25519.PrivateKey).Seed())) + `"}`
	rsPub := rs.Public().(*rsa.PublicKey)
	hsSecret := append([]byte(nil), rsPub.N.Bytes()...)
	small := keys["RSA1024"]

	for _, tc := range []struct {
		name  string
		want  string // in the error
		proof string
		opts  func(*VerifyOptions)
	}{
		{name: "empty", want: "empty", proof: ""},
		{name: "oversized", want: "too large", proof: rawProof(edHdr, with("pad", strings.Repeat("a", MaxProofSize)), edSign)},
		{name: "two segments", want: "compact", proof: b64(edHdr) + "." + b64(goodClaims)},
		{name: "four segments", want: "compact", proof: rawProof(edHdr, goodClaims, edSign) + ".x"},
		{name: "whitespace", want: "outside base64url", proof: " " + rawProof(edHdr, goodClaims, edSign)},
		{name: "JSON serialization", want: "compact", proof: `{"payload":"` + b64(goodClaims) + `","protected":"` + b64(edHdr) + `","signature":"AA"}`},
		{name: "alg none", want: "algorithm is not allowed", proof: rawProof(`{"typ":"dpop+jwt","alg":"none","jwk":`+edJWK+`}`, goodClaims, nil)},
		{name: "HS256 keyed with the public key", want: "algorithm is not allowed", proof: rawProof(`{"typ":"dpop+jwt","alg":"HS256","jwk":`+rsJWK+`}`, goodClaims, hmacWith(hsSecret))},
		{name: "HS256 with an oct jwk", want: "algorithm is not allowed", proof: rawProof(`{"typ":"dpop+jwt","alg":"HS256","jwk":{"kty":"oct","k":"`+b64("0123456789abcdef0123456789abcdef")+`"}}`, goodClaims, hmacWith([]byte("0123456789abcdef0123456789abcdef")))},
		{name: "RS256 not in the allow-list", want: "algorithm is not allowed", proof: rawProof(`{"typ":"dpop+jwt","alg":"RS256","jwk":`+rsJWK+`}`, goodClaims, signWith(t, "RS256", rs))},
		{name: "typ JWT", want: "typ", proof: rawProof(`{"typ":"JWT","alg":"EdDSA","jwk":`+edJWK+`}`, goodClaims, edSign)},
		{name: "typ missing", want: "typ", proof: rawProof(`{"alg":"EdDSA","jwk":`+edJWK+`}`, goodClaims, edSign)},
		{name: "jwk missing", want: "jwk header is missing", proof: rawProof(`{"typ":"dpop+jwt","alg":"EdDSA"}`, goodClaims, edSign)},
		{name: "jwk with the private key", want: "malformed", proof: rawProof(`{"typ":"dpop+jwt","alg":"EdDSA","jwk":`+privJWK+`}`, goodClaims, edSign)},
		{name: "jwk of another type than alg", want: "does not fit", proof: rawProof(`{"typ":"dpop+jwt","alg":"ES256","jwk":`+edJWK+`}`, goodClaims, signWith(t, "ES256", ec))},
		{name: "jwk alg differs", want: "does not fit", proof: rawProof(`{"typ":"dpop+jwt","alg":"EdDSA","jwk":`+strings.TrimSuffix(edJWK, "}")+`,"alg":"ES256"}}`, goodClaims, edSign)},
		{name: "RSA key under 2048 bits", want: "does not fit", proof: rawProof(`{"typ":"dpop+jwt","alg":"PS256","jwk":`+jwkJSON(t, small.Public())+`}`, goodClaims, signWith(t, "PS256", small))},
		{name: "ECDSA r=s=0", want: "signature", proof: rawProof(`{"typ":"dpop+jwt","alg":"ES256","jwk":`+ecJWK+`}`, goodClaims, zeroSig)},
		{name: "jku header", want: "jku", proof: rawProof(`{"typ":"dpop+jwt","alg":"EdDSA","jku":"https://evil.example/jwks","jwk":`+edJWK+`}`, goodClaims, edSign)},
		{name: "x5u header", want: "x5u", proof: rawProof(`{"typ":"dpop+jwt","alg":"EdDSA","x5u":"https://evil.example/cert","jwk":`+edJWK+`}`, goodClaims, edSign)},
		{name: "x5c header", want: "x5c", proof: rawProof(`{"typ":"dpop+jwt","alg":"EdDSA","x5c":[],"jwk":`+edJWK+`}`, goodClaims, edSign)},
		{name: "crit header", want: "crit", proof: rawProof(`{"typ":"dpop+jwt","alg":"EdDSA","crit":["exp"],"exp":1,"jwk":`+edJWK+`}`, goodClaims, edSign)},
		{name: "b64 header", want: "b64", proof: rawProof(`{"typ":"dpop+jwt","alg":"EdDSA","b64":false,"crit":["b64"],"jwk":`+edJWK+`}`, goodClaims, edSign)},
		{name: "repeated alg", want: "repeats", proof: rawProof(`{"typ":"dpop+jwt","alg":"none","alg":"EdDSA","jwk":`+edJWK+`}`, goodClaims, edSign)},
		{name: "header not an object", want: "not a JSON object", proof: rawProof(`["typ"]`, goodClaims, edSign)},
		{name: "signed by another key", want: "signature", proof: rawProof(edHdr, goodClaims, signWith(t, "EdDSA", keys["other"]))},
		{name: "signature stripped", want: "signature", proof: rawProof(edHdr, goodClaims, nil)},
		{name: "claims not JSON", want: "claims", proof: rawProof(edHdr, "not json", edSign)},
		{name: "jti missing", want: "jti is missing", proof: rawProof(edHdr, with("jti", nil), edSign)},
		{name: "jti too long", want: "jti is too long", proof: rawProof(edHdr, with("jti", strings.Repeat("j", MaxJTILength+1)), edSign)},
		{name: "htm missing", want: "htm is missing", proof: rawProof(edHdr, with("htm", nil), edSign)},
		{name: "htm differs", want: "htm does not match", proof: rawProof(edHdr, with("htm", "GET"), edSign)},
		{name: "htm lower case", want: "htm does not match", proof: rawProof(edHdr, with("htm", "post"), edSign)},
		{name: "htu missing", want: "htu is missing", proof: rawProof(edHdr, with("htu", nil), edSign)},
		{name: "htu other host", want: "htu does not", proof: rawProof(edHdr, with("htu", "https://evil.example.com/v1/payments"), edSign)},
		{name: "htu other path", want: "htu does not", proof: rawProof(edHdr, with("htu", "https://api.example.com/v1/payment"), edSign)},
		{name: "htu other scheme", want: "htu does not", proof: rawProof(edHdr, with("htu", "http://api.example.com/v1/payments"), edSign)},
		{name: "htu other port", want: "htu does not", proof: rawProof(edHdr, with("htu", "https://api.example.com:8443/v1/payments"), edSign)},
		{name: "htu relative", want: "htu does not", proof: rawProof(edHdr, with("htu", "/v1/payments"), edSign)},
		{name: "htu not a string", want: "claims", proof: rawProof(edHdr, with("htu", 7), edSign)},
		{name: "iat missing", want: "iat is missing", proof: rawProof(edHdr, with("iat", nil), edSign)},
		{name: "iat a string", want: "claims", proof: rawProof(edHdr, with("iat", "1760000000"), edSign)},
		{name: "iat negative", want: "iat is not a valid time", proof: rawProof(edHdr, with("iat", -1), edSign)},
		{name: "iat too old", want: "window", proof: rawProof(edHdr, with("iat", testNow.Add(-DefaultWindow-time.Second).Unix()), edSign)},
		{name: "iat in the future", want: "window", proof: rawProof(edHdr, with("iat", testNow.Add(DefaultWindow+time.Second).Unix()), edSign)},
		{name: "iat outside a narrow window", want: "window", proof: rawProof(edHdr, with("iat", testNow.Add(-6*time.Second).Unix()), edSign),
			opts: func(o *VerifyOptions) { o.Window = 5 * time.Second }},
		{name: "ath missing", want: "ath is missing", proof: rawProof(edHdr, with("ath", nil), edSign)},
		{name: "ath of another token", want: "ath does not match", proof: rawProof(edHdr, with("ath", AccessTokenHash("other")), edSign)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := VerifyOptions{Method: testMethod, URL: testURL, Now: testNow, AccessToken: testToken}
			if tc.opts != nil {
				tc.opts(&opts)
			}
			p, err := Verify(tc.proof, opts)
			if err == nil {
				t.Fatalf("Verify accepted the proof: %+v", p)
			}
			if !errors.Is(err, ErrInvalidProof) {
				t.Fatalf("error %v does not wrap ErrInvalidProof", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}

	// Sanity: the good claims with the good header do verify, so every
	// refusal above is for the one thing the case changed.
	if _, err := Verify(rawProof(edHdr, goodClaims, edSign), VerifyOptions{Method: testMethod, URL: testURL, Now: testNow, AccessToken: testToken}); err != nil {
		t.Fatalf("baseline proof refused: %v", err)
	}
	if _, err := Verify(rawProof(`{"typ":"dpop+jwt","alg":"ES256","jwk":`+ecJWK+`}`, goodClaims, signWith(t, "ES256", ec)), VerifyOptions{Method: testMethod, URL: testURL, Now: testNow, AccessToken: testToken}); err != nil {
		t.Fatalf("baseline ES256 proof refused: %v", err)
	}
	if _, err := Verify(rawProof(`{"typ":"dpop+jwt","alg":"RS256","jwk":`+rsJWK+`}`, goodClaims, signWith(t, "RS256", rs)), VerifyOptions{Method: testMethod, URL: testURL, Now: testNow, AccessToken: testToken, Algorithms: []string{"RS256"}}); err != nil {
		t.Fatalf("RS256 proof refused although allowed: %v", err)
	}
}

func TestVerifyOptionErrors(t *testing.T) {
	t.Parallel()
	s, err := NewSigner(testKeys()["EdDSA"])
	if err != nil {
		t.Fatal(err)
	}
	proof, err := s.Proof("GET", testURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts VerifyOptions
	}{
		{"alg none", VerifyOptions{Method: "GET", URL: testURL, Algorithms: []string{"EdDSA", "none"}}},
		{"HS256", VerifyOptions{Method: "GET", URL: testURL, Algorithms: []string{"HS256"}}},
		{"no method", VerifyOptions{URL: testURL}},
		{"no URL", VerifyOptions{Method: "GET"}},
		{"relative URL", VerifyOptions{Method: "GET", URL: "/v1/payments"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Verify(proof, tc.opts); err == nil {
				t.Fatal("Verify accepted bad options")
			}
		})
	}
}

func TestNewSignerRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		key  func() any
	}{
		{"nil", func() any { return nil }},
		{"P-384", func() any { return testKeys()["ES384"] }},
		{"RSA 1024", func() any { return testKeys()["RSA1024"] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var err error
			switch k := tc.key().(type) {
			case *ecdsa.PrivateKey:
				_, err = NewSigner(k)
			case *rsa.PrivateKey:
				_, err = NewSigner(k)
			default:
				_, err = NewSigner(nil)
			}
			if err == nil {
				t.Fatal("NewSigner accepted the key")
			}
		})
	}
}

func TestSignerProofRefusesBadInput(t *testing.T) {
	t.Parallel()
	s, err := NewSigner(testKeys()["EdDSA"])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, method, url string }{
		{"no method", "", testURL},
		{"relative URL", "GET", "/x"},
		{"ftp URL", "GET", "ftp://example.com/x"},
	} {
		if _, err := s.Proof(tc.method, tc.url, "", ""); err == nil {
			t.Errorf("%s: Proof accepted bad input", tc.name)
		}
	}
}

// hidden hides a private key's concrete type, as a hardware key would.
type hidden struct{ crypto.Signer }

func TestSignerWithOpaqueKeys(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{"EdDSA", "ES256", "PS256"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			s, err := NewSigner(hidden{testKeys()[alg]})
			if err != nil {
				t.Fatal(err)
			}
			proof, err := s.Proof("GET", testURL, "", "")
			if err != nil {
				t.Fatal(err)
			}
			p, err := Verify(proof, VerifyOptions{Method: "GET", URL: testURL})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if p.Thumbprint != s.Thumbprint() {
				t.Fatalf("thumbprint %s, want %s", p.Thumbprint, s.Thumbprint())
			}
		})
	}
}
