package workload_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/workload"
)

// denyServer serves GET /v1/ca/denylist over TLS in the control plane's
// answer format from a scripted list: the first failures requests get a
// 500, then each answer holds the entries after the asked sequence number
// (an empty answer after a short hold when there are none).
type denyServer struct {
	srv      *httptest.Server
	failures atomic.Int64
	mu       sync.Mutex
	entries  []ca.DenyEntryJSON
	afters   []int64
	waits    []string
}

func newDenyServer(t *testing.T, failures int64, entries []ca.DenyEntryJSON) *denyServer {
	t.Helper()
	d := &denyServer{entries: entries}
	d.failures.Store(failures)
	d.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != ca.PathDenyList {
			http.NotFound(w, r)
			return
		}
		if d.failures.Add(-1) >= 0 {
			http.Error(w, `{"error":{"code":"internal","message":"down"}}`, http.StatusInternalServerError)
			return
		}
		after, err := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
		if err != nil {
			http.Error(w, "bad after", http.StatusBadRequest)
			return
		}
		d.mu.Lock()
		d.afters = append(d.afters, after)
		d.waits = append(d.waits, r.URL.Query().Get("wait"))
		ans := ca.DenyListAnswer{Entries: []ca.DenyEntryJSON{}, Next: after}
		for _, e := range d.entries {
			if e.Seq > after {
				ans.Entries = append(ans.Entries, e)
				ans.Next = max(ans.Next, e.Seq)
			}
		}
		d.mu.Unlock()
		if len(ans.Entries) == 0 {
			select { // a short long poll
			case <-r.Context().Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ans)
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *denyServer) add(e ca.DenyEntryJSON) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.entries = append(d.entries, e)
}

// runDenyList follows the deny list served through cp until the test
// ends; the returned function stops it and fails the test if Run does not
// return promptly. It then closes cp's idle connections.
func runDenyList(t *testing.T, cp workload.ControlPlane) (*workload.DenyList, func()) {
	t.Helper()
	dl, err := workload.NewDenyList(cp, nil)
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
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Run did not return after its context ended")
			}
			if c, ok := cp.(interface{ CloseIdleConnections() }); ok {
				c.CloseIdleConnections()
			}
		})
	}
	t.Cleanup(stop)
	return dl, stop
}

