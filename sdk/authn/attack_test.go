package authn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// resourceServer serves h behind v.Middleware over TLS, asking for (not
// requiring) client certificates.
func resourceServer(t *testing.T, v *Verifier, h http.Handler) *httptest.Server {
	t.Helper()
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := FromContext(r.Context())
			if !ok {
				http.Error(w, "no principal", http.StatusInternalServerError)
				return
			}
			_, _ = io.WriteString(w, "hello "+p.Subject)
		})
	}
	srv := httptest.NewUnstartedServer(v.Middleware(h))
	srv.TLS = newServerTLS()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// call sends GET url with the given Authorization and DPoP values.
func call(t *testing.T, c *http.Client, method, url string, authz, proofs []string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range authz {
		req.Header.Add("Authorization", a)
	}
	for _, p := range proofs {
		req.Header.Add("DPoP", p)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func hmacSign(secret []byte) func([]byte) []byte {
	return func(input []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(input)
		return m.Sum(nil)
	}
}

// TestJWTAttackSuite presents classic JWT attacks to a resource server
// protected by the verifier: each must be refused with 401, reported to
// OnRefusal with the right reason, and never echoed or logged.
func TestJWTAttackSuite(t *testing.T) {
	iss := newTestIssuer(t)
	rec := &recorder{}
	v := newVerifier(t, iss, rec, func(c *Config) { c.JWKSRefresh = time.Hour })
	rs := resourceServer(t, v, nil)
	client := rs.Client()

	_, attacker, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	attackerJWK := jose.JSONWebKey{Key: attacker.Public(), KeyID: "ed", Algorithm: "EdDSA"}
	rsaPub := iss.key("rsa").signer.Public()
	rsaDER, err := x509.MarshalPKIXPublicKey(rsaPub)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER})
	edPub := iss.key("ed").signer.Public().(ed25519.PublicKey)
	attackerCert := selfSignedCert(t, "attacker")

	edSign := signer(t, "EdDSA", iss.key("ed").signer)
	ecSign := signer(t, "ES256", iss.key("ec").signer)
	attackerSign := signer(t, "EdDSA", attacker)
	hdr := func(extra map[string]any) string {
		h := map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": "ed"}
		for k, v := range extra {
			if v == nil {
				delete(h, k)
			} else {
				h[k] = v
			}
		}
		return header(t, h)
	}
	now := iss.clock.Now()
	good := func(over map[string]any) string { return iss.token("ed", iss.claims(over)) }
	goodToken := good(nil)
	parts := strings.Split(goodToken, ".")
	otherParts := strings.Split(good(nil), ".")
	claims := iss.claims(nil)

	for _, tc := range []struct {
		name     string
		token    string
		reason   string
		verified bool // the signature verified: the refusal names the token
	}{
		{name: "alg none", token: rawToken(t, hdr(map[string]any{"alg": "none"}), claims, nil), reason: ReasonAlgNotAllowed},
		{name: "alg none with a signature", token: rawToken(t, hdr(map[string]any{"alg": "none"}), claims, func([]byte) []byte { return []byte("sig") }), reason: ReasonAlgNotAllowed},
		{name: "alg None", token: rawToken(t, hdr(map[string]any{"alg": "None"}), claims, nil), reason: ReasonAlgNotAllowed},
		{name: "HS256 keyed with the RSA public key PEM", token: rawToken(t, hdr(map[string]any{"alg": "HS256", "kid": "rsa"}), claims, hmacSign(rsaPEM)), reason: ReasonAlgNotAllowed},
		{name: "HS256 keyed with the RSA public key DER", token: rawToken(t, hdr(map[string]any{"alg": "HS256", "kid": "rsa"}), claims, hmacSign(rsaDER)), reason: ReasonAlgNotAllowed},
		{name: "HS256 keyed with the Ed25519 public key", token: rawToken(t, hdr(map[string]any{"alg": "HS256"}), claims, hmacSign(edPub)), reason: ReasonAlgNotAllowed},
		{name: "HS512", token: rawToken(t, hdr(map[string]any{"alg": "HS512"}), claims, hmacSign(edPub)), reason: ReasonAlgNotAllowed},
		{name: "RS256 not allowed", token: rawToken(t, hdr(map[string]any{"alg": "RS256", "kid": "rsa"}), claims, signer(t, "RS256", iss.key("rsa").signer)), reason: ReasonAlgNotAllowed},
		{name: "ES256 under the EdDSA kid", token: rawToken(t, hdr(map[string]any{"alg": "ES256"}), claims, ecSign), reason: ReasonKeyMismatch},
		{name: "PS256 under the ES256 kid", token: rawToken(t, hdr(map[string]any{"alg": "PS256", "kid": "ec"}), claims, signer(t, "PS256", iss.key("rsa").signer)), reason: ReasonKeyMismatch},
		{name: "embedded jwk", token: rawToken(t, hdr(map[string]any{"jwk": attackerJWK}), claims, attackerSign), reason: ReasonForbiddenHeader},
		{name: "embedded jwk without kid", token: rawToken(t, hdr(map[string]any{"jwk": attackerJWK, "kid": nil}), claims, attackerSign), reason: ReasonForbiddenHeader},
		{name: "jku", token: rawToken(t, hdr(map[string]any{"jku": "https://evil.example/jwks", "kid": "evil"}), claims, attackerSign), reason: ReasonForbiddenHeader},
		{name: "x5u", token: rawToken(t, hdr(map[string]any{"x5u": "https://evil.example/cert.pem", "kid": "evil"}), claims, attackerSign), reason: ReasonForbiddenHeader},
		{name: "x5c", token: rawToken(t, hdr(map[string]any{"x5c": []string{base64.StdEncoding.EncodeToString(attackerCert.Leaf.Raw)}}), claims, attackerSign), reason: ReasonForbiddenHeader},
		{name: "kid path traversal", token: rawToken(t, hdr(map[string]any{"kid": "../../etc/passwd"}), claims, attackerSign), reason: ReasonUnknownKey},
		{name: "kid SQL injection", token: rawToken(t, hdr(map[string]any{"kid": "' OR 1=1 --"}), claims, attackerSign), reason: ReasonUnknownKey},
		{name: "kid URL", token: rawToken(t, hdr(map[string]any{"kid": "https://evil.example/key.json"}), claims, attackerSign), reason: ReasonUnknownKey},
		{name: "kid unknown", token: rawToken(t, hdr(map[string]any{"kid": "k-unknown"}), claims, attackerSign), reason: ReasonUnknownKey},
		{name: "kid missing", token: rawToken(t, hdr(map[string]any{"kid": nil}), claims, edSign), reason: ReasonUnknownKey},
		{name: "kid too long", token: rawToken(t, hdr(map[string]any{"kid": strings.Repeat("k", 300)}), claims, edSign), reason: ReasonUnknownKey},
		{name: "kid not a string", token: rawToken(t, hdr(map[string]any{"kid": 7}), claims, edSign), reason: ReasonMalformed},
		{name: "unknown crit", token: rawToken(t, hdr(map[string]any{"crit": []string{"x-bulwark"}, "x-bulwark": 1}), claims, edSign), reason: ReasonForbiddenHeader},
		{name: "crit b64", token: rawToken(t, hdr(map[string]any{"crit": []string{"b64"}, "b64": false}), claims, edSign), reason: ReasonForbiddenHeader},
		{name: "ECDSA r=s=0", token: rawToken(t, hdr(map[string]any{"alg": "ES256", "kid": "ec"}), claims, func([]byte) []byte { return make([]byte, 64) }), reason: ReasonBadSignature},
		{name: "ECDSA r=s=n", token: rawToken(t, hdr(map[string]any{"alg": "ES256", "kid": "ec"}), claims, func([]byte) []byte {
			n := iss.key("ec").signer.Public().(*ecdsa.PublicKey).Curve.Params().N.Bytes()
			return append(append([]byte{}, n...), n...)
		}), reason: ReasonBadSignature},
		{name: "signature stripped", token: parts[0] + "." + parts[1] + ".", reason: ReasonBadSignature},
		{name: "signature of another token", token: parts[0] + "." + parts[1] + "." + otherParts[2], reason: ReasonBadSignature},
		{name: "attacker key under the issuer's kid", token: rawToken(t, hdr(nil), claims, attackerSign), reason: ReasonBadSignature},
		{name: "expired", token: good(map[string]any{"exp": now.Add(-time.Minute).Unix(), "iat": now.Add(-6 * time.Minute).Unix(), "nbf": nil}), reason: ReasonExpired, verified: true},
		{name: "expired beyond the leeway", token: good(map[string]any{"exp": now.Add(-DefaultLeeway - time.Second).Unix()}), reason: ReasonExpired, verified: true},
		{name: "not yet valid", token: good(map[string]any{"nbf": now.Add(time.Minute).Unix()}), reason: ReasonNotYetValid, verified: true},
		{name: "issued in the future", token: good(map[string]any{"iat": now.Add(time.Minute).Unix(), "nbf": nil}), reason: ReasonNotYetValid, verified: true},
		{name: "wrong iss", token: good(map[string]any{"iss": "https://evil.example"}), reason: ReasonWrongIssuer, verified: true},
		{name: "iss with a trailing slash", token: good(map[string]any{"iss": iss.url + "/"}), reason: ReasonWrongIssuer, verified: true},
		{name: "iss missing", token: good(map[string]any{"iss": nil}), reason: ReasonWrongIssuer, verified: true},
		{name: "wrong aud", token: good(map[string]any{"aud": "https://other.example.com"}), reason: ReasonWrongAudience, verified: true},
		{name: "aud list without ours", token: good(map[string]any{"aud": []string{"a", "b"}}), reason: ReasonWrongAudience, verified: true},
		{name: "aud missing", token: good(map[string]any{"aud": nil}), reason: ReasonWrongAudience, verified: true},
		{name: "aud prefix of ours", token: good(map[string]any{"aud": testAudience + ".evil.example"}), reason: ReasonWrongAudience, verified: true},
		{name: "typ JWT (an ID token)", token: rawToken(t, hdr(map[string]any{"typ": "JWT"}), claims, edSign), reason: ReasonWrongType},
		{name: "typ missing", token: rawToken(t, hdr(map[string]any{"typ": nil}), claims, edSign), reason: ReasonWrongType},
		{name: "typ dpop+jwt", token: rawToken(t, hdr(map[string]any{"typ": "dpop+jwt"}), claims, edSign), reason: ReasonWrongType},
		{name: "oversized", token: good(map[string]any{"pad": strings.Repeat("p", MaxTokenSize)}), reason: ReasonMalformed},
		{name: "four segments", token: goodToken + ".x", reason: ReasonMalformed},
		{name: "many dots", token: strings.Repeat("a.", 5000) + "a", reason: ReasonMalformed},
		{name: "two segments", token: parts[0] + "." + parts[1], reason: ReasonMalformed},
		{name: "empty header", token: "." + parts[1] + "." + parts[2], reason: ReasonMalformed},
		{name: "JSON serialization", token: `{"payload":"` + parts[1] + `"}`, reason: ReasonMalformed},
		{name: "padding characters", token: goodToken + "==", reason: ReasonMalformed},
		{name: "standard base64 characters", token: strings.Replace(goodToken, ".", "+.", 1), reason: ReasonMalformed},
		{name: "repeated alg header", token: rawToken(t, `{"alg":"none","alg":"EdDSA","typ":"at+jwt","kid":"ed"}`, claims, edSign), reason: ReasonMalformed},
		{name: "header not an object", token: rawToken(t, `["EdDSA"]`, claims, edSign), reason: ReasonMalformed},
		{name: "exp a string", token: good(map[string]any{"exp": "9999999999"}), reason: ReasonMalformed},
		{name: "jti missing", token: good(map[string]any{"jti": nil}), reason: ReasonMissingClaim, verified: true},
		{name: "exp missing", token: good(map[string]any{"exp": nil}), reason: ReasonMissingClaim, verified: true},
		{name: "iat missing", token: good(map[string]any{"iat": nil}), reason: ReasonMissingClaim, verified: true},
		{name: "sub missing", token: good(map[string]any{"sub": nil}), reason: ReasonMissingClaim, verified: true},
		{name: "client_id missing", token: good(map[string]any{"client_id": nil}), reason: ReasonMissingClaim, verified: true},
		{name: "unsupported cnf", token: good(map[string]any{"cnf": map[string]any{"kid": "x"}}), reason: ReasonMalformed, verified: true},
		{name: "cnf with two bindings", token: good(map[string]any{"cnf": map[string]any{"jkt": "a", "x5t#S256": "b"}}), reason: ReasonMalformed, verified: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, before := rec.last()
			resp, body := call(t, client, "GET", rs.URL+"/accounts", []string{"Bearer " + tc.token}, nil)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d (%s), want 401", resp.StatusCode, body)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
				t.Errorf("WWW-Authenticate %q", got)
			}
			if strings.Contains(body, tc.token) || body != `{"error":"invalid_token"}` {
				t.Errorf("body %q", body)
			}
			rf, n := rec.last()
			if n != before+1 {
				t.Fatalf("%d refusals reported, want 1", n-before)
			}
			if rf.Reason != tc.reason {
				t.Errorf("reason %q (%s), want %q", rf.Reason, rf.Detail, tc.reason)
			}
			if named := rf.Subject != "" || rf.JTI != ""; named != tc.verified {
				t.Errorf("refusal names the token (sub %q, jti %q); want named=%v", rf.Subject, rf.JTI, tc.verified)
			}
			if rf.Method != "GET" || rf.Path != "/accounts" || rf.RemoteAddr == "" {
				t.Errorf("refusal request fields %+v", rf)
			}
			// The same token verified on its own is refused for the same reason.
			if _, err := v.VerifyToken(t.Context(), tc.token); err == nil || err.(*Error).Reason != tc.reason {
				t.Errorf("VerifyToken: %v", err)
			}
			if sig := tc.token[strings.LastIndexByte(tc.token, '.')+1:]; len(sig) > 16 && strings.Contains(rec.logText(), sig) {
				t.Error("the log holds the token's signature")
			}
		})
	}

	// The unmodified token is accepted, so every refusal above is for the
	// one thing its case changed.
	if resp, body := call(t, client, "GET", rs.URL+"/accounts", []string{"Bearer " + goodToken}, nil); resp.StatusCode != http.StatusOK || body != "hello usr_alice" {
		t.Fatalf("good token: %d %q", resp.StatusCode, body)
	}
	if logs := rec.logText(); strings.Contains(logs, goodToken) || !strings.Contains(logs, `"reason":"alg_not_allowed"`) {
		t.Errorf("log output is wrong:\n%s", logs)
	}
}

