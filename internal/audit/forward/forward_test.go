package forward_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/forward"
	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/spool"
)

// controlPlane is a control plane running in-process.
type controlPlane struct {
	srv  *controlplane.Server
	stop func()
}

func startControlPlane(t *testing.T, cfg config.Config) *controlPlane {
	t.Helper()
	cfg.ResolvePaths()
	srv, err := controlplane.New(context.Background(), &cfg, nil)
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	cp := &controlPlane{srv: srv, stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("control plane run: %v", err)
			}
		})
	}}
	t.Cleanup(cp.stop)
	return cp
}

func event(i int) *audit.Event {
	return &audit.Event{ClassUID: 3002, ActivityID: 1, StatusID: audit.StatusFailure,
		Message:  fmt.Sprintf("authentication failure %d", i),
		Metadata: audit.Metadata{Product: "bulwark gateway test"}}
}

func runForwarder(t *testing.T, f *forward.Forwarder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("forwarder run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNothingLostWhileControlPlaneDown sends events while the control
// plane is stopped, restarts the forwarder in between, then starts the
// control plane and counts the events in the audit log by metadata.uid.
func TestNothingLostWhileControlPlaneDown(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"

	// First start: creates the CA and the admin credential, and picks a
	// port; then the control plane goes down.
	cp := startControlPlane(t, cfg)
	credential := cp.srv.NewAdminCredential
	u, err := url.Parse(cp.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = u.Host
	caPEM, err := os.ReadFile(cp.srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	cp.stop()

	hc, err := audit.NewHTTPClient(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	hc.Timeout = 10 * time.Second
	client, err := audit.NewClient(cp.srv.URL(), hc, credential)
	if err != nil {
		t.Fatal(err)
	}
	fcfg := forward.Config{SpoolDir: t.TempDir(), BatchSize: 7, MaxBackoff: 200 * time.Millisecond}
	reg := prometheus.NewPedanticRegistry()
	fw, err := forward.New(fcfg, forward.Deps{Client: client, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	uids := map[string]bool{}
	stopFw := runForwarder(t, fw)
	for i := range n / 2 {
		e := event(i)
		if err := fw.Send(context.Background(), e); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		uids[e.Metadata.UID] = true
	}
	failures, err := testutil.GatherAndCount(reg, "bulwark_audit_forward_failures_total")
	if err != nil || failures != 1 {
		t.Fatalf("failures metric: %d %v", failures, err)
	}
	waitFor(t, "a failed attempt while the control plane is down", func() bool {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "bulwark_audit_forward_failures_total" {
				return mf.GetMetric()[0].GetCounter().GetValue() > 0
			}
		}
		return false
	})
	// The forwarder process restarts.
	stopFw()
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	fw, err = forward.New(fcfg, forward.Deps{Client: client})
	if err != nil {
		t.Fatalf("reopen forwarder: %v", err)
	}
	t.Cleanup(func() { _ = fw.Close() })
	// A second owner of the same spool is refused.
	if _, err := forward.New(fcfg, forward.Deps{Client: client}); !errors.Is(err, spool.ErrLocked) {
		t.Fatalf("second forwarder on the same spool: %v", err)
	}
	for i := n / 2; i < n; i++ {
		e := event(i)
		if err := fw.Send(context.Background(), e); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		uids[e.Metadata.UID] = true
	}
	if len(uids) != n {
		t.Fatalf("%d distinct uids for %d events", len(uids), n)
	}
	if got := fw.Pending(); got != n {
		t.Fatalf("pending %d, want %d", got, n)
	}
	runForwarder(t, fw)

	// The control plane comes back on the same data directory and port.
	startControlPlane(t, cfg)
	waitFor(t, "the spool to drain", func() bool { return fw.Pending() == 0 })

	seen := map[string]int{}
	for start := int64(0); ; {
		page, err := client.Entries(context.Background(), start, 1000)
		if err != nil {
			t.Fatalf("entries: %v", err)
		}
		for _, e := range page.Entries {
			var ev audit.Event
			if err := json.Unmarshal(e.Event, &ev); err != nil {
				t.Fatalf("entry %d: %v", e.Index, err)
			}
			if uids[ev.Metadata.UID] {
				seen[ev.Metadata.UID]++
			}
		}
		start += int64(len(page.Entries))
		if start >= page.TreeSize || len(page.Entries) == 0 {
			break
		}
	}
	for uid := range uids {
		if seen[uid] != 1 {
			t.Errorf("event %s logged %d times, want once", uid, seen[uid])
		}
	}
}

// fakeAppender is an audit log that is down for the first failures calls,
// and refuses (400) any event whose message is "poison".
type fakeAppender struct {
	mu       sync.Mutex
	failures int
	calls    atomic.Int64
	got      []*audit.Event
}

func (a *fakeAppender) Append(_ context.Context, events []*audit.Event) (*audit.AppendResponse, error) {
	a.calls.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failures > 0 {
		a.failures--
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	for _, e := range events {
		if e.Message == "poison" {
			return nil, &audit.APIError{Method: http.MethodPost, Path: "/v1/audit/events", Status: http.StatusBadRequest, Code: "invalid_event"}
		}
	}
	a.got = append(a.got, events...)
	return &audit.AppendResponse{Count: len(events)}, nil
}

func (a *fakeAppender) messages() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.got {
		out = append(out, e.Message)
	}
	return out
}

func TestRetriesAndSkipsPoison(t *testing.T) {
	t.Parallel()
	app := &fakeAppender{failures: 3}
	fw, err := forward.New(forward.Config{SpoolDir: t.TempDir(), BatchSize: 10, MaxBackoff: 100 * time.Millisecond},
		forward.Deps{Client: app})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fw.Close() })
	evs := []*audit.Event{event(0), event(1), event(2)}
	evs[1].Message = "poison"
	if err := fw.Send(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
	runForwarder(t, fw)
	waitFor(t, "the spool to drain", func() bool { return fw.Pending() == 0 })
	got := app.messages()
	if len(got) != 2 || got[0] != evs[0].Message || got[1] != evs[2].Message {
		t.Fatalf("shipped %q", got)
	}
	if app.calls.Load() < 4 {
		t.Fatalf("%d calls: no retries", app.calls.Load())
	}
}

func TestSendRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		event func() *audit.Event
	}{
		{"unknown class", func() *audit.Event { return &audit.Event{ClassUID: 999999} }},
		{"bad status", func() *audit.Event { e := event(0); e.StatusID = 7; return e }},
		{"payload_ref set by client", func() *audit.Event { e := event(0); e.PayloadRef = &audit.PayloadRef{}; return e }},
		{"far future", func() *audit.Event { e := event(0); e.Time = time.Now().Add(48 * time.Hour).UnixMilli(); return e }},
		{"nil", func() *audit.Event { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fw, err := forward.New(forward.Config{SpoolDir: t.TempDir()}, forward.Deps{Client: &fakeAppender{}})
			if err != nil {
				t.Fatal(err)
			}
			defer fw.Close()
			if err := fw.Send(context.Background(), event(1), tc.event()); err == nil {
				t.Fatal("accepted")
			}
			if fw.Pending() != 0 {
				t.Fatal("a refused call spooled events")
			}
		})
	}
}

func TestSendKeepsUIDAndReportsFull(t *testing.T) {
	t.Parallel()
	fw, err := forward.New(forward.Config{SpoolDir: t.TempDir(), MaxSpoolBytes: 2048}, forward.Deps{Client: &fakeAppender{}})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	e := event(0)
	e.Metadata.UID = "given-uid"
	if err := fw.Send(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if e.Metadata.UID != "given-uid" {
		t.Fatalf("uid replaced: %q", e.Metadata.UID)
	}
	var full error
	for i := range 100 {
		if full = fw.Send(context.Background(), event(i)); full != nil {
			break
		}
	}
	if !errors.Is(full, spool.ErrFull) {
		t.Fatalf("full spool: %v", full)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  forward.Config
		deps forward.Deps
	}{
		{"no dir", forward.Config{}, forward.Deps{Client: &fakeAppender{}}},
		{"no client", forward.Config{SpoolDir: dir}, forward.Deps{}},
		{"batch too large", forward.Config{SpoolDir: dir, BatchSize: 1 << 20}, forward.Deps{Client: &fakeAppender{}}},
		{"negative batch", forward.Config{SpoolDir: dir, BatchSize: -1}, forward.Deps{Client: &fakeAppender{}}},
		{"negative backoff", forward.Config{SpoolDir: dir, MaxBackoff: -time.Second}, forward.Deps{Client: &fakeAppender{}}},
		{"negative size", forward.Config{SpoolDir: dir, MaxSpoolBytes: -1}, forward.Deps{Client: &fakeAppender{}}},
	} {
		if f, err := forward.New(tc.cfg, tc.deps); err == nil {
			_ = f.Close()
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
