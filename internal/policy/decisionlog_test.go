package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// gatedAudit is the real audit log behind a switch: while closed, every
// append fails as if the audit log were unreachable.
type gatedAudit struct {
	log      *audit.Log
	open     atomic.Bool
	attempts atomic.Int64
}

var errAuditDown = errors.New("audit log unreachable (test)")

func (g *gatedAudit) Append(ctx context.Context, events []*audit.Event) (audit.AppendResult, error) {
	g.attempts.Add(1)
	if !g.open.Load() {
		return audit.AppendResult{}, errAuditDown
	}
	return g.log.Append(ctx, events)
}

// runningLog is a decision log running until stop.
type runningLog struct {
	dl   *decisionLog
	stop func()
}

func runDecisionLog(t *testing.T, cfg decisionLogConfig, app eventAppender, m *decisionLogMetrics) *runningLog {
	t.Helper()
	dl, err := newDecisionLog(cfg, app, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dl.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("decision log Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	waitFor(t, "decision log running", dl.running.Load)
	return &runningLog{dl: dl, stop: stop}
}

// testDecision is a decision record with a unique id.
func testDecision(i int) *decisionRecord {
	return &decisionRecord{ID: fmt.Sprintf("test-%06d", i), Time: time.Now().UnixMilli(), API: APIAuthZEN, Allowed: true,
		PrincipalType: "Bulwark::User", Principal: `Bulwark::User::"alice"`, Action: `Bulwark::Action::"read"`,
		ResourceType: "Bulwark::Account", Resource: `Bulwark::Account::"acc-1"`,
		Reasons: []string{"test"}, Detail: "allow: test", CallerKind: "workload", CallerID: "spiffe://test/pep"}
}

// recordAll records decisions from..to-1 from workers goroutines.
func recordAll(t *testing.T, dl *decisionLog, from, to, workers int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, to-from)
	next := atomic.Int64{}
	next.Store(int64(from))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				if err := dl.Record(context.Background(), testDecision(i)); err != nil {
					errs <- fmt.Errorf("record %d: %w", i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// wantDecisions waits until decisions 0..n-1 (except skip) are all in the
// audit trail, each exactly once, and nothing else.
func wantDecisions(t *testing.T, l *audit.Log, n int, skip map[int]bool) {
	t.Helper()
	want := n - len(skip)
	var got map[string]audit.Event
	waitFor(t, fmt.Sprintf("%d decisions in the audit trail", want), func() bool {
		got = decisionEvents(t, l)
		return len(got) >= want
	})
	if len(got) != want {
		t.Fatalf("audit trail has %d decisions, want %d", len(got), want)
	}
	for i := range n {
		id := fmt.Sprintf("test-%06d", i)
		if _, ok := got[id]; ok == skip[i] {
			t.Errorf("decision %s in the audit trail: %v, want %v", id, ok, !skip[i])
		}
	}
}

func TestDecisionLogDeliversEveryRecordOnce(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		al := audittest.Start(t, db)
		reg := prometheus.NewRegistry()
		m, err := newDecisionLogMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		// Small segments so that rotation and deletion happen.
		rl := runDecisionLog(t, decisionLogConfig{Dir: t.TempDir(), BatchSize: 50, SegmentBytes: 8 << 10}, al, m)
		const n = 600
		recordAll(t, rl.dl, 0, n, 16)
		wantDecisions(t, al, n, nil)
		waitFor(t, "pending records to reach 0", func() bool { return testutil.ToFloat64(m.pending) == 0 })
		if got := testutil.ToFloat64(m.shipped); got != n {
			t.Errorf("shipped metric = %v, want %d", got, n)
		}
		segs, err := rl.dl.listSegments()
		if err != nil {
			t.Fatal(err)
		}
		if len(segs) > 2 {
			t.Errorf("%d segments left after everything was shipped, want shipped segments deleted", len(segs))
		}
	})
}

func TestDecisionLogKeepsRecordsWhileAuditIsDown(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	gate := &gatedAudit{log: audittest.Start(t, db)}
	m, err := newDecisionLogMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rl := runDecisionLog(t, decisionLogConfig{Dir: t.TempDir(), BatchSize: 64}, gate, m)
	const n = 300
	// Every record is accepted (durably spooled) although nothing can be
	// shipped: decisions do not wait for the audit log.
	recordAll(t, rl.dl, 0, n, 8)
	waitFor(t, "a failed ship attempt", func() bool { return testutil.ToFloat64(m.shipErrors) > 0 })
	if got := len(decisionEvents(t, gate.log)); got != 0 {
		t.Fatalf("%d decisions shipped while the audit log was down", got)
	}
	if got := testutil.ToFloat64(m.pending); got != n {
		t.Errorf("pending = %v, want %d", got, n)
	}
	gate.open.Store(true)
	wantDecisions(t, gate.log, n, nil)
}

func TestDecisionLogRestartDeliversSpooledRecords(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		al := audittest.Start(t, db)
		dir := t.TempDir()
		down := &gatedAudit{log: al}
		first := runDecisionLog(t, decisionLogConfig{Dir: dir, BatchSize: 32}, down, nil)
		const n = 200
		recordAll(t, first.dl, 0, n, 8)
		first.stop()
		if err := first.dl.Record(context.Background(), testDecision(n)); !errors.Is(err, ErrDecisionLogClosed) {
			t.Fatalf("record after stop: %v, want ErrDecisionLogClosed", err)
		}
		if got := len(decisionEvents(t, al)); got != 0 {
			t.Fatalf("%d decisions shipped while the audit log was down", got)
		}
		// A new process on the same spool delivers them all.
		runDecisionLog(t, decisionLogConfig{Dir: dir, BatchSize: 32}, al, nil)
		wantDecisions(t, al, n, nil)
	})
}

