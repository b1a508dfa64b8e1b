package identity

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseTokenForm feeds arbitrary bodies and content types to the token
// endpoint's form parser: it must never panic, and what it accepts must
// hold no repeated parameter (but resource and audience), no invalid
// UTF-8 and no more than maxTokenFormParams names.
func FuzzParseTokenForm(f *testing.F) {
	const form = "application/x-www-form-urlencoded"
	for _, seed := range []struct{ body, ct string }{
		{"grant_type=client_credentials&scope=read+write", form},
		{"grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b.c", form + "; charset=UTF-8"},
		{"grant_type=a&grant_type=b", form},
		{"resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb&audience=x", form},
		{"a=%zz", form},
		{"a=1;b=2", form},
		{"name=%ff%fe", form},
		{"=empty", form},
		{`{"grant_type":"client_credentials"}`, "application/json"},
		{"grant_type=x", "multipart/form-data; boundary=x"},
		{"", ""},
		{strings.Repeat("a=1&", 100), form},
	} {
		f.Add([]byte(seed.body), seed.ct)
	}
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		vals, err := parseTokenForm(body, ct)
		if err != nil {
			if vals != nil {
				t.Fatal("values returned with an error")
			}
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		if len(body) > maxTokenFormBytes || len(vals) > maxTokenFormParams {
			t.Fatalf("accepted %d bytes, %d parameters", len(body), len(vals))
		}
		for k, vs := range vals {
			if k == "" || !utf8.ValidString(k) {
				t.Fatalf("accepted parameter name %q", k)
			}
			if len(vs) > 1 && !slices.Contains(repeatableParams, k) {
				t.Fatalf("accepted repeated %q", k)
			}
			for _, v := range vs {
				if !utf8.ValidString(v) {
					t.Fatalf("accepted non-UTF-8 value of %q", k)
				}
			}
		}
	})
}

// FuzzDPoPNonce checks that the nonce source accepts only the nonces it
// made for the current or previous window.
func FuzzDPoPNonce(f *testing.F) {
	n := newNonceSource()
	now := time.Unix(1_760_000_000, 0)
	f.Add(n.current(now))
	f.Add(n.current(now.Add(-dpopNonceWindow)))
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, nonce string) {
		ok := n.valid(nonce, now)
		want := nonce == n.current(now) || nonce == n.current(now.Add(-dpopNonceWindow))
		if ok != want {
			t.Fatalf("valid(%q) = %v, want %v", nonce, ok, want)
		}
	})
}

// FuzzParseClientAssertion feeds arbitrary client assertions to the parser
// that runs before any key is looked up: it must never panic, and what it
// passes on is a single-signature JWS with an allowed algorithm, no key of
// its own in the header, and an issuer.
func FuzzParseClientAssertion(f *testing.F) {
	f.Add(ClientAssertionTypeJWT, "eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJhIn0.c2ln")
	f.Add(ClientAssertionTypeJWT, "eyJhbGciOiJub25lIn0.eyJpc3MiOiJhIn0.")
	f.Add(ClientAssertionTypeJWT, "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJhIn0.c2ln")
	f.Add(ClientAssertionTypeJWT, "eyJhbGciOiJFUzI1NiIsImp3ayI6e319.eyJpc3MiOiJhIn0.c2ln")
	f.Add("urn:other", "a.b.c")
	f.Add(ClientAssertionTypeJWT, "....")
	f.Fuzz(func(t *testing.T, typ, assertion string) {
		jws, claims, fail := parseClientAssertion(url.Values{"client_assertion_type": {typ}, "client_assertion": {assertion}})
		if fail != nil {
			if jws != nil || fail.err == nil || (fail.err.Code != ErrInvalidClient.Code) {
				t.Fatalf("failure %+v with a JWS", fail)
			}
			return
		}
		if claims == nil || claims.Issuer == "" || len(jws.Signatures) != 1 || len(assertion) > maxClientAssertionLen {
			t.Fatalf("accepted %q", assertion)
		}
		h := jws.Signatures[0].Protected
		if !slices.Contains(allowedClientAlgs, h.Algorithm) || h.JSONWebKey != nil {
			t.Fatalf("accepted header %+v", h)
		}
	})
}
