// Package bench holds the audit log's benchmarks: durable appends through
// Log.Append on SQLite and PostgreSQL, and inclusion proofs in a
// 1,000,000-entry log. bench/run.sh runs them and checks the targets;
// README.md has the figures and how to reproduce them.
package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

const benchOrigin = "bulwark.bench/audit"

// eventBytes is the canonical size of the benchmark event.
const eventBytes = 1024

// appendCase is one load shape. Closed loop (rate 0): callers goroutines
// each append batch events per Append call, back to back, so the offered
// load is whatever the log sustains. Open loop (rate > 0): an Append of
// batch events starts every batch/rate seconds whether or not earlier ones
// have returned, and its latency counts from when it was due, so a log
// that falls behind shows it (no coordinated omission).
type appendCase struct {
	callers, batch int
	rate           int // events per second
}

func (c appendCase) String() string {
	if c.rate > 0 {
		return fmt.Sprintf("rate=%d/batch=%d", c.rate, c.batch)
	}
	return fmt.Sprintf("callers=%d/batch=%d", c.callers, c.batch)
}

// appendCases are the load shapes of BenchmarkAppend*: single events and
// batches, from many concurrent callers, and at a steady 20,000 events/s.
// The SQLite target (20,000 events/s, p99 ack within 50 ms) applies to
// each.
var appendCases = []appendCase{
	{callers: 64, batch: 1},
	{callers: 256, batch: 1},
	{callers: 16, batch: 16},
	{callers: 4, batch: 128},
	{rate: 20_000, batch: 1},
	{rate: 20_000, batch: 16},
}

// BenchmarkAppendSQLite measures durable appends of 1 KiB events through
// Log.Append on SQLite (WAL, synchronous=FULL). One op is one event.
func BenchmarkAppendSQLite(b *testing.B) {
	for _, c := range appendCases {
		b.Run(c.String(), func(b *testing.B) { benchAppend(b, store.SQLite, c) })
	}
}

// BenchmarkAppendPostgres is BenchmarkAppendSQLite on PostgreSQL (default
// synchronous_commit), each run in a fresh schema.
func BenchmarkAppendPostgres(b *testing.B) {
	for _, c := range appendCases {
		b.Run(c.String(), func(b *testing.B) { benchAppend(b, store.Postgres, c) })
	}
}