func TestDecisionLogSpoolFullRefusesInsteadOfDropping(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	gate := &gatedAudit{log: audittest.Start(t, db)}
	m, err := newDecisionLogMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rl := runDecisionLog(t, decisionLogConfig{Dir: t.TempDir(), MaxBytes: 16 << 10, BatchSize: 16}, gate, m)
	accepted := 0
	var fullErr error
	for i := range 10_000 {
		if err := rl.dl.Record(context.Background(), testDecision(i)); err != nil {
			fullErr = err
			break
		}
		accepted++
	}
	if !errors.Is(fullErr, ErrSpoolFull) {
		t.Fatalf("record into a full spool: %v, want ErrSpoolFull", fullErr)
	}
	if accepted == 0 {
		t.Fatal("no record accepted")
	}
	if got := testutil.ToFloat64(m.spoolFull); got != 1 {
		t.Errorf("spool full metric = %v, want 1", got)
	}
	// Nothing accepted was dropped: it is all delivered once the audit log
	// is back, and the spool accepts records again.
	gate.open.Store(true)
	wantDecisions(t, gate.log, accepted, nil)
	waitFor(t, "the spool to accept records again", func() bool {
		return rl.dl.Record(context.Background(), testDecision(accepted)) == nil
	})
}

func TestDecisionLogTornTailIsSkipped(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	al := audittest.Start(t, db)
	dir := t.TempDir()
	first := runDecisionLog(t, decisionLogConfig{Dir: dir}, &gatedAudit{log: al}, nil)
	const n = 20
	for i := range n { // in order: the last one is the torn one
		if err := first.dl.Record(context.Background(), testDecision(i)); err != nil {
			t.Fatal(err)
		}
	}
	first.stop()
	segs, err := first.dl.listSegments()
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments = %v, %v; want one", segs, err)
	}
	// A crash in the middle of writing the last record.
	path := filepath.Join(dir, segmentName(segs[0]))
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()-7); err != nil {
		t.Fatal(err)
	}
	second := runDecisionLog(t, decisionLogConfig{Dir: dir}, al, nil)
	wantDecisions(t, al, n, map[int]bool{n - 1: true})
	// The spool keeps working after the repair.
	if err := second.dl.Record(context.Background(), testDecision(n)); err != nil {
		t.Fatal(err)
	}
	waitDecisionEvent(t, al, fmt.Sprintf("test-%06d", n))
}

