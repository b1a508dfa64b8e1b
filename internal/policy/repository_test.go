package policy

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/clocktest"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

// memKeys is an in-memory KeyStore.
type memKeys struct {
	mu   sync.Mutex
	keys map[string][]byte
}

func (m *memKeys) LoadOrCreate(name string, gen func() ([]byte, error)) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := m.keys[name]; ok {
		return k, nil
	}
	k, err := gen()
	if err != nil {
		return nil, err
	}
	if m.keys == nil {
		m.keys = map[string][]byte{}
	}
	m.keys[name] = k
	return k, nil
}

var testAdmin = Actor{Kind: "admin", ID: "cred_test"}

// testRepo is a running repository with its audit log.
type testRepo struct {
	*Repository
	log   *audit.Log
	clock *clocktest.Clock
}

type repoOpts struct {
	keys  *memKeys
	clock *clocktest.Clock
	log   *audit.Log
	ttl   time.Duration
	reg   *prometheus.Registry
}

// startRepo makes a repository on db and runs it until the test ends.
func startRepo(t testing.TB, db *store.DB, o repoOpts) *testRepo {
	t.Helper()
	if o.keys == nil {
		o.keys = &memKeys{}
	}
	if o.clock == nil {
		o.clock = &clocktest.Clock{}
	}
	if o.log == nil {
		o.log = audittest.Start(t, db)
	}
	if o.reg == nil {
		o.reg = prometheus.NewRegistry()
	}
	r, err := NewRepository(context.Background(), RepositoryConfig{Issuer: "test", BundleTTL: o.ttl, PollInterval: 20 * time.Millisecond},
		RepositoryDeps{DB: db, Audit: o.log, Keys: o.keys, Now: o.clock.Now, Metrics: o.reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &testRepo{Repository: r, log: o.log, clock: o.clock}
}

const (
	adminsReadRoutes = `@id("admins-read-routes")
permit (principal in Bulwark::Role::"admin", action == Bulwark::Action::"read", resource is Bulwark::Route);
`
	usersWriteRoutes = `@id("users-write-routes")
permit (principal is Bulwark::User, action == Bulwark::Action::"write", resource is Bulwark::Route);
`
	// syntaxError fails to parse on line 2.
	syntaxError = "// broken\npermit (principal, action, resource) when { 1 + };\n"
	// typeError compares a String with a Long, on line 3.
	typeError  = "// types\n\n@id(\"bad-type\")\npermit (principal, action == Bulwark::Action::\"read\", resource is Bulwark::Route) when { resource.method > 3 };\n"
	aliceAdmin = `[{"uid":{"type":"Bulwark::User","id":"alice"},"parents":[{"type":"Bulwark::Role","id":"admin"}],"attrs":{}},
	 {"uid":{"type":"Bulwark::Role","id":"admin"},"parents":[],"attrs":{}}]`
)

var (
	alice     = cedar.NewEntityUID("Bulwark::User", "alice")
	bob       = cedar.NewEntityUID("Bulwark::User", "bob")
	route     = cedar.NewEntityUID("Bulwark::Route", "r1")
	readRoute = authz.Request{Principal: alice, Action: ActionUID("read"), Resource: route}
)

func (r *testRepo) decide(req authz.Request) authz.Decision {
	return r.Snapshot().Evaluator.Decide(req)
}

// verify checks the current bundle with the repository's public keys.
func (r *testRepo) verify(t testing.TB) *authz.VerifiedBundle {
	t.Helper()
	raw, v := r.Bundle()
	trusted := map[string]ed25519.PublicKey{}
	for _, k := range r.PublicKeys() {
		trusted[authz.KeyID(k)] = k
	}
	vb, err := authz.VerifyBundle(raw, trusted, r.clock.Now(), 0)
	if err != nil {
		t.Fatalf("verify bundle %d: %v", v, err)
	}
	if vb.Manifest.Version != v || r.Snapshot().BundleVersion != v {
		t.Fatalf("bundle version %d, manifest %d, snapshot %d", v, vb.Manifest.Version, r.Snapshot().BundleVersion)
	}
	return vb
}

// lastEvent returns the newest audit event.
func (r *testRepo) lastEvent(t testing.TB) audit.Event {
	t.Helper()
	evs := audittest.Events(t, r.log)
	if len(evs) == 0 {
		t.Fatal("no audit events")
	}
	return evs[len(evs)-1]
}

func TestPushAndDecide(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		reg := prometheus.NewRegistry()
		r := startRepo(t, db, repoOpts{reg: reg})
		if _, v := r.Bundle(); v != 1 {
			t.Fatalf("first bundle version %d, want 1", v)
		}
		if d := r.decide(readRoute); d.Allowed || d.BundleVersion != 1 {
			t.Fatalf("before any push: %+v", d)
		}
		if _, _, err := r.Active(ctx); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Active before a push: %v", err)
		}
		if v, err := r.PutEntities(ctx, []byte(aliceAdmin), false, testAdmin); err != nil || v != 1 {
			t.Fatalf("PutEntities: %d %v", v, err)
		}
		files := map[string]string{"admins.cedar": adminsReadRoutes, "users.cedar": usersWriteRoutes}
		info, err := r.Push(ctx, files, "first", testAdmin)
		if err != nil {
			t.Fatal(err)
		}
		if info.Version != 1 || info.Policies != 2 || !info.Active || info.Author != "admin:cred_test" || info.Comment != "first" || len(info.Digest) != 64 {
			t.Fatalf("push: %+v", info)
		}
		_, bv := r.Bundle()
		if info.BundleVersion != bv || bv != 3 {
			t.Fatalf("push bundle version %d, current %d, want 3", info.BundleVersion, bv)
		}
		d := r.decide(readRoute)
		if !d.Allowed || !slices.Equal(d.Reasons, []string{"admins-read-routes"}) || d.BundleVersion != bv {
			t.Fatalf("after push: %+v", d)
		}
		if d := r.decide(authz.Request{Principal: bob, Action: ActionUID("read"), Resource: route}); d.Allowed {
			t.Fatalf("bob is no admin: %+v", d)
		}
		vb := r.verify(t)
		if vb.Manifest.PolicyVersion != 1 || vb.Manifest.EntitiesVersion != 1 || vb.Manifest.Issuer != "test" ||
			!maps.Equal(vb.Policies, files) || vb.Schema != string(SchemaText()) {
			t.Fatalf("manifest %+v", vb.Manifest)
		}
		if got := vb.Manifest.ExpiresAt.Sub(vb.Manifest.IssuedAt); got != DefaultBundleTTL {
			t.Fatalf("bundle lifetime %s", got)
		}
		// The embedded evaluator built from the bundle agrees.
		ev, err := authz.NewEvaluatorFromBundle(vb)
		if err != nil {
			t.Fatal(err)
		}
		if e := ev.Decide(readRoute); !e.Allowed || !slices.Equal(e.Reasons, d.Reasons) {
			t.Fatalf("embedded: %+v", e)
		}
		active, got, err := r.Active(ctx)
		if err != nil || active.Version != 1 || !maps.Equal(got, files) {
			t.Fatalf("Active: %+v %v", active, err)
		}
		list, err := r.Versions(ctx)
		if err != nil || len(list) != 1 || !list[0].Active || list[0].Digest != info.Digest {
			t.Fatalf("Versions: %+v %v", list, err)
		}
		ev2 := r.lastEvent(t)
		if ev2.ClassUID != 3004 || ev2.ActivityID != 1 || ev2.StatusID != audit.StatusSuccess || len(ev2.Resources) != 1 ||
			ev2.Resources[0].Type != "policy_set" || ev2.Resources[0].UID != "1" || ev2.Unmapped["digest"] != info.Digest ||
			ev2.Unmapped["comment"] != "first" || ev2.Actor == nil || ev2.Actor.User == nil || ev2.Actor.User.UID != "cred_test" {
			t.Fatalf("push event %+v", ev2)
		}
		// The key creation and the entity change were audited too.
		var kinds []string
		for _, e := range audittest.Events(t, r.log) {
			kinds = append(kinds, e.Resources[0].Type)
		}
		if !slices.Equal(kinds, []string{"policy_bundle_key", "policy_entity", "policy_set"}) {
			t.Fatalf("audit events %v", kinds)
		}
		// An empty set is legal and denies everything; a nil one is not.
		if _, err := r.Push(ctx, map[string]string{}, "", testAdmin); err != nil {
			t.Fatal(err)
		}
		if d := r.decide(readRoute); d.Allowed {
			t.Fatalf("empty set: %+v", d)
		}
		if _, err := r.Push(ctx, nil, "", testAdmin); !errors.Is(err, ErrInvalid) {
			t.Fatalf("nil files: %v", err)
		}
		_, bv = r.Bundle()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(`
# HELP bulwark_policy_bundle_version Version of the current signed policy bundle.
# TYPE bulwark_policy_bundle_version gauge
bulwark_policy_bundle_version %d
# HELP bulwark_policy_changes_total Changes to the policy repository, by kind (push, rollback, entities) and result (ok, refused, error).
# TYPE bulwark_policy_changes_total counter
bulwark_policy_changes_total{kind="entities",result="ok"} 1
bulwark_policy_changes_total{kind="push",result="ok"} 2
bulwark_policy_changes_total{kind="push",result="refused"} 1
`, bv)), "bulwark_policy_bundle_version", "bulwark_policy_changes_total"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPushInvalidChangesNothing(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := startRepo(t, db, repoOpts{})
		if _, err := r.Push(ctx, map[string]string{"admins.cedar": adminsReadRoutes}, "", testAdmin); err != nil {
			t.Fatal(err)
		}
		rawBefore, vBefore := r.Bundle()
		snapBefore := r.Snapshot()
		tests := []struct {
			name  string
			files map[string]string
			want  []string // problem prefixes, in order
		}{
			{"syntax and type errors", map[string]string{"a.cedar": syntaxError, "b.cedar": typeError, "ok.cedar": usersWriteRoutes},
				[]string{"a.cedar:2:", "b.cedar:3:1: policy \"bad-type\""}},
			{"duplicate id", map[string]string{"a.cedar": adminsReadRoutes, "b.cedar": adminsReadRoutes},
				[]string{"b.cedar:1:1: duplicate policy id"}},
			{"path in name", map[string]string{"../etc.cedar": usersWriteRoutes}, []string{`"../etc.cedar": file name must be`}},
			{"wrong extension", map[string]string{"x.txt": usersWriteRoutes}, []string{`"x.txt": file name must end`}},
			{"too large", map[string]string{"big.cedar": strings.Repeat(" ", MaxFileSize+1)}, []string{"big.cedar: file larger"}},
		}
		for _, tt := range tests {
			_, err := r.Push(ctx, tt.files, "", testAdmin)
			var le *LoadError
			if !errors.As(err, &le) || len(le.Problems) != len(tt.want) {
				t.Fatalf("%s: %v", tt.name, err)
			}
			for i, p := range le.Problems {
				if !strings.HasPrefix(p.String(), tt.want[i]) {
					t.Errorf("%s: problem %d = %q, want prefix %q", tt.name, i, p, tt.want[i])
				}
			}
			ev := r.lastEvent(t)
			if ev.StatusID != audit.StatusFailure || ev.StatusDetail != fmt.Sprintf("%d problems", len(tt.want)) || ev.Unmapped["problems"] == nil {
				t.Errorf("%s: refusal event %+v", tt.name, ev)
			}
		}
		raw, v := r.Bundle()
		if v != vBefore || string(raw) != string(rawBefore) || r.Snapshot() != snapBefore {
			t.Fatal("a refused push changed the bundle")
		}
		if list, _ := r.Versions(ctx); len(list) != 1 {
			t.Fatalf("versions %+v", list)
		}
		if d := r.decide(authz.Request{Principal: alice, Action: ActionUID("write"), Resource: route}); d.Allowed {
			t.Fatal("a refused push's policy took effect")
		}
	})
}

