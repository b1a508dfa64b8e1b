package ca

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func TestRotationOverlap(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		id := env.id("/ns/a/sa/b")
		issue := func() *Issued {
			t.Helper()
			iss, err := env.a.SignX509SVID(ctx, csrFor(t, newP256(t), nil), id, 0, spiffeid.ID{})
			if err != nil {
				t.Fatal(err)
			}
			return iss
		}
		verify := func(iss *Issued, at time.Time) error {
			_, _, err := x509svid.Verify(iss.Certificates, env.bundle(), x509svid.WithTime(at))
			return err
		}
		t0 := env.clock.Now()
		seq0 := env.a.Bundle()
		oldSVID := issue()
		if err := env.a.Rotate(ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
		newSVID := issue()
		if oldSVID.Certificates[1].Equal(newSVID.Certificates[1]) {
			t.Fatal("the new SVID was signed by the old intermediate")
		}
		// During the overlap both intermediates are trusted.
		if n := len(env.a.X509Authorities()); n != 2 {
			t.Fatalf("%d X.509 authorities during the overlap; want 2", n)
		}
		if len(env.a.JWTAuthorities()) != 2 {
			t.Fatalf("%d JWT authorities during the overlap; want 2", len(env.a.JWTAuthorities()))
		}
		for name, iss := range map[string]*Issued{"old": oldSVID, "new": newSVID} {
			if err := verify(iss, env.clock.Now()); err != nil {
				t.Fatalf("%s SVID during the overlap: %v", name, err)
			}
		}
		s1, _ := env.a.Bundle().SequenceNumber()
		s0, _ := seq0.SequenceNumber()
		if s1 <= s0 {
			t.Fatalf("bundle sequence %d after rotation, %d before", s1, s0)
		}
		// After the overlap only the new intermediate is trusted: an SVID of
		// the old one fails even at a time when it was itself valid.
		env.clock.Advance(env.cfg.RotationOverlap + time.Minute)
		auth := env.a.X509Authorities()
		if len(auth) != 1 || !auth[0].Equal(newSVID.Certificates[1]) {
			t.Fatalf("%d X.509 authorities after the overlap; want only the new", len(auth))
		}
		if len(env.a.JWTAuthorities()) != 1 {
			t.Fatalf("%d JWT authorities after the overlap; want 1", len(env.a.JWTAuthorities()))
		}
		if err := verify(oldSVID, t0.Add(time.Minute)); err == nil {
			t.Fatal("an SVID of the rotated-out intermediate verifies after the overlap")
		}
		if err := verify(newSVID, t0.Add(time.Minute)); err != nil {
			t.Fatalf("an SVID of the new intermediate: %v", err)
		}
		if err := verify(issue(), env.clock.Now()); err != nil {
			t.Fatalf("a fresh SVID: %v", err)
		}
		s2, _ := env.a.Bundle().SequenceNumber()
		if s2 <= s1 {
			t.Fatalf("bundle sequence %d after the overlap, %d during", s2, s1)
		}
		if n := env.countEvents(classEntityManagement, actCreate, audit.StatusSuccess); n < 2 {
			t.Fatal("rotation not audited")
		}
	})
}

func TestRotateWithOfflineRoot(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		rootCert, rootKey, err := InitRoot(env.td, 24*time.Hour*365)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.a.Rotate(ctx, rootKey, rootCert); err != nil {
			t.Fatal(err)
		}
		inter := env.a.state.Load().signer.cert
		if err := inter.CheckSignatureFrom(rootCert); err != nil {
			t.Fatalf("the new intermediate is not signed by the offline root: %v", err)
		}
		if !inter.IsCA || !inter.MaxPathLenZero || len(inter.PermittedURIDomains) != 1 || inter.PermittedURIDomains[0] != "example.test" {
			t.Fatalf("intermediate: CA %v, MaxPathLenZero %v, URI constraints %v", inter.IsCA, inter.MaxPathLenZero, inter.PermittedURIDomains)
		}

		otherCert, otherKey, err := InitRoot(spiffeid.RequireTrustDomainFromString("other.test"), time.Hour*24)
		if err != nil {
			t.Fatal(err)
		}
		_, strangerKey, err := InitRoot(env.td, time.Hour*24)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			run  func() error
		}{
			{"key of another root", func() error { return env.a.Rotate(ctx, strangerKey, rootCert) }},
			{"root of another trust domain", func() error { return env.a.Rotate(ctx, otherKey, otherCert) }},
			{"certificate without key", func() error { return env.a.Rotate(ctx, nil, rootCert) }},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.run(); !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v; want ErrInvalid", err)
				}
			})
		}
		// A CA under an offline root is never moved to the dev root: not
		// by a rotation without root, nor by maintenance near expiry.
		if err := env.a.Rotate(ctx, nil, nil); !errors.Is(err, ErrInvalid) {
			t.Fatalf("rotation with the dev root of a CA under an offline root: %v; want ErrInvalid", err)
		}
		env.clock.Advance(env.cfg.IntermediateTTL - time.Hour)
		if err := env.a.maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if got := env.a.state.Load().signer.cert; !got.Equal(inter) {
			t.Fatal("a refused rotation changed the signing intermediate")
		}
		if n := env.countEvents(classEntityManagement, actCreate, audit.StatusFailure); n != len(tests)+1 {
			t.Fatalf("%d refused rotations audited; want %d", n, len(tests)+1)
		}
	})
}