func TestDecisionLogCorruptRecordIsNotShipped(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	al := audittest.Start(t, db)
	dir := t.TempDir()
	first := runDecisionLog(t, decisionLogConfig{Dir: dir}, &gatedAudit{log: al}, nil)
	const n = 10
	for i := range n {
		if err := first.dl.Record(context.Background(), testDecision(i)); err != nil {
			t.Fatal(err)
		}
	}
	first.stop()
	segs, _ := first.dl.listSegments()
	path := filepath.Join(dir, segmentName(segs[0]))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-3] ^= 0xff // flip a byte of the last record's payload: its CRC no longer matches
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	runDecisionLog(t, decisionLogConfig{Dir: dir}, al, nil)
	wantDecisions(t, al, n, map[int]bool{n - 1: true})
}

func TestDecisionLogRepairsRecordsTheAuditLogRefuses(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	al := audittest.Start(t, db)
	rl := runDecisionLog(t, decisionLogConfig{Dir: t.TempDir()}, al, nil)
	bad := testDecision(0)
	bad.Time = time.Now().Add(48 * time.Hour).UnixMilli() // a skewed clock: the audit log refuses it
	for _, ev := range []*decisionRecord{bad, testDecision(1)} {
		if err := rl.dl.Record(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	// The good record behind it is not blocked, and the refused one is
	// replaced by a minimal record that keeps its decision id.
	waitDecisionEvent(t, al, "test-000001")
	var repaired *audit.Event
	waitFor(t, "the repaired record", func() bool {
		for _, ev := range audittest.Events(t, al) {
			if ev.Message == repairedMessage {
				repaired = &ev
				return true
			}
		}
		return false
	})
	if repaired.Unmapped["decision_id"] != "test-000000" || repaired.StatusID != audit.StatusSuccess {
		t.Errorf("repaired record = %+v", repaired)
	}
}

func TestDecisionRecordRoundTrip(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", `quote " and \\ backslash`, "ctl \x00\x01\x1f\n", "unicode é 日本 \u2028", strings.Repeat("x", 300)} {
		in := testDecision(1)
		in.Principal, in.Refusal, in.Reasons, in.Errors, in.Time, in.BundleVersion = s, s, []string{s, "x"}, nil, -5, 1<<40
		raw := in.appendBinary(nil)
		var out decisionRecord
		if err := out.decodeBinary(raw); err != nil {
			t.Fatalf("%q: does not decode: %v", s, err)
		}
		in.Errors = []string{}
		if !reflect.DeepEqual(&out, in) {
			t.Errorf("%q: round trip = %+v, want %+v", s, out, *in)
		}
		// Every truncation and any trailing byte is refused, never a panic.
		for n := range raw {
			if err := new(decisionRecord).decodeBinary(raw[:n]); err == nil {
				t.Errorf("%q: truncated to %d bytes decodes", s, n)
			}
		}
		if err := new(decisionRecord).decodeBinary(append(raw, 0)); err == nil {
			t.Errorf("%q: trailing byte accepted", s)
		}
	}
}

func FuzzDecisionRecordDecode(f *testing.F) {
	f.Add(testDecision(1).appendBinary(nil))
	f.Add([]byte{recordFormat, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, p []byte) {
		var r decisionRecord
		if err := r.decodeBinary(p); err != nil {
			return
		}
		if again := r.appendBinary(nil); !bytes.Equal(again, p) {
			t.Fatalf("decoded record re-encodes differently: %x vs %x", again, p)
		}
	})
}