func TestRollback(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		r := startRepo(t, db, repoOpts{})
		if _, err := r.Rollback(ctx, 0, testAdmin); !errors.Is(err, ErrInvalid) {
			t.Fatalf("rollback with no versions: %v", err)
		}
		a := map[string]string{"p.cedar": adminsReadRoutes}
		b := map[string]string{"p.cedar": usersWriteRoutes}
		for _, files := range []map[string]string{a, b} {
			if _, err := r.Push(ctx, files, "", testAdmin); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := r.PutEntities(ctx, []byte(aliceAdmin), false, testAdmin); err != nil {
			t.Fatal(err)
		}
		info, err := r.Rollback(ctx, 0, testAdmin)
		if err != nil || info.Version != 3 || info.RollbackOf != 1 {
			t.Fatalf("rollback: %+v %v", info, err)
		}
		if _, files, _ := r.Active(ctx); !maps.Equal(files, a) {
			t.Fatalf("rolled back files %v", files)
		}
		if d := r.decide(readRoute); !d.Allowed || r.Snapshot().PolicyVersion != 3 {
			t.Fatalf("after rollback: %+v", d)
		}
		ev := r.lastEvent(t)
		if ev.ActivityID != 3 || ev.Resources[0].UID != "3" || fmt.Sprint(ev.Unmapped["rollback_of"]) != "1" {
			t.Fatalf("rollback event %+v", ev)
		}
		info, err = r.Rollback(ctx, 2, testAdmin)
		if err != nil || info.Version != 4 || info.RollbackOf != 2 {
			t.Fatalf("rollback --to 2: %+v %v", info, err)
		}
		if _, files, _ := r.Active(ctx); !maps.Equal(files, b) {
			t.Fatalf("rolled back files %v", files)
		}
		if _, err := r.Rollback(ctx, 99, testAdmin); !errors.Is(err, ErrNotFound) {
			t.Fatalf("rollback to a missing version: %v", err)
		}
		if _, err := r.Rollback(ctx, 4, testAdmin); !errors.Is(err, ErrInvalid) {
			t.Fatalf("rollback to the active version: %v", err)
		}
		list, err := r.Versions(ctx)
		if err != nil || len(list) != 4 {
			t.Fatalf("versions %+v %v", list, err)
		}
		for i, v := range list {
			if v.Version != int64(i+1) || v.Active != (i == 3) {
				t.Fatalf("versions %+v", list)
			}
		}
	})
}