// client returns a control plane client of d without a client certificate.
func (d *denyServer) client(t *testing.T) workload.ControlPlane {
	t.Helper()
	cp, err := workload.NewControlPlane(d.srv.URL, d.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)(nil)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func TestDenyListFollowsEntries(t *testing.T) {
	t.Parallel()
	quarantined := spiffeid.RequireFromString("spiffe://bank.test/ns/bank/sa/payments")
	other := spiffeid.RequireFromString("spiffe://bank.test/ns/bank/sa/accounts")
	type check struct {
		id     spiffeid.ID
		serial string
		want   bool
	}
	for _, tc := range []struct {
		name     string
		failures int64
		entries  []ca.DenyEntryJSON
		checks   []check
	}{
		{
			name: "SPIFFE ID and serials in any hex form",
			entries: []ca.DenyEntryJSON{
				{Seq: 1, Kind: "spiffe_id", Value: quarantined.String(), Reason: "quarantine"},
				{Seq: 2, Kind: "serial", Value: "0x00AB:CD", Reason: "key compromise"},
			},
			checks: []check{
				{quarantined, "", true},
				{quarantined, "1234", true},
				{other, "abcd", true},
				{other, "AB:CD", true},
				{other, "0abcd", true},
				{other, "abce", false},
				{other, "", false},
			},
		},
		{
			name: "malformed and unknown entries are skipped, the rest applies",
			entries: []ca.DenyEntryJSON{
				{Seq: 1, Kind: "spiffe_id", Value: "not a spiffe id"},
				{Seq: 2, Kind: "serial", Value: "xyz"},
				{Seq: 3, Kind: "ip", Value: "10.0.0.1"},
				{Seq: 4, Kind: "serial", Value: "ff"},
			},
			checks: []check{{other, "ff", true}, {other, "10.0.0.1", false}, {other, "", false}},
		},
		{
			name:     "an unreachable control plane is retried",
			failures: 2,
			entries:  []ca.DenyEntryJSON{{Seq: 7, Kind: "spiffe_id", Value: quarantined.String()}},
			checks:   []check{{quarantined, "", true}, {other, "", false}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDenyServer(t, tc.failures, tc.entries)
			dl, _ := runDenyList(t, d.client(t))
			last := tc.entries[len(tc.entries)-1]
			eventually(t, 10*time.Second, "deny list followed", func() error {
				d.mu.Lock()
				defer d.mu.Unlock()
				for _, a := range d.afters {
					if a >= last.Seq {
						return nil
					}
				}
				return fmt.Errorf("asked after %v", d.afters)
			})
			for _, c := range tc.checks {
				if got := dl.IsDenied(c.id, c.serial); got != c.want {
					t.Errorf("IsDenied(%s, %q) = %v, want %v", c.id, c.serial, got, c.want)
				}
			}
		})
	}
}

func TestDenyListLongPollsForNewEntries(t *testing.T) {
	t.Parallel()
	d := newDenyServer(t, 0, []ca.DenyEntryJSON{{Seq: 1, Kind: "serial", Value: "a1"}})
	dl, stop := runDenyList(t, d.client(t))
	id := spiffeid.RequireFromString("spiffe://bank.test/ns/bank/sa/payments")
	eventually(t, 10*time.Second, "first entry", func() error {
		if !dl.IsDenied(id, "a1") {
			return fmt.Errorf("serial a1 not denied")
		}
		return nil
	})
	if dl.IsDenied(id, "b2") {
		t.Fatal("serial b2 denied before it was listed")
	}
	d.add(ca.DenyEntryJSON{Seq: 2, Kind: "spiffe_id", Value: id.String()})
	eventually(t, 10*time.Second, "later entry", func() error {
		if !dl.IsDenied(id, "b2") {
			return fmt.Errorf("SPIFFE ID not denied")
		}
		return nil
	})
	stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	// Only what is new is asked for, with a long-poll wait.
	for i, a := range d.afters {
		if a > 2 || (i > 0 && a < d.afters[i-1]) {
			t.Fatalf("asked after %v: not increasing up to the last sequence number", d.afters)
		}
		if d.waits[i] == "" || d.waits[i] == "0" {
			t.Fatalf("request %d without a long-poll wait (%q)", i, d.waits[i])
		}
	}
}

// TestDenyListWithControlPlane follows a real control plane's public deny
// list without a client certificate, as `bulwark gateway` does.
func TestDenyListWithControlPlane(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, 0)
	client, err := workload.NewControlPlane(cp.srv.URL(), cp.pool)(nil)
	if err != nil {
		t.Fatal(err)
	}
	dl, _ := runDenyList(t, client)
	ctx := t.Context()
	id := spiffeid.RequireFromString("spiffe://" + cp.srv.CA().TrustDomain().String() + "/ns/bank/sa/payments")
	if dl.IsDenied(id, "") {
		t.Fatal("denied before the quarantine")
	}
	time.Sleep(100 * time.Millisecond) // let Run hold a long poll
	if err := cp.srv.CA().Quarantine(ctx, id, "test quarantine"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "quarantine followed", func() error {
		if !dl.IsDenied(id, "") {
			return fmt.Errorf("%s not denied", id)
		}
		return nil
	})
}

func TestNewDenyListNeedsAClient(t *testing.T) {
	t.Parallel()
	if _, err := workload.NewDenyList(nil, nil); err == nil {
		t.Fatal("NewDenyList(nil) succeeded")
	}
}

func TestDenyListSyncBeforeServing(t *testing.T) {
	t.Parallel()
	id := "spiffe://bulwark.local/ns/bank/sa/payments"
	for _, tc := range []struct {
		name     string
		failures int64
		entries  []ca.DenyEntryJSON
		wantErr  bool
		denied   bool
	}{
		{"entries known at once", 0, []ca.DenyEntryJSON{{Seq: 1, Kind: "spiffe_id", Value: id}}, false, true},
		{"empty list answers without waiting", 0, nil, false, false},
		{"control plane failing", 1, nil, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newDenyServer(t, tc.failures, tc.entries)
			dl, err := workload.NewDenyList(d.client(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			err = dl.Sync(t.Context())
			if (err != nil) != tc.wantErr {
				t.Fatalf("Sync: %v, want error %v", err, tc.wantErr)
			}
			if got := dl.IsDenied(spiffeid.RequireFromString(id), ""); got != tc.denied {
				t.Errorf("IsDenied = %v, want %v", got, tc.denied)
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			if !tc.wantErr && (len(d.waits) != 1 || (d.waits[0] != "" && d.waits[0] != "0")) {
				t.Errorf("Sync asked with waits %q, want one request without a wait", d.waits)
			}
		})
	}
}
