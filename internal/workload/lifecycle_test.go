package workload_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/bulwarksec/bulwark/internal/workload"
)

// svidWatcher records what a FetchX509SVID stream delivers.
type svidWatcher struct {
	mu      sync.Mutex
	serials []string
	times   []time.Time
	errs    []error
}

func (w *svidWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := c.DefaultSVID().Certificates[0].SerialNumber.Text(16)
	if len(w.serials) == 0 || w.serials[len(w.serials)-1] != s {
		w.serials = append(w.serials, s)
		w.times = append(w.times, time.Now())
	}
}

func (w *svidWatcher) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

func (w *svidWatcher) snapshot() ([]string, []error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.serials...), append([]error(nil), w.errs...)
}

// TestRotationPushesNewSVIDs: with a 10 s SVID lifetime renewed at half
// life, an open stream receives a new SVID at every rotation, and each is
// valid when received.
func TestRotationPushesNewSVIDs(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, 10*time.Second)
	a := joinAgent(t, cp, "node-rot", nil)
	uid, path, _ := self(t)
	createEntry(t, cp, "spiffe://"+cp.srv.CA().TrustDomain().String()+"/ns/a/sa/rot", a.id, "unix:uid:"+uid, "unix:path:"+path)

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(a.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	client, err := workloadapi.New(ctx, a.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	w := &svidWatcher{}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() { _ = client.WatchX509Context(watchCtx, w) }()

	// Two rotations: three distinct SVIDs on the one open stream.
	eventually(t, 20*time.Second, "two rotations pushed", func() error {
		serials, errs := w.snapshot()
		if len(errs) > 0 {
			t.Fatalf("stream errors: %v", errs)
		}
		if len(serials) < 3 {
			return fmt.Errorf("received %d SVIDs", len(serials))
		}
		return nil
	})
	// Rotations happen at half-life (5 s), not at every sync round.
	w.mu.Lock()
	for i := 1; i < len(w.times); i++ {
		if gap := w.times[i].Sub(w.times[i-1]); gap < 3*time.Second {
			t.Errorf("rotation %d came %v after the previous one, want about 5s", i, gap)
		}
	}
	w.mu.Unlock()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if time.Now().After(svid.Certificates[0].NotAfter) {
		t.Fatal("the source holds an expired SVID after rotations")
	}
}

// TestOfflineServesUntilExpiry: with the control plane stopped the agent
// keeps serving the SVID it holds, also after a restart from its sealed
// cache, and refuses once it expired.
func TestOfflineServesUntilExpiry(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, 10*time.Second)
	a := joinAgent(t, cp, "node-off", func(c *workload.Config) { c.RotationFraction = 0.9 })
	uid, path, _ := self(t)
	createEntry(t, cp, "spiffe://"+cp.srv.CA().TrustDomain().String()+"/ns/a/sa/off", a.id, "unix:uid:"+uid, "unix:path:"+path)

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var first *workloadapi.X509Context
	eventually(t, 10*time.Second, "SVID issued", func() error {
		var err error
		first, err = fetchX509(ctx, a)
		return err
	})
	cp.stop()
	a.stop()
	// A fresh agent process on the same data directory, no token, no server.
	b := startAgent(t, cp, a.dir, func(c *workload.Config) { c.RotationFraction = 0.9 })
	notAfter := first.DefaultSVID().Certificates[0].NotAfter
	got, err := fetchX509(ctx, b)
	if !time.Now().Before(notAfter) {
		t.Fatal("the test was too slow: the SVID expired before the offline check")
	}
	if err != nil {
		t.Fatalf("offline agent refused a valid SVID: %v", err)
	}
	if got.DefaultSVID().Certificates[0].SerialNumber.Cmp(first.DefaultSVID().Certificates[0].SerialNumber) != 0 {
		t.Fatalf("offline agent served another SVID: %s", got.DefaultSVID().ID)
	}
	time.Sleep(time.Until(notAfter) + 100*time.Millisecond)
	if xc, err := fetchX509(ctx, b); !isDenied(err) {
		t.Fatalf("after expiry: %v, %v; want PermissionDenied", xc, err)
	}
}

// TestQuarantineWithdrawsSVID: a quarantined SPIFFE ID is withdrawn from an
// open stream and refused to new calls within 5 s, and never re-issued.
func TestQuarantineWithdrawsSVID(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, 0)
	a := joinAgent(t, cp, "node-q", nil)
	uid, path, _ := self(t)
	e := createEntry(t, cp, "spiffe://"+cp.srv.CA().TrustDomain().String()+"/ns/a/sa/q", a.id, "unix:uid:"+uid, "unix:path:"+path)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eventually(t, 10*time.Second, "SVID issued", func() error {
		_, err := fetchX509(ctx, a)
		return err
	})
	client, err := workloadapi.New(ctx, a.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	w := &svidWatcher{}
	go func() { _ = client.WatchX509Context(ctx, w) }()
	eventually(t, 5*time.Second, "stream open", func() error {
		if s, _ := w.snapshot(); len(s) == 0 {
			return fmt.Errorf("no update yet")
		}
		return nil
	})

	start := time.Now()
	if err := cp.srv.CA().Quarantine(ctx, e.SPIFFEID, "test quarantine"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "quarantine reaches the open stream", func() error {
		if _, errs := w.snapshot(); len(errs) == 0 || !isDenied(errs[0]) {
			return fmt.Errorf("stream errors %v", errs)
		}
		return nil
	})
	eventually(t, 5*time.Second-time.Since(start), "quarantine refuses new calls", func() error {
		if _, err := fetchX509(ctx, a); !isDenied(err) {
			return fmt.Errorf("fetch: %v", err)
		}
		return nil
	})
	// Several sync rounds later it is still refused: never re-issued.
	time.Sleep(time.Second)
	if _, err := fetchX509(ctx, a); !isDenied(err) {
		t.Fatalf("quarantined SVID served again: %v", err)
	}
}

// TestRevokedSerialReplaced: a revoked certificate is withdrawn within
// 5 s and never served again; the entry itself is still valid, so the
// agent obtains a new SVID with another serial.
func TestRevokedSerialReplaced(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, 0)
	a := joinAgent(t, cp, "node-rev", nil)
	uid, path, _ := self(t)
	createEntry(t, cp, "spiffe://"+cp.srv.CA().TrustDomain().String()+"/ns/a/sa/rev", a.id, "unix:uid:"+uid, "unix:path:"+path)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var first *workloadapi.X509Context
	eventually(t, 10*time.Second, "SVID issued", func() error {
		var err error
		first, err = fetchX509(ctx, a)
		return err
	})
	revoked := first.DefaultSVID().Certificates[0].SerialNumber.Text(16)
	if err := cp.srv.CA().Revoke(ctx, revoked, "key compromise"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "revoked SVID replaced", func() error {
		xc, err := fetchX509(ctx, a)
		if err != nil {
			return err
		}
		if s := xc.DefaultSVID().Certificates[0].SerialNumber.Text(16); s == revoked {
			return fmt.Errorf("still serving the revoked serial %s", s)
		}
		return nil
	})
	time.Sleep(time.Second)
	xc, err := fetchX509(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if xc.DefaultSVID().Certificates[0].SerialNumber.Text(16) == revoked {
		t.Fatal("the revoked serial is served again")
	}
}
