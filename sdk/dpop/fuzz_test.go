package dpop

import (
	"errors"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary proofs to Verify: it must never panic, must
// refuse with ErrInvalidProof, and may accept only a proof that verifies
// again to the same result.
func FuzzVerify(f *testing.F) {
	key := testKeys()["EdDSA"]
	s, err := NewSigner(key)
	if err != nil {
		f.Fatal(err)
	}
	s.now = func() time.Time { return testNow }
	good, err := s.Proof(testMethod, testURL, "n", testToken)
	if err != nil {
		f.Fatal(err)
	}
	hdr := `{"typ":"dpop+jwt","alg":"EdDSA","jwk":` + jwkJSON(f, key.Public()) + `}`
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add("a.b.c")
	f.Add("..")
	f.Add(rawProof(hdr, `{"jti":"x","htm":"POST","htu":"https://api.example.com/v1/payments","iat":1760000000}`, nil))
	f.Add(rawProof(`{"alg":"none","typ":"dpop+jwt"}`, `{}`, nil))
	f.Add(rawProof(`{"alg":"EdDSA","typ":"dpop+jwt","jwk":{"kty":"OKP","crv":"Ed25519","x":"AAAA"}}`, `{}`, nil))
	opts := VerifyOptions{Method: testMethod, URL: testURL, Now: testNow, AccessToken: testToken}
	f.Fuzz(func(t *testing.T, proof string) {
		p, err := Verify(proof, opts)
		if err != nil {
			if !errors.Is(err, ErrInvalidProof) {
				t.Fatalf("error %v does not wrap ErrInvalidProof", err)
			}
			return
		}
		if p.JTI == "" || p.Thumbprint == "" || p.HTM != testMethod {
			t.Fatalf("accepted an incomplete proof: %+v", p)
		}
	})
}