// TestRequestShapes checks refusals of the Authorization header itself.
func TestRequestShapes(t *testing.T) {
	iss := newTestIssuer(t)
	rec := &recorder{}
	v := newVerifier(t, iss, rec, nil)
	rs := resourceServer(t, v, nil)
	tok := iss.token("ed", iss.claims(nil))
	for _, tc := range []struct {
		name       string
		authz      []string
		status     int
		reason     string
		challenges []string
	}{
		{"no token", nil, 401, ReasonMissingToken, []string{"Bearer", `DPoP algs="EdDSA ES256 PS256"`}},
		{"basic auth", []string{"Basic YWxpY2U6cHc="}, 401, ReasonMissingToken, []string{"Bearer", `DPoP algs="EdDSA ES256 PS256"`}},
		{"two headers", []string{"Bearer " + tok, "Bearer " + tok}, 400, ReasonInvalidRequest, []string{`Bearer error="invalid_request"`}},
		{"scheme only", []string{"Bearer"}, 400, ReasonInvalidRequest, []string{`Bearer error="invalid_request"`}},
		{"two tokens", []string{"Bearer " + tok + " " + tok}, 400, ReasonInvalidRequest, []string{`Bearer error="invalid_request"`}},
		{"two spaces", []string{"Bearer  " + tok}, 400, ReasonInvalidRequest, []string{`Bearer error="invalid_request"`}},
		{"lower-case scheme", []string{"bearer " + tok}, 200, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, before := rec.last()
			resp, body := call(t, rs.Client(), "GET", rs.URL+"/x", tc.authz, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tc.status)
			}
			if got := resp.Header.Values("WWW-Authenticate"); strings.Join(got, "|") != strings.Join(tc.challenges, "|") {
				t.Errorf("challenges %q, want %q", got, tc.challenges)
			}
			rf, n := rec.last()
			if tc.reason == "" {
				if n != before {
					t.Errorf("refusal reported for an accepted request: %+v", rf)
				}
				return
			}
			if n != before+1 || rf.Reason != tc.reason {
				t.Errorf("refusal %+v (%d new), want reason %s", rf, n-before, tc.reason)
			}
			if strings.Contains(body, tok) {
				t.Error("the response echoes the token")
			}
		})
	}
}

