package node_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/directory"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/internal/mesh/node"
	"github.com/bulwarksec/bulwark/internal/policy"
	"github.com/bulwarksec/bulwark/internal/workload"
	"github.com/bulwarksec/bulwark/sdk/mtls"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

// controlPlane is a real control plane on a fixed loopback port, so that it
// can be stopped and started again at the same URL with the same data.
type controlPlane struct {
	t    *testing.T
	cfg  config.Config
	srv  *controlplane.Server
	pool *x509.CertPool
	stop func()
}

func newControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = addr
	cfg.ResolvePaths()
	cp := &controlPlane{t: t, cfg: cfg}
	cp.start()
	t.Cleanup(func() { cp.stop() })
	return cp
}

func (cp *controlPlane) start() {
	t := cp.t
	t.Helper()
	cfg := cp.cfg
	srv, err := controlplane.New(context.Background(), &cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	cp.srv = srv
	cp.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("control plane: %v", err)
			}
		})
	}
	pemData, err := os.ReadFile(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	cp.pool = x509.NewCertPool()
	cp.pool.AppendCertsFromPEM(pemData)
}

// auditCount counts the audit log's entries holding every one of parts.
func (cp *controlPlane) auditCount(parts ...string) int {
	cp.t.Helper()
	entries, err := cp.srv.AuditLog().Entries(context.Background(), 0, 100000)
	if err != nil {
		cp.t.Fatal(err)
	}
	n := 0
next:
	for _, e := range entries {
		for _, p := range parts {
			if !strings.Contains(string(e.Data), p) {
				continue next
			}
		}
		n++
	}
	return n
}

func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ledger is the ledger service: guarded by sdk/peer, it records who
// called it.
type ledger struct {
	srv *httptest.Server

	mu      sync.Mutex
	callers []*peer.Identity
	headers []http.Header
	refused []error
}

func newLedger(t *testing.T, key []byte) *ledger {
	l := &ledger{}
	l.srv = httptest.NewServer(peer.Middleware(key, func(_ *http.Request, err error) {
		l.mu.Lock()
		l.refused = append(l.refused, err)
		l.mu.Unlock()
	})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := peer.FromContext(r.Context())
		l.mu.Lock()
		l.callers = append(l.callers, id)
		l.headers = append(l.headers, r.Header.Clone())
		l.mu.Unlock()
		_, _ = io.WriteString(w, `{"ok":true}`)
	})))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *ledger) last() (*peer.Identity, http.Header, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.callers) == 0 {
		return nil, nil, len(l.refused)
	}
	return l.callers[len(l.callers)-1], l.headers[len(l.headers)-1], len(l.refused)
}

type env struct {
	cp       *controlPlane
	agent    *workload.Agent
	node     *node.Node
	ledger   *ledger
	ids      map[string]spiffeid.ID
	payments string // payments' outbound base URL
	notify   string // notifications' outbound base URL
	hc       *http.Client
}

