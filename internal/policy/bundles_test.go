package policy

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/clocktest"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

func TestBundleResignAndRestart(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		keys, clock := &memKeys{}, &clocktest.Clock{}
		log := audittest.Start(t, db)
		r := startRepo(t, db, repoOpts{keys: keys, clock: clock, log: log})
		first := r.verify(t)
		waitVersion := func(r *testRepo, after int64) {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, _, err := r.WaitBundle(ctx, after); err != nil {
				t.Fatalf("no bundle after %d: %v", after, err)
			}
		}
		clock.Advance(DefaultBundleTTL/2 + time.Minute)
		waitVersion(r, first.Manifest.Version)
		second := r.verify(t)
		if !second.Manifest.IssuedAt.After(first.Manifest.IssuedAt) || second.Manifest.PolicyVersion != first.Manifest.PolicyVersion {
			t.Fatalf("re-signed manifest %+v", second.Manifest)
		}
		if r.Snapshot().BundleVersion != second.Manifest.Version {
			t.Fatal("the snapshot did not follow the re-signed bundle")
		}

		// A replica starting after every bundle expired signs a fresh one
		// with the same key, and the first replica follows it.
		clock.Advance(2 * DefaultBundleTTL)
		r2 := startRepo(t, db, repoOpts{keys: keys, clock: clock, log: log})
		third := r2.verify(t)
		if third.Manifest.Version <= second.Manifest.Version || len(r2.PublicKeys()) != 1 {
			t.Fatalf("restart: %+v", third.Manifest)
		}
		waitVersion(r, third.Manifest.Version-1)
		r.verify(t)
	})
}

func TestWaitBundle(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		r := startRepo(t, db, repoOpts{})
		_, cur := r.Bundle()
		type result struct {
			v   int64
			err error
		}
		got := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, v, err := r.WaitBundle(ctx, cur)
			got <- result{v, err}
		}()
		info, err := r.Push(context.Background(), map[string]string{"p.cedar": adminsReadRoutes}, "", testAdmin)
		if err != nil {
			t.Fatal(err)
		}
		if res := <-got; res.err != nil || res.v < info.BundleVersion {
			t.Fatalf("WaitBundle: %+v, pushed bundle %d", res, info.BundleVersion)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := r.WaitBundle(ctx, info.BundleVersion+100); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitBundle with a cancelled context: %v", err)
		}
	})
}

// TestForgedBundleInStoreRefused: a bundle written into the store by
// someone without a replica's signing key (here, one that allows
// everything) is never served or decided with; the replica signs a fresh
// bundle from the real content instead.
func TestForgedBundleInStoreRefused(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := startRepo(t, db, repoOpts{})
		if _, err := r.Push(ctx, map[string]string{"p.cedar": adminsReadRoutes}, "", testAdmin); err != nil {
			t.Fatal(err)
		}
		_, cur := r.Bundle()
		_, evil, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		now := r.clock.Now()
		forged, err := authz.SignBundle(authz.BundleContent{Version: cur + 1, PolicyVersion: 99, Issuer: "test", IssuedAt: now, ExpiresAt: now.Add(time.Hour),
			Policies: map[string]string{"all.cedar": "permit (principal, action, resource);"}, Schema: string(SchemaText())}, evil)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(forged)
		if _, err := db.ExecContext(ctx, "INSERT INTO policy_bundles (version, data, created_at) VALUES (?, ?, ?)", cur+1, raw, now.UnixMilli()); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "UPDATE policy_head SET bundle_version = ? WHERE id = 1", cur+1); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, _, err := r.WaitBundle(wctx, cur+1); err != nil {
			t.Fatalf("no fresh bundle after the forged one: %v", err)
		}
		vb := r.verify(t)
		if vb.Manifest.PolicyVersion != 1 || vb.Policies["all.cedar"] != "" {
			t.Fatalf("serving forged content: %+v", vb.Manifest)
		}
		if d := r.decide(authz.Request{Principal: bob, Action: ActionUID("read"), Resource: route}); d.Allowed {
			t.Fatal("the forged permit-all took effect")
		}
	})
}