func benchAppend(b *testing.B, d store.Driver, c appendCase) {
	reg := prometheus.NewRegistry()
	l := startLog(b, storetest.Open(b, d), audit.Config{}, audit.NewMetrics(reg))
	before := commitStats(b, reg)
	cpu0 := cpuTime()
	b.ResetTimer()
	var r appendRun
	if c.rate > 0 {
		r = runPaced(b, l, c, b.N)
	} else {
		r = runAppends(b, l, c, b.N)
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	after := commitStats(b, reg)
	r.report(b)
	// This process's CPU only: on PostgreSQL the server's is not in it.
	b.ReportMetric(float64(cpu.Microseconds())/float64(r.events), "cpu-µs/event")
	commits := after.count - before.count
	b.ReportMetric(commits, "commits")
	if commits > 0 {
		b.ReportMetric((after.sum-before.sum)/commits, "events/commit")
		b.ReportMetric(1000*(after.seconds-before.seconds)/commits, "commit-ms")
	}
}

// appendRun is the outcome of one load run.
type appendRun struct {
	events  int
	elapsed time.Duration
	lat     []time.Duration // one per Append call, sorted
}

func (r appendRun) eventsPerSec() float64 { return float64(r.events) / r.elapsed.Seconds() }

func (r appendRun) percentile(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(float64(len(r.lat))*p+0.5) - 1
	return r.lat[min(max(i, 0), len(r.lat)-1)]
}

func (r appendRun) report(b *testing.B) {
	b.ReportMetric(r.eventsPerSec(), "events/s")
	b.ReportMetric(ms(r.percentile(0.50)), "p50-ms")
	b.ReportMetric(ms(r.percentile(0.99)), "p99-ms")
	b.ReportMetric(ms(r.lat[len(r.lat)-1]), "max-ms")
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// runAppends appends at least n events with c.callers goroutines calling
// Append with c.batch events each, and times every call.
func runAppends(tb testing.TB, l *audit.Log, c appendCase, n int) appendRun {
	calls := int64((n + c.batch - 1) / c.batch)
	var (
		next  atomic.Int64 // calls handed out
		seq   atomic.Uint64
		wg    sync.WaitGroup
		mu    sync.Mutex
		lat   = make([]time.Duration, 0, calls)
		first error
	)
	ctx := context.Background()
	start := time.Now()
	for range c.callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := make([]time.Duration, 0, calls/int64(c.callers)+1)
			evs := make([]*audit.Event, c.batch)
			for next.Add(1) <= calls {
				for i := range evs {
					evs[i] = benchEvent(seq.Add(1))
				}
				t0 := time.Now()
				_, err := l.Append(ctx, evs)
				own = append(own, time.Since(t0))
				if err != nil {
					mu.Lock()
					first = cmpOr(first, err)
					mu.Unlock()
					return
				}
			}
			mu.Lock()
			lat = append(lat, own...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		tb.Fatalf("append: %v", first)
	}
	slices.Sort(lat)
	return appendRun{events: int(calls) * c.batch, elapsed: elapsed, lat: lat}
}

// runPaced appends at least n events at c.rate events per second, in
// calls of c.batch events, each call in its own goroutine, and times every
// call from the moment it was due.
func runPaced(tb testing.TB, l *audit.Log, c appendCase, n int) appendRun {
	calls := (n + c.batch - 1) / c.batch
	interval := time.Duration(float64(time.Second) * float64(c.batch) / float64(c.rate))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		seq   uint64
	)
	lat := make([]time.Duration, calls)
	ctx := context.Background()
	start := time.Now()
	for i := range calls {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		evs := make([]*audit.Event, c.batch)
		for j := range evs {
			seq++
			evs[j] = benchEvent(seq)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Append(ctx, evs)
			lat[i] = time.Since(due)
			if err != nil {
				mu.Lock()
				first = cmpOr(first, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		tb.Fatalf("append: %v", first)
	}
	slices.Sort(lat)
	return appendRun{events: calls * c.batch, elapsed: elapsed, lat: lat}
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

type histStats struct{ count, sum, seconds float64 }

// commitStats reads the log's entries-per-commit and commit-duration
// histograms.
func commitStats(tb testing.TB, reg *prometheus.Registry) histStats {
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var st histStats
	for _, mf := range mfs {
		switch mf.GetName() {
		case "bulwark_audit_commit_batch_entries":
			h := mf.GetMetric()[0].GetHistogram()
			st.count, st.sum = float64(h.GetSampleCount()), h.GetSampleSum()
		case "bulwark_audit_commit_seconds":
			st.seconds = mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	return st
}

// template is the benchmark event: an OCSF Authentication/Logon with the
// fields Bulwark fills in, padded through Unmapped so that its canonical
// form is exactly eventBytes long. Events differ in metadata.uid and time,
// which have a fixed width, so every event has the same size.
var template = sync.OnceValue(func() audit.Event {
	e := audit.Event{
		ClassUID: 3002, ClassName: "Authentication", ActivityID: 1, ActivityName: "Logon",
		Time: 1_760_000_000_000, SeverityID: 1, StatusID: audit.StatusSuccess, Status: "Success",
		StatusDetail: "password and WebAuthn accepted",
		Message:      "alice@example.com logged on to the admin console",
		Actor: &audit.Actor{
			User:       &audit.User{UID: "usr_01J9Z3K4T7QW2M8X5B6N0PRD4F", Name: "alice@example.com", Type: "User"},
			AppName:    "bulwark-console",
			AppUID:     "spiffe://example.org/ns/prod/sa/console",
			SessionUID: "jti_6b1f0c9a2e7d4f3b8a5c1e0d9f2b7a64",
		},
		SrcEndpoint: &audit.Endpoint{IP: "203.0.113.42", Port: 51724, Hostname: "laptop-4411.corp.example.com"},
		Resources: []audit.Resource{
			{Type: "application", UID: "app_console", Name: "Bulwark admin console"},
		},
		Metadata: audit.Metadata{
			UID:            "evt_0000000000000000",
			CorrelationUID: "req_3f9c2a71b04e4d5f",
			TraceUID:       "4bf92f3577b34da6a3ce929d0e0e4736",
			Product:        "bulwark",
			Version:        audit.OCSFVersion,
		},
		Unmapped: map[string]any{
			"auth_protocol": "OIDC",
			"mfa_factors":   []any{"password", "webauthn"},
			"risk_score":    12,
			"user_agent":    "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0",
			"padding":       "",
		},
	}
	canon, err := e.Canonical()
	if err != nil {
		panic(err)
	}
	if len(canon) > eventBytes {
		panic(fmt.Sprintf("benchmark event is %d bytes before padding", len(canon)))
	}
	e.Unmapped["padding"] = strings.Repeat("x", eventBytes-len(canon))
	return e
})

// benchEvent returns the seq'th benchmark event. It shares the template's
// nested values, which Append only reads.
func benchEvent(seq uint64) *audit.Event {
	e := template()
	uid := strconv.FormatUint(seq, 16)
	e.Metadata.UID = "evt_" + strings.Repeat("0", 16-len(uid)) + uid
	e.Time += int64(seq % 1_000_000)
	return &e
}

// startLog runs a Log over db until the benchmark ends.
func startLog(tb testing.TB, db *store.DB, cfg audit.Config, m *audit.Metrics) *audit.Log {
	tb.Helper()
	l := newLog(tb, db, cfg, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("log run: %v", err)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); !l.Ready(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatal("log not ready")
		}
	}
	return l
}

var benchKeys = sync.OnceValues(func() (string, string) {
	skey, vkey, err := audit.GenerateSigningKey(benchOrigin)
	if err != nil {
		panic(err)
	}
	return skey, vkey
})

func newLog(tb testing.TB, db *store.DB, cfg audit.Config, m *audit.Metrics) *audit.Log {
	tb.Helper()
	cfg.Origin = benchOrigin
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = time.Hour // a benchmark measures appends, not signing
	}
	skey, vkey := benchKeys()
	l, err := audit.New(cfg, audit.Deps{DB: db, SignerKey: skey, VerifierKey: vkey, Metrics: m})
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// proofLogSize is the tree size of BenchmarkInclusionProof1M.
const proofLogSize = 1_000_000

// buildLog returns a Log of n small entries appended through
// Log.AppendEntries, in large batches from a few concurrent callers, on a
// fresh database that lives as long as tb; and how long the appends took.
func buildLog(tb testing.TB, d store.Driver, n int) (*store.DB, *audit.Log, time.Duration) {
	tb.Helper()
	db := storetest.Open(tb, d)
	l := startLog(tb, db, audit.Config{CommitBatch: 1 << 16}, nil)
	start := time.Now()
	if err := fill(l, n); err != nil {
		tb.Fatalf("build a %d-entry log: %v", n, err)
	}
	return db, l, time.Since(start)
}

// fill appends n entries of 16 bytes in batches of 16384 from 4 callers.
func fill(l *audit.Log, n int) error {
	const batch, callers = 1 << 14, 4
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, callers)
	)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := next.Add(batch) - batch
				if lo >= int64(n) {
					return
				}
				hi := min(lo+batch, int64(n))
				data := make([][]byte, hi-lo)
				for i := range data {
					data[i] = fmt.Appendf(nil, "entry %010d", lo+int64(i))
				}
				if _, err := l.AppendEntries(context.Background(), data); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// BenchmarkInclusionProof1M measures Log.InclusionProof of a random entry in
// a 1,000,000-entry tree. "warm" asks the Log that built the tree (its hash
// cache holds the upper levels); "restarted" asks a new Log over the same
// database, as after a process restart, whose cache starts empty. The tree
// is built once per backend and process, in a temporary database.
func BenchmarkInclusionProof1M(b *testing.B) {
	for _, d := range []store.Driver{store.SQLite, store.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			db, built, took := buildLog(b, d, proofLogSize)
			b.Run("warm", func(b *testing.B) {
				benchProofs(b, built)
				b.ReportMetric(took.Seconds(), "build-s")
			})
			b.Run("restarted", func(b *testing.B) {
				benchProofs(b, newLog(b, db, audit.Config{}, nil))
			})
		})
	}
}

func benchProofs(b *testing.B, l *audit.Log) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for b.Loop() {
		if _, err := l.InclusionProof(ctx, rng.Int64N(proofLogSize), proofLogSize); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "proof-µs")
}

// TestHarness checks the harness at a small scale: the event has the
// advertised size, a load run counts every event and times every call, and
// a built log proves its entries.
func TestHarness(t *testing.T) {
	t.Parallel()
	canon, err := benchEvent(42).Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if len(canon) != eventBytes {
		t.Fatalf("benchmark event is %d bytes, want %d", len(canon), eventBytes)
	}
	if c2, _ := benchEvent(1 << 40).Canonical(); len(c2) != eventBytes {
		t.Fatalf("benchmark events vary in size: %d", len(c2))
	}
	if _, err := audit.DecodeEvent(canon); err != nil {
		t.Fatalf("benchmark event does not decode: %v", err)
	}

	reg := prometheus.NewRegistry()
	l := startLog(t, storetest.Open(t, store.SQLite), audit.Config{}, audit.NewMetrics(reg))
	r := runAppends(t, l, appendCase{callers: 8, batch: 3}, 200)
	if r.events != 201 || len(r.lat) != 67 {
		t.Fatalf("run counted %d events in %d calls, want 201 in 67", r.events, len(r.lat))
	}
	if size, err := l.Size(context.Background()); err != nil || size != 201 {
		t.Fatalf("log size %d, %v", size, err)
	}
	if st := commitStats(t, reg); st.sum != 201 || st.count < 1 {
		t.Fatalf("commit histogram %+v", st)
	}
	if r.percentile(0.99) < r.percentile(0.5) || r.eventsPerSec() <= 0 {
		t.Fatalf("run %+v", r)
	}
	p := runPaced(t, l, appendCase{rate: 20_000, batch: 2}, 100)
	if p.events != 100 || len(p.lat) != 50 || p.elapsed < 4*time.Millisecond {
		t.Fatalf("paced run counted %d events in %d calls in %s, want 100 in 50 in at least 4.9ms", p.events, len(p.lat), p.elapsed)
	}

	const n = 5_000
	db, bl, _ := buildLog(t, store.SQLite, n)
	ck, err := bl.IssueCheckpoint(context.Background())
	if err != nil || ck.Size != n {
		t.Fatalf("checkpoint %+v, %v", ck, err)
	}
	fresh := newLog(t, db, audit.Config{}, nil)
	for _, i := range []int64{0, 1, 2345, n - 1} {
		for _, l := range []*audit.Log{bl, fresh} {
			p, err := l.InclusionProof(context.Background(), i, n)
			if err != nil {
				t.Fatal(err)
			}
			es, err := l.Entries(context.Background(), i, 1)
			if err != nil || len(es) != 1 {
				t.Fatalf("entry %d: %v", i, err)
			}
			leaf := tlog.RecordHash(es[0].Data)
			if err := tlog.CheckRecord(p, n, ck.Root, i, leaf); err != nil {
				t.Fatalf("proof of %d: %v", i, err)
			}
		}
	}
}