// TestReplicaFollowsRotation: a second Authority on the same database
// picks up a rotation made by the first within a few seconds (Run).
func TestReplicaFollowsRotation(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		replica, err := New(ctx, env.cfg, Deps{DB: db, Sealer: env.sealer, Audit: env.audit, Now: env.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		if !replica.state.Load().signer.cert.Equal(env.a.state.Load().signer.cert) {
			t.Fatal("the replica signs with another intermediate")
		}
		done := make(chan error, 1)
		go func() { done <- replica.Run(ctx) }()
		if err := env.a.Rotate(ctx, nil, nil); err != nil {
			t.Fatal(err)
		}
		agent := env.joinAgent("node-1")
		if err := env.a.Quarantine(ctx, env.id("/ns/x/sa/y"), "test"); err != nil {
			t.Fatal(err)
		}
		want := env.a.state.Load().signer.cert
		deadline := time.Now().Add(5 * time.Second)
		for !replica.state.Load().signer.cert.Equal(want) || !replica.IsDenied(env.id("/ns/x/sa/y"), "") {
			if time.Now().After(deadline) {
				t.Fatal("the replica did not follow the rotation and the deny list within 5 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, _, err := x509svid.Verify(agent.Certificates, x509bundle.FromX509Authorities(env.td, replica.X509Authorities())); err != nil {
			t.Fatalf("the replica does not trust the new intermediate: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestNewWithoutRootStoreNeedsAnIntermediate(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, storetest.Open(t, db.Driver()))
		if _, err := New(context.Background(), env.cfg, Deps{DB: db, Sealer: env.sealer, Audit: env.audit}); err == nil {
			t.Fatal("New without an intermediate or a root store succeeded")
		}
		bad := env.cfg
		bad.RotationOverlap = bad.SVIDTTL
		if _, err := New(context.Background(), bad, Deps{DB: db, Sealer: env.sealer, Audit: env.audit, RootStore: env.sealer}); err == nil {
			t.Fatal("New accepted an overlap no longer than the SVID TTL")
		}
	})
}

// TestDevIntermediateRenewsItself: with the dev root, an intermediate
// close to expiry is replaced by maintenance, once even with two replicas.
func TestDevIntermediateRenewsItself(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db, func(c *Config) { c.IntermediateTTL = 4 * time.Hour })
		ctx := context.Background()
		replica, err := New(ctx, env.cfg, Deps{DB: db, Sealer: env.sealer, RootStore: env.sealer, Audit: env.audit, Now: env.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		first := env.a.state.Load().signer.id
		if err := env.a.maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if env.a.state.Load().signer.id != first {
			t.Fatal("rotated an intermediate with 4h left (threshold 3h)")
		}
		env.clock.Advance(time.Hour + time.Minute)
		for _, a := range []*Authority{env.a, replica} {
			if err := a.maintain(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if env.a.state.Load().signer.id == first {
			t.Fatal("the intermediate was not renewed")
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM ca_intermediates").Scan(&n); err != nil || n != 2 {
			t.Fatalf("%d intermediates after renewal by two replicas; want 2 (%v)", n, err)
		}
		if err := replica.reload(ctx); err != nil {
			t.Fatal(err)
		}
		if replica.state.Load().signer.id != env.a.state.Load().signer.id {
			t.Fatal("the replicas sign with different intermediates")
		}
	})
}
