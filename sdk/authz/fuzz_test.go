package authz_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/sdk/authz"
)

// FuzzVerifyBundle feeds arbitrary bytes to VerifyBundle: it must not
// panic, every error must wrap ErrInvalidBundle, and whatever it accepts
// must be exactly what the trusted key signed.
func FuzzVerifyBundle(f *testing.F) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	trusted := map[string]ed25519.PublicKey{authz.KeyID(pub): pub}
	b, err := authz.SignBundle(testContent(5), priv)
	if err != nil {
		f.Fatal(err)
	}
	raw, err := json.Marshal(b)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"manifest":"","signature":"","policies":{},"schema":"","entities":[]}`))
	f.Add(append(bytes.Clone(raw), '{'))
	f.Fuzz(func(t *testing.T, data []byte) {
		vb, err := authz.VerifyBundle(data, trusted, testIssued.Add(time.Minute), 1<<20)
		if err != nil {
			if !errors.Is(err, authz.ErrInvalidBundle) {
				t.Fatalf("error %v does not wrap ErrInvalidBundle", err)
			}
			return
		}
		if vb.Manifest.Version != 5 || vb.Schema != b.Schema || len(vb.Policies) != len(b.Policies) {
			t.Fatalf("accepted content that was not signed: %+v", vb.Manifest)
		}
		for name, text := range b.Policies {
			if vb.Policies[name] != text {
				t.Fatalf("accepted policy %q that was not signed", name)
			}
		}
		if !bytes.Equal(vb.Entities, b.Entities) {
			t.Fatal("accepted entities that were not signed")
		}
		if _, err := authz.NewEvaluatorFromBundle(vb); err != nil {
			t.Fatalf("signed bundle does not build: %v", err)
		}
	})
}

// FuzzNewEvaluator feeds arbitrary policy text to NewEvaluator and decides
// one request: neither may panic.
func FuzzNewEvaluator(f *testing.F) {
	f.Add(`permit (principal, action, resource);`, `[]`)
	f.Add(`@id("x") forbid (principal in Bulwark::Role::"r", action in [Bulwark::Action::"read"], resource is Bulwark::User) when { context.a.b > 1 };`,
		`[{"uid":{"type":"Bulwark::User","id":"alice"},"attrs":{},"parents":[{"type":"Bulwark::Role","id":"r"}]}]`)
	f.Add(`permit (principal, action, resource) when { 9223372036854775807 + 1 > 0 };`, ``)
	schema := testContent(1).Schema
	f.Fuzz(func(t *testing.T, policy, entities string) {
		ev, err := authz.NewEvaluator(authz.EvaluatorInput{Policies: map[string]string{"f.cedar": policy}, Schema: schema, Entities: json.RawMessage(entities)})
		if err != nil {
			return
		}
		d := ev.Decide(authz.Request{Principal: uid("User", "alice"), Action: action("read"), Resource: uid("User", "alice")})
		if d.Allowed && (len(d.Errors) > 0 || len(d.Reasons) == 0) {
			t.Fatalf("allowed with errors or without reasons: %+v", d)
		}
	})
}