const permitPolicy = `@id("payments-call-ledger")
permit (
    principal == Bulwark::Service::"%s",
    action == Bulwark::Action::"call",
    resource == Bulwark::Service::"%s"
);`

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	cp := newControlPlane(t)
	td := cp.srv.CA().TrustDomain()
	e := &env{cp: cp, ids: map[string]spiffeid.ID{}}
	for _, name := range []string{"payments", "ledger", "notifications"} {
		e.ids[name] = spiffeid.RequireFromString("spiffe://" + td.String() + "/ns/bank/sa/" + name)
	}
	if _, err := cp.srv.PolicyRepository().Push(ctx, map[string]string{"mesh.cedar": fmt.Sprintf(permitPolicy, e.ids["payments"], e.ids["ledger"])},
		"mesh node test", policy.Caller{Kind: "admin", ID: "test"}); err != nil {
		t.Fatal(err)
	}

	// The agent: joined, with an entry for each service.
	dir, err := os.MkdirTemp("", "bwn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	token, agentID, _, err := cp.srv.CA().CreateJoinToken(ctx, "node-mesh", 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := workload.New(workload.Config{ServerURL: cp.srv.URL(), ServerCAs: cp.pool, DataDir: dir, SocketPath: filepath.Join(dir, "wl.sock"),
		JoinToken: token, SyncInterval: 200 * time.Millisecond, DenyWait: 2 * time.Second}, workload.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(ctx)
	adone := make(chan error, 1)
	go func() { adone <- a.Run(actx) }()
	t.Cleanup(func() {
		acancel()
		if err := <-adone; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	eventually(t, 15*time.Second, "agent ready", func() error {
		if !a.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	e.agent = a
	for _, id := range e.ids {
		sel, _ := ca.ParseSelector("unix:uid:4242")
		entry := ca.Entry{SPIFFEID: id, ParentID: agentID, Selectors: []ca.Selector{sel}}
		if err := cp.srv.CA().CreateEntry(ctx, &entry); err != nil {
			t.Fatal(err)
		}
	}

	// The node: payments and notifications call out, ledger is called.
	keys := map[string][]byte{}
	for name := range e.ids {
		if keys[name], err = peer.NewKey(); err != nil {
			t.Fatal(err)
		}
	}
	e.ledger = newLedger(t, keys["ledger"])
	other := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(other.Close)
	svc := func(name, upstream, outbound string) node.Service {
		return node.Service{Name: name, ID: e.ids[name], Listen: "127.0.0.1:0", Upstream: upstream, PeerKey: keys[name], OutboundListen: outbound}
	}
	hc := a.ControlPlaneClient()
	t.Cleanup(hc.CloseIdleConnections)
	n, err := node.New(node.Config{
		ServerURL: cp.srv.URL(), Issuer: cp.srv.Issuer(), SpoolDir: t.TempDir(), CacheDir: t.TempDir(),
		DirectoryTTL: 200 * time.Millisecond,
		Services: []node.Service{
			svc("payments", other.URL, "127.0.0.1:0"),
			svc("ledger", e.ledger.srv.URL, ""),
			svc("notifications", other.URL, "127.0.0.1:0"),
		},
	}, node.Deps{
		Sources:    func(id spiffeid.ID) mesh.SVIDSource { return a.SVIDSource(id) },
		HTTPClient: hc,
		Denied:     a.IsDenied,
	})
	if err != nil {
		t.Fatal(err)
	}
	nctx, ncancel := context.WithCancel(ctx)
	ndone := make(chan error, 1)
	go func() { ndone <- n.Run(nctx) }()
	t.Cleanup(func() {
		ncancel()
		if err := <-ndone; err != nil {
			t.Errorf("node: %v", err)
		}
	})
	select {
	case <-n.Ready():
	case err := <-ndone:
		t.Fatalf("node stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("node not ready")
	}
	e.node = n
	if n.OutboundAddr("ledger") != nil || n.InboundAddr("nope") != nil {
		t.Fatal("addresses of services or sides that do not exist")
	}
	e.payments = "http://" + n.OutboundAddr("payments").String()
	e.notify = "http://" + n.OutboundAddr("notifications").String()
	if _, err := cp.srv.Directory().Put(ctx, directory.Service{ID: e.ids["ledger"].String(), Name: "ledger",
		Endpoints: []string{n.InboundAddr("ledger").String()}, Owner: "ledger-team"}, "test"); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	e.hc = &http.Client{Transport: tr, Timeout: 20 * time.Second}
	return e
}

func (e *env) call(t *testing.T, base, path, requestID string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if requestID != "" {
		req.Header.Set("X-Request-ID", requestID)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", base+path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestNodeEndToEnd drives the proxy as `bulwark agent` runs it: a real
// control plane (policy bundle, directory, CA, audit log), a real agent
// serving the services' SVIDs, and real sockets between them.
func TestNodeEndToEnd(t *testing.T) {
	e := newEnv(t)
	// The first allowed call waits for the SVIDs, the bundle and the
	// directory.
	eventually(t, 20*time.Second, "payments reaches ledger", func() error {
		if status, body := e.call(t, e.payments, "/ledger/v1/entries", "", nil); status != http.StatusOK {
			return fmt.Errorf("status %d: %s", status, body)
		}
		return nil
	})
	// And notifications' SVID is there too: its calls reach ledger's agent
	// (which refuses them) instead of failing at its own outbound (502).
	eventually(t, 20*time.Second, "notifications reaches ledger's agent", func() error {
		if status, body := e.call(t, e.notify, "/ledger/v1/entries", "req-warm-up", nil); status != http.StatusForbidden {
			return fmt.Errorf("status %d: %s", status, body)
		}
		return nil
	})

	t.Run("payments calls ledger", func(t *testing.T) {
		// A token that does not verify for ledger is refused, not dropped
		// (503 until ledger's verifier has loaded the issuer's keys).
		eventually(t, 15*time.Second, "forged token refused", func() error {
			status, body := e.call(t, e.payments, "/ledger/v1/entries?account=a1", "req-forged", map[string]string{"Authorization": "Bearer not.a.token"})
			if status != http.StatusUnauthorized {
				return fmt.Errorf("status %d, want 401: %s", status, body)
			}
			return nil
		})
		status, body := e.call(t, e.payments, "/ledger/v1/entries?account=a1", "req-allowed", map[string]string{
			"X-Bulwark-Peer-ID": e.ids["notifications"].String(), "X-Bulwark-User": "root"})
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		id, h, _ := e.ledger.last()
		if id == nil || id.Peer != e.ids["payments"] || id.User != "" || id.RequestID != "req-allowed" {
			t.Fatalf("ledger saw %+v", id)
		}
		if v := h.Values(peer.HeaderPeerID); len(v) != 1 {
			t.Errorf("peer headers %q: the caller's forged one reached the service", v)
		}
		if h.Get("Authorization") != "" {
			t.Error("Authorization reached the service")
		}
	})

	t.Run("notifications may not call ledger", func(t *testing.T) {
		status, body := e.call(t, e.notify, "/ledger/v1/entries", "req-denied-1", nil)
		if status != http.StatusForbidden {
			t.Fatalf("status %d, want 403: %s", status, body)
		}
		eventually(t, 15*time.Second, "denial audited", func() error {
			if n := e.cp.auditCount("req-denied-1", "denied by policy", e.ids["notifications"].String()); n != 1 {
				return fmt.Errorf("%d events", n)
			}
			return nil
		})
		if n := e.cp.auditCount("req-allowed", "allowed by policy"); n != 0 {
			t.Errorf("allowed calls audited with audit_allowed off: %d", n)
		}
		if n := e.cp.auditCount("req-forged", "internal token refused"); n < 1 {
			t.Errorf("%d audit events of the refused token, want 1", n)
		}
	})

	t.Run("direct call to the service port", func(t *testing.T) {
		_, _, before := e.ledger.last()
		status, _ := e.call(t, e.ledger.srv.URL, "/v1/entries", "", map[string]string{"X-Bulwark-Peer-ID": e.ids["payments"].String()})
		if status != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", status)
		}
		if _, _, after := e.ledger.last(); after != before+1 {
			t.Fatal("the refusal was not reported")
		}
	})

	t.Run("control plane down", func(t *testing.T) {
		e.cp.stop()
		if status, body := e.call(t, e.payments, "/ledger/v1/entries", "req-offline-ok", nil); status != http.StatusOK {
			t.Fatalf("allowed call with the control plane down: status %d: %s", status, body)
		}
		const denied = 5
		for i := range denied {
			if status, body := e.call(t, e.notify, "/ledger/v1/entries", fmt.Sprintf("req-offline-%d", i), nil); status != http.StatusForbidden {
				t.Fatalf("denied call %d with the control plane down: status %d: %s", i, status, body)
			}
		}
		eventually(t, 10*time.Second, "events spooled", func() error {
			if p := e.node.PendingEvents(); p < denied {
				return fmt.Errorf("%d pending", p)
			}
			return nil
		})
		e.cp.start()
		eventually(t, 30*time.Second, "spool delivered", func() error {
			for i := range denied {
				if n := e.cp.auditCount(fmt.Sprintf("req-offline-%d", i), "denied by policy"); n != 1 {
					return fmt.Errorf("event %d delivered %d times", i, n)
				}
			}
			if p := e.node.PendingEvents(); p != 0 {
				return fmt.Errorf("%d still pending", p)
			}
			return nil
		})
	})

	t.Run("revoked and quarantined callers", func(t *testing.T) {
		ctx := context.Background()
		src := e.agent.SVIDSource(e.ids["payments"])
		sv, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		serial := sv.Certificates[0].SerialNumber.Text(16)
		if err := e.cp.srv.CA().Revoke(ctx, serial, "key compromise"); err != nil {
			t.Fatal(err)
		}
		// The revoked certificate is refused by the inbound even if its
		// holder presents it directly.
		eventually(t, 15*time.Second, "revocation known", func() error {
			if !e.agent.IsDenied(e.ids["payments"], serial) {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		status, _ := directCall(t, e, sv)
		if status != http.StatusForbidden {
			t.Fatalf("revoked SVID presented directly: status %d, want 403", status)
		}
		eventually(t, 15*time.Second, "revocation audited", func() error {
			if n := e.cp.auditCount("peer revoked or quarantined", e.ids["payments"].String()); n < 1 {
				return fmt.Errorf("%d events", n)
			}
			return nil
		})
		// The agent gets payments a new SVID: calls work again.
		eventually(t, 15*time.Second, "payments renewed", func() error {
			if status, body := e.call(t, e.payments, "/ledger/v1/entries", "", nil); status != http.StatusOK {
				return fmt.Errorf("status %d: %s", status, body)
			}
			return nil
		})
		if err := e.cp.srv.CA().Quarantine(ctx, e.ids["payments"], "test quarantine"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "quarantine enforced", func() error {
			if status, body := e.call(t, e.payments, "/ledger/v1/entries", "", nil); status == http.StatusOK {
				return fmt.Errorf("status %d: %s", status, body)
			}
			return nil
		})
	})
}

// staticSource serves one SVID and the agent's bundle.
type staticSource struct {
	svid   *x509svid.SVID
	bundle x509bundle.Source
}

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

func (s staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle.GetX509BundleForTrustDomain(td)
}

// directCall calls ledger's inbound with sv, as a workload holding that
// certificate would.
func directCall(t *testing.T, e *env, sv *x509svid.SVID) (int, string) {
	t.Helper()
	src := staticSource{svid: sv, bundle: e.agent.SVIDSource(e.ids["ledger"])}
	tr := &http.Transport{TLSClientConfig: mtls.ClientConfig(src, src, mtls.AuthorizeID(e.ids["ledger"]))}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get("https://" + e.node.InboundAddr("ledger").String() + "/v1/entries")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
