package authz_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/sdk/authz"
)

var testIssued = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func newKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func trustedSet(keys ...ed25519.PublicKey) map[string]ed25519.PublicKey {
	m := map[string]ed25519.PublicKey{}
	for _, k := range keys {
		m[authz.KeyID(k)] = k
	}
	return m
}

func testContent(version int64) authz.BundleContent {
	return authz.BundleContent{
		Version: version, PolicyVersion: 3, EntitiesVersion: 4, Issuer: "test",
		IssuedAt: testIssued, ExpiresAt: testIssued.Add(time.Hour),
		Policies: map[string]string{
			"a.cedar": `@id("allow-read") permit (principal, action == Bulwark::Action::"read", resource);`,
			"b.cedar": `forbid (principal == Bulwark::User::"mallory", action, resource);`,
		},
		Schema:   "namespace Bulwark { entity User; action read appliesTo { principal: [User], resource: [User] }; }",
		Entities: json.RawMessage(`[{"uid":{"type":"Bulwark::User","id":"alice"},"attrs":{},"parents":[]}]`),
	}
}

func signedRaw(t testing.TB, c authz.BundleContent, key ed25519.PrivateKey) []byte {
	t.Helper()
	b, err := authz.SignBundle(c, key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestBundleRoundTrip(t *testing.T) {
	t.Parallel()
	pub, priv := newKey(t)
	c := testContent(5)
	raw := signedRaw(t, c, priv)
	vb, err := authz.VerifyBundle(raw, trustedSet(pub), testIssued.Add(time.Minute), 0)
	if err != nil {
		t.Fatalf("VerifyBundle: %v", err)
	}
	m := vb.Manifest
	if m.Version != 5 || m.PolicyVersion != 3 || m.EntitiesVersion != 4 || m.Issuer != "test" || m.Format != authz.BundleFormat ||
		!m.IssuedAt.Equal(c.IssuedAt) || !m.ExpiresAt.Equal(c.ExpiresAt) || m.KeyID != authz.KeyID(pub) {
		t.Errorf("manifest %+v does not match the content", m)
	}
	if vb.Schema != c.Schema || !bytes.Equal(vb.Entities, c.Entities) || len(vb.Policies) != 2 || vb.Policies["a.cedar"] != c.Policies["a.cedar"] {
		t.Errorf("verified content differs: %+v", vb)
	}
	ev, err := authz.NewEvaluatorFromBundle(vb)
	if err != nil {
		t.Fatal(err)
	}
	d := ev.Decide(authz.Request{Principal: uid("User", "alice"), Action: action("read"), Resource: uid("User", "alice")})
	if !d.Allowed || d.BundleVersion != 5 {
		t.Errorf("decision from the bundle: %+v", d)
	}
}

func TestSignBundleRefuses(t *testing.T) {
	t.Parallel()
	_, priv := newKey(t)
	c := testContent(0)
	if _, err := authz.SignBundle(c, priv); err == nil {
		t.Error("signed version 0")
	}
	c = testContent(1)
	c.ExpiresAt = c.IssuedAt
	if _, err := authz.SignBundle(c, priv); err == nil {
		t.Error("signed a bundle that expires when issued")
	}
}

// mutateJSON decodes raw, lets f change the wire bundle and re-encodes it.
func mutateJSON(t *testing.T, raw []byte, f func(b *authz.Bundle)) []byte {
	t.Helper()
	var b authz.Bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	f(&b)
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func flip(s string, i int) string {
	b := []byte(s)
	b[i] ^= 0x01
	return string(b)
}

// flipB64 changes one byte of the data a base64url string encodes.
func flipB64(t *testing.T, s string, i int) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	b[i%len(b)] ^= 0x01
	return base64.RawURLEncoding.EncodeToString(b)
}

// replaceB64 replaces old with new in the data a base64url string encodes.
func replaceB64(t *testing.T, s, old, new string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("manifest %s has no %s", b, old)
	}
	return base64.RawURLEncoding.EncodeToString(bytes.Replace(b, []byte(old), []byte(new), 1))
}

func TestVerifyBundleRefuses(t *testing.T) {
	t.Parallel()
	pub, priv := newKey(t)
	otherPub, otherPriv := newKey(t)
	now := testIssued.Add(time.Minute)
	raw := signedRaw(t, testContent(5), priv)
	tests := []struct {
		name    string
		raw     []byte
		trusted map[string]ed25519.PublicKey
		now     time.Time
		max     int
		want    error
		msg     string
	}{
		{name: "manifest value changed", raw: mutateJSON(t, raw, func(b *authz.Bundle) { b.Manifest = replaceB64(t, b.Manifest, `"version":5`, `"version":9`) }), want: authz.ErrBadSignature},
		{name: "manifest expiry extended", raw: mutateJSON(t, raw, func(b *authz.Bundle) {
			b.Manifest = replaceB64(t, b.Manifest, `"expires_at":"2026`, `"expires_at":"2036`)
		}), want: authz.ErrBadSignature},
		{name: "manifest field name changed", raw: mutateJSON(t, raw, func(b *authz.Bundle) { b.Manifest = flipB64(t, b.Manifest, 40) }), want: authz.ErrInvalidBundle},
		{name: "manifest first byte changed", raw: mutateJSON(t, raw, func(b *authz.Bundle) { b.Manifest = flipB64(t, b.Manifest, 0) }), want: authz.ErrInvalidBundle},
		{name: "signature byte changed", raw: mutateJSON(t, raw, func(b *authz.Bundle) { b.Signature = flipB64(t, b.Signature, 10) }), want: authz.ErrBadSignature},
		{name: "signature truncated", raw: mutateJSON(t, raw, func(b *authz.Bundle) { b.Signature = b.Signature[:20] }), want: authz.ErrBadSignature},
		{name: "policy text byte changed", raw: mutateJSON(t, raw, func(b *authz.Bundle) { b.Policies["b.cedar"] = flip(b.Policies["b.cedar"], 3) }), want: authz.ErrDigest, msg: "b.cedar"},
		{name: "policy file added", raw: mutateJSON(t, raw, func(b *authz.Bundle) { b.Policies["z.cedar"] = "permit (principal, action, resource);" }), want: authz.ErrDigest},
		{name: "policy file removed", raw: mutateJSON(t, raw, func(b *authz.Bundle) { delete(b.Policies, "b.cedar") }), want: authz.ErrDigest},
		{name: "policy file renamed", raw: mutateJSON(t, raw, func(b *authz.Bundle) { b.Policies["c.cedar"] = b.Policies["b.cedar"]; delete(b.Policies, "b.cedar") }), want: authz.ErrDigest},
		{name: "schema byte changed", raw: mutateJSON(t, raw, func(b *authz.Bundle) { b.Schema = flip(b.Schema, 12) }), want: authz.ErrDigest, msg: "schema"},
		{name: "entities byte changed", raw: mutateJSON(t, raw, func(b *authz.Bundle) {
			b.Entities = json.RawMessage(strings.Replace(string(b.Entities), "alice", "alicf", 1))
		}), want: authz.ErrDigest, msg: "entities"},
		{name: "signed by another key", raw: signedRaw(t, testContent(5), otherPriv), want: authz.ErrUnknownKey},
		{name: "another key's signature over our manifest", raw: func() []byte {
			other := signedRaw(t, testContent(5), otherPriv)
			var ob authz.Bundle
			_ = json.Unmarshal(other, &ob)
			return mutateJSON(t, raw, func(b *authz.Bundle) { b.Signature = ob.Signature })
		}(), want: authz.ErrBadSignature},
		{name: "no trusted keys", raw: raw, trusted: map[string]ed25519.PublicKey{}, want: authz.ErrUnknownKey},
		{name: "trusted key under the wrong id", raw: raw, trusted: map[string]ed25519.PublicKey{authz.KeyID(pub): otherPub}, want: authz.ErrBadSignature},
		{name: "expired", raw: raw, now: testIssued.Add(time.Hour), want: authz.ErrExpired},
		{name: "oversized", raw: raw, max: len(raw) - 1, want: authz.ErrInvalidBundle, msg: "limit"},
		{name: "trailing garbage", raw: append(append([]byte{}, raw...), []byte(` {"x":1}`)...), want: authz.ErrInvalidBundle, msg: "trailing"},
		{name: "manifest not base64", raw: mutateJSON(t, raw, func(b *authz.Bundle) { b.Manifest = "!!!" + b.Manifest }), want: authz.ErrInvalidBundle, msg: "base64"},
		{name: "unknown field", raw: bytes.Replace(raw, []byte(`{"manifest"`), []byte(`{"extra":1,"manifest"`), 1), want: authz.ErrInvalidBundle},
		{name: "not json", raw: []byte("<html>"), want: authz.ErrInvalidBundle},
		{name: "empty", raw: nil, want: authz.ErrInvalidBundle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			trusted := tc.trusted
			if trusted == nil {
				trusted = trustedSet(pub)
			}
			at := tc.now
			if at.IsZero() {
				at = now
			}
			vb, err := authz.VerifyBundle(tc.raw, trusted, at, tc.max)
			if err == nil {
				t.Fatalf("VerifyBundle accepted the bundle: %+v", vb.Manifest)
			}
			if vb != nil {
				t.Error("VerifyBundle returned content with an error")
			}
			if !errors.Is(err, authz.ErrInvalidBundle) {
				t.Errorf("error %v does not wrap ErrInvalidBundle", err)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
}

// TestVerifyBundleEveryByte changes every byte of a signed bundle in turn:
// no change may be accepted with different content.
func TestVerifyBundleEveryByte(t *testing.T) {
	t.Parallel()
	pub, priv := newKey(t)
	raw := signedRaw(t, testContent(5), priv)
	orig, err := authz.VerifyBundle(raw, trustedSet(pub), testIssued, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		mut := bytes.Clone(raw)
		mut[i] ^= 0x01
		vb, err := authz.VerifyBundle(mut, trustedSet(pub), testIssued, 0)
		if err != nil {
			if !errors.Is(err, authz.ErrInvalidBundle) {
				t.Fatalf("byte %d: error %v does not wrap ErrInvalidBundle", i, err)
			}
			continue
		}
		// JSON may accept a change that does not alter the content (an
		// escape, a case-insensitive field name); the content must then be
		// exactly what was signed.
		a, _ := json.Marshal(vb)
		b, _ := json.Marshal(orig)
		if !bytes.Equal(a, b) {
			t.Fatalf("byte %d: changed bundle accepted with different content", i)
		}
	}
}