// TestConcurrentPushesFromTwoReplicas pushes from two repositories sharing
// one database: every push gets its own version, and each replica ends up
// serving the newest bundle, signed by either one's key.
func TestConcurrentPushesFromTwoReplicas(t *testing.T) {
	t.Parallel()
	for _, d := range storetest.Backends {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			opts := storetest.Options(t, d)
			var repos [2]*testRepo
			for i := range repos {
				db, err := store.Open(context.Background(), opts)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				repos[i] = startRepo(t, db, repoOpts{})
			}
			const perReplica = 5
			var wg sync.WaitGroup
			versions := make(chan int64, 2*perReplica)
			errs := make(chan error, 2*perReplica)
			for i, r := range repos {
				for j := range perReplica {
					wg.Add(1)
					go func() {
						defer wg.Done()
						info, err := r.Push(context.Background(), map[string]string{"p.cedar": adminsReadRoutes},
							fmt.Sprintf("replica %d push %d", i, j), testAdmin)
						if err != nil {
							errs <- err
							return
						}
						versions <- info.Version
					}()
				}
			}
			wg.Wait()
			close(versions)
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			got := slices.Sorted(func(yield func(int64) bool) {
				for v := range versions {
					if !yield(v) {
						return
					}
				}
			})
			for i, v := range got {
				if v != int64(i+1) {
					t.Fatalf("versions %v, want 1..%d once each", got, 2*perReplica)
				}
			}
			// Both replicas converge on the newest bundle and trust both keys.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				_, v0 := repos[0].Bundle()
				_, v1 := repos[1].Bundle()
				if v0 == v1 && len(repos[0].PublicKeys()) == 2 && len(repos[1].PublicKeys()) == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("replicas at bundles %d and %d", v0, v1)
				}
			}
			for _, r := range repos {
				if vb := r.verify(t); vb.Manifest.PolicyVersion != 2*perReplica {
					t.Fatalf("policy version %d", vb.Manifest.PolicyVersion)
				}
			}
		})
	}
}

func TestNewRepositoryRefusesBadDeps(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	log := audittest.Start(t, db)
	tests := []struct {
		name string
		cfg  RepositoryConfig
		deps RepositoryDeps
	}{
		{"no store", RepositoryConfig{}, RepositoryDeps{Audit: log, Keys: &memKeys{}}},
		{"no audit", RepositoryConfig{}, RepositoryDeps{DB: db, Keys: &memKeys{}}},
		{"no keys", RepositoryConfig{}, RepositoryDeps{DB: db, Audit: log}},
		{"negative ttl", RepositoryConfig{BundleTTL: -time.Second}, RepositoryDeps{DB: db, Audit: log, Keys: &memKeys{}}},
		{"tiny ttl", RepositoryConfig{BundleTTL: time.Millisecond}, RepositoryDeps{DB: db, Audit: log, Keys: &memKeys{}}},
		{"bad key", RepositoryConfig{}, RepositoryDeps{DB: db, Audit: log, Keys: &memKeys{keys: map[string][]byte{BundleKeyName: []byte("short")}}}},
	}
	for _, tt := range tests {
		if _, err := NewRepository(context.Background(), tt.cfg, tt.deps); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}
