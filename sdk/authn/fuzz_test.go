package authn

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary strings to the token verifier and to the
// Authorization parser. Nothing may panic, and a token may be accepted only
// if its header and claims decode to exactly those of the one valid token
// (the signature covers them; base64url has several spellings of the same
// bytes).
func FuzzParse(f *testing.F) {
	iss := newTestIssuer(f)
	v := newVerifier(f, iss, nil, nil)
	valid := iss.token("ed", iss.claims(nil))
	seg := strings.Split(valid, ".")
	wantHeader, _ := base64.RawURLEncoding.DecodeString(seg[0])
	wantClaims, _ := base64.RawURLEncoding.DecodeString(seg[1])
	for _, s := range []string{
		valid,
		seg[0] + "." + seg[1] + ".",
		seg[0] + "." + seg[1],
		"a.b.c",
		"..",
		"eyJhbGciOiJub25lIn0.e30.",
		"eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6ImVkIn0.e30.c2ln",
		`{"payload":"e30","signatures":[]}`,
		strings.Repeat("A", 100) + "." + strings.Repeat("B", 100) + "." + strings.Repeat("C", 100),
	} {
		f.Add(s, "Bearer "+s)
	}
	f.Fuzz(func(t *testing.T, token, authz string) {
		p, rf := v.verifyCore(t.Context(), token)
		if rf == nil {
			segs := strings.Split(token, ".")
			h, err1 := base64.RawURLEncoding.DecodeString(segs[0])
			c, err2 := base64.RawURLEncoding.DecodeString(segs[1])
			if err1 != nil || err2 != nil || !bytes.Equal(h, wantHeader) || !bytes.Equal(c, wantClaims) || p.Subject != "usr_alice" {
				t.Fatalf("accepted a token that is not the valid one: %q", token)
			}
		} else if rf.reason == "" {
			t.Fatalf("refusal without a reason for %q", token)
		}
		scheme, tok, rf := parseAuthorization([]string{authz})
		if rf == nil && (scheme == "" || tok == "" || strings.ContainsAny(tok, " \t,")) {
			t.Fatalf("parseAuthorization(%q) = %q, %q", authz, scheme, tok)
		}
	})
}
