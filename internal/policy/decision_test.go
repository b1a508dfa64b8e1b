package policy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

// staticSource is a Source with a fixed snapshot.
type staticSource struct{ snap *Snapshot }

func (s staticSource) Snapshot() *Snapshot { return s.snap }

const decisionBankDir = "testdata/bank"

// exampleBankDir holds the reference bank policies of the examples.
var exampleBankDir = filepath.Join("..", "..", "examples", "policies", "bank")

// bankTestFiles reads the *.test.json files of the bank policies.
func bankTestFiles(t testing.TB) map[string]TestFile { return policyTestFiles(t, decisionBankDir) }

// policyTestFiles reads the *.test.json files in dir.
func policyTestFiles(t testing.TB, dir string) map[string]TestFile {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*"+TestExt))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files in %s: %v", dir, err)
	}
	out := map[string]TestFile{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var tf TestFile
		if err := json.Unmarshal(b, &tf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = tf
	}
	return out
}

// bankSource is a Source deciding with the bank reference policies and the
// entities of their test files.
func bankSource(t testing.TB) staticSource {
	t.Helper()
	var entities json.RawMessage
	for _, tf := range bankTestFiles(t) {
		entities = tf.Entities // the test files share one entity set
		break
	}
	return staticSource{snap: policySnapshot(t, decisionBankDir, entities)}
}

// policySnapshot is a snapshot of the policies in dir with entities.
func policySnapshot(t testing.TB, dir string, entities json.RawMessage) *Snapshot {
	t.Helper()
	policies := map[string]string{}
	files, err := filepath.Glob(filepath.Join(dir, "*.cedar"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no policies in %s: %v", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		policies[filepath.Base(f)] = string(b)
	}
	ev, err := authz.NewEvaluator(authz.EvaluatorInput{
		Policies: policies, Schema: string(SchemaText()), Entities: entities, BundleVersion: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &Snapshot{BundleVersion: 7, PolicyVersion: 3, EntitiesVersion: 2, Evaluator: ev}
}

// swapSource is a Source whose snapshot a test replaces.
type swapSource struct{ p atomic.Pointer[Snapshot] }

func (s *swapSource) Snapshot() *Snapshot { return s.p.Load() }

// testService is a running DecisionService with its audit log.
type testService struct {
	svc   *DecisionService
	audit *audit.Log
	db    *store.DB
	spool string
	stop  func()
}

// startService runs a decision service on the bank policies; now nil is
// time.Now.
func startService(t testing.TB, db *store.DB, cfg DecisionConfig, now func() time.Time) *testService {
	t.Helper()
	return startServiceWith(t, db, bankSource(t), cfg, now)
}

// startServiceWith runs a decision service deciding from src.
func startServiceWith(t testing.TB, db *store.DB, src Source, cfg DecisionConfig, now func() time.Time) *testService {
	t.Helper()
	if db == nil {
		db = storetest.Open(t, store.SQLite)
	}
	al := audittest.Start(t, db)
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = filepath.Join(t.TempDir(), "spool")
	}
	svc, err := NewDecisionService(cfg, DecisionDeps{Source: src, Audit: al, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("decision service Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	waitFor(t, "decision log running", func() bool { return svc.dlog.running.Load() })
	return &testService{svc: svc, audit: al, db: db, spool: cfg.SpoolDir, stop: stop}
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// decisionEvents returns the decision events in l, by decision id; it
// fails on a duplicate.
func decisionEvents(t testing.TB, l *audit.Log) map[string]audit.Event {
	t.Helper()
	out := map[string]audit.Event{}
	for _, ev := range audittest.Events(t, l) {
		if ev.Message != "authorization decision" {
			continue
		}
		id, _ := ev.Unmapped["decision_id"].(string)
		if _, dup := out[id]; dup {
			t.Fatalf("decision %s is in the audit trail twice", id)
		}
		out[id] = ev
	}
	return out
}

// waitDecisionEvent waits until the decision with id is in the audit trail.
func waitDecisionEvent(t testing.TB, l *audit.Log, id string) audit.Event {
	t.Helper()
	var ev audit.Event
	waitFor(t, "decision "+id+" in the audit trail", func() bool {
		e, ok := decisionEvents(t, l)[id]
		ev = e
		return ok
	})
	return ev
}

func TestRequestEntityType(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"User", "Bulwark::User"},
		{"user", "Bulwark::User"},
		{"Bulwark::User", "Bulwark::User"},
		{"payment", "Bulwark::Payment"},
		{"Other::Thing", "Other::Thing"},
		{"é", "Bulwark::É"},
	} {
		if got := requestEntityType(tc.in); string(got) != tc.want {
			t.Errorf("requestEntityType(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDefaultRequestContextIsLeastPrivileged(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 13, 4, 5, 0, time.UTC)
	rec := cedar.NewRecord(defaultRequestContext(now))
	want := `{"mfa":false,"region":"","riskScore":100,"time":{"epoch":` +
		`1795352645,"hour":13},"tokenScopes":[],"zone":""}`
	b, err := rec.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.ReplaceAll(string(b), " ", ""); got != want {
		t.Errorf("default context = %s, want %s", got, want)
	}
}

func TestDecisionNeverAnswersUnloggedAllow(t *testing.T) {
	t.Parallel()
	ts := startService(t, nil, DecisionConfig{}, nil)
	in := &decisionInput{api: APIAuthZEN,
		principal: cedar.NewEntityUID("Bulwark::Service", "spiffe://bulwark.local/ns/bank/sa/payments"),
		action:    requestActionUID("call"),
		resource:  cedar.NewEntityUID("Bulwark::Service", "spiffe://bulwark.local/ns/bank/sa/ledger"),
		context:   cedar.NewRecord(defaultRequestContext(time.Now()))}
	if res := ts.svc.decide(context.Background(), in); !res.Allowed {
		t.Fatalf("payments -> ledger denied while the log runs: %+v", res)
	}
	ts.stop() // the spool writer is gone: nothing can be logged
	res := ts.svc.decide(context.Background(), in)
	if res.Allowed || res.Refusal != ReasonLogUnavailable {
		t.Fatalf("decision with the log stopped = %+v, want a deny with %q", res, ReasonLogUnavailable)
	}
}
