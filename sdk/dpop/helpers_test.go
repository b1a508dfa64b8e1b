package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Test keys, generated once per test binary.
var (
	testKeys = sync.OnceValue(func() map[string]crypto.Signer {
		_, ed, _ := ed25519.GenerateKey(rand.Reader)
		ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		rs, _ := rsa.GenerateKey(rand.Reader, 2048)
		rs1024, _ := rsa.GenerateKey(rand.Reader, 1024)
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		return map[string]crypto.Signer{"EdDSA": ed, "ES256": ec, "ES384": ec384, "PS256": rs, "RSA1024": rs1024, "other": other}
	})
)

// rawProof assembles a compact JWS from a raw header and claims JSON and
// signs it with sign (nil: an empty signature).
func rawProof(header, claims string, sign func(input []byte) []byte) string {
	input := b64(header) + "." + b64(claims)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// jwkJSON is the public JWK of key as JSON.
func jwkJSON(t testing.TB, key any) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKey{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// signWith signs a JWS signing input with key under alg, producing the JWS
// signature bytes (ECDSA as r||s).
func signWith(t testing.TB, alg string, key crypto.Signer) func([]byte) []byte {
	return func(input []byte) []byte {
		t.Helper()
		switch alg {
		case "EdDSA":
			return ed25519.Sign(key.(ed25519.PrivateKey), input)
		case "ES256", "ES384":
			h := crypto.SHA256
			size := 32
			if alg == "ES384" {
				h, size = crypto.SHA384, 48
			}
			hh := h.New()
			hh.Write(input)
			r, s, err := ecdsa.Sign(rand.Reader, key.(*ecdsa.PrivateKey), hh.Sum(nil))
			if err != nil {
				t.Fatal(err)
			}
			out := make([]byte, 2*size)
			r.FillBytes(out[:size])
			s.FillBytes(out[size:])
			return out
		case "PS256", "RS256":
			d := sha256.Sum256(input)
			var (
				sig []byte
				err error
			)
			if alg == "PS256" {
				sig, err = rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
			} else {
				sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, d[:])
			}
			if err != nil {
				t.Fatal(err)
			}
			return sig
		}
		t.Fatalf("signWith: unknown alg %s", alg)
		return nil
	}
}

// hmacWith returns an HS256 "signature" keyed with secret.
func hmacWith(secret []byte) func([]byte) []byte {
	return func(input []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(input)
		return m.Sum(nil)
	}
}

// zeroSig is an ECDSA P-256 signature with r = s = 0.
func zeroSig([]byte) []byte { return make([]byte, 64) }

// claimsJSON encodes proof claims.
func claimsJSON(t testing.TB, m map[string]any) string {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// testNow is the fixed clock of the verify tests.
var testNow = time.Unix(1_760_000_000, 0)