// TestCacheKeyIgnoresSignatureEncoding checks that the cache is keyed on
// the decoded signature: another encoding of the same signature bytes finds
// the same entry, while a different signature is verified (and refused)
// even though a token with the same header and claims is cached.
func TestCacheKeyIgnoresSignatureEncoding(t *testing.T) {
	iss := newTestIssuer(t)
	rec := &recorder{}
	v := newVerifier(t, iss, rec, nil)
	tok := iss.token("ed", iss.claims(nil))
	if _, err := v.VerifyToken(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
	}
	// An Ed25519 signature is 64 bytes: 86 base64url characters whose last
	// carries 2 bits of signature and 4 padding bits that decoders ignore.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	sameBytes := tok[:len(tok)-1] + string(alphabet[last^0x1])
	otherBytes := tok[:len(tok)-1] + string(alphabet[last^0x10])
	if _, err := v.VerifyToken(t.Context(), sameBytes); err != nil {
		t.Fatalf("non-canonical encoding of the same signature: %v", err)
	}
	if n := v.cache.len(); n != 1 {
		t.Errorf("cache holds %d entries after a re-encoded signature, want 1 (the same entry)", n)
	}
	_, err := v.VerifyToken(t.Context(), otherBytes)
	if err == nil || err.(*Error).Reason != ReasonBadSignature {
		t.Fatalf("different signature bytes: %v, want bad_signature", err)
	}
	if _, err := v.VerifyToken(t.Context(), tok); err != nil {
		t.Fatalf("original token after the forgery: %v", err)
	}
}

// TestRequireSenderConstraint refuses unbound tokens when configured to.
func TestRequireSenderConstraint(t *testing.T) {
	iss := newTestIssuer(t)
	rec := &recorder{}
	v := newVerifier(t, iss, rec, func(c *Config) { c.RequireSenderConstraint = true })
	_, err := v.VerifyToken(t.Context(), iss.token("ed", iss.claims(nil)))
	if err == nil || err.(*Error).Reason != ReasonUnbound {
		t.Fatalf("unbound token: %v", err)
	}
	if rf, _ := rec.last(); rf.Reason != ReasonUnbound || rf.Subject != "usr_alice" {
		t.Errorf("refusal %+v", rf)
	}
}

// jsonField reads one field of a JSON object, for assertions.
func jsonField(t *testing.T, body, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	s, _ := m[field].(string)
	return s
}
