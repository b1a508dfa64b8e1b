package mesh_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/clocktest"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/mtls"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

const (
	tdName        = "bank.example"
	paymentsID    = "spiffe://bank.example/payments"
	ledgerID      = "spiffe://bank.example/ledger"
	notifyID      = "spiffe://bank.example/notifications"
	accountsID    = "spiffe://bank.example/accounts"
	policyPermit  = "payments-call-ledger"
	testDeadline  = 20 * time.Second
	serviceSchema = `namespace Bulwark {
  type RequestContext = {
    time: { epoch: Long, hour: Long },
    zone: String, region: String, amount?: Long, mfa: Bool, riskScore: Long,
    tokenScopes: Set<String>
  };
  entity Service;
  action "call" appliesTo { principal: [Service], resource: [Service], context: RequestContext };
}`
)

// newEvaluator is the tiny policy set of the tests: payments may call
// ledger, nothing else is permitted.
func newEvaluator(t testing.TB) *authz.Evaluator {
	t.Helper()
	ev, err := authz.NewEvaluator(authz.EvaluatorInput{
		Policies: map[string]string{"mesh.cedar": `
@id("` + policyPermit + `")
permit (
    principal == Bulwark::Service::"` + paymentsID + `",
    action == Bulwark::Action::"call",
    resource == Bulwark::Service::"` + ledgerID + `"
);`},
		Schema:        serviceSchema,
		BundleVersion: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// refusingDecider is a decider whose bundle is stale.
type refusingDecider struct{}

func (refusingDecider) Decide(authz.Request) authz.Decision {
	return authz.Decision{Refusal: authz.RefusalStale, BundleVersion: 7}
}

// staticResolver is a service directory in a map; a nil map is a directory
// that is down.
type staticResolver map[string]struct {
	id        spiffeid.ID
	endpoints []string
}

func (r staticResolver) Resolve(_ context.Context, name string) (spiffeid.ID, []string, error) {
	if r == nil {
		return spiffeid.ID{}, nil, errors.New("control plane unreachable")
	}
	e, ok := r[name]
	if !ok {
		return spiffeid.ID{}, nil, fmt.Errorf("resolve %q: %w", name, mesh.ErrUnknownService)
	}
	return e.id, e.endpoints, nil
}

// testPeerKey is the sdk/peer key the agent shares with the echo service.
var testPeerKey = bytes.Repeat([]byte{7}, peer.KeySize)

// echoed is what the echo service saw.
type echoed struct {
	Path    string      `json:"path"`
	Query   string      `json:"query"`
	Headers http.Header `json:"headers"`
	Body    string      `json:"body"`
	// PeerErr is what sdk/peer.Verify said of the agent's signature.
	PeerErr string `json:"peer_err"`
}

// echo is the local service behind ledger's agent.
type echo struct {
	url  string
	hits atomic.Int64
}

func newEcho(t testing.TB) *echo {
	t.Helper()
	e := &echo{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		peerErr := ""
		if _, err := peer.Verify(r.Header, testPeerKey, r.Method, r.URL.RequestURI(), time.Now()); err != nil {
			peerErr = err.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoed{Path: r.URL.Path, Query: r.URL.RawQuery, Headers: r.Header, Body: string(body), PeerErr: peerErr})
	}))
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// serve runs s on a fresh 127.0.0.1:0 listener until the test ends.
func serve(t testing.TB, s interface {
	ServeListener(context.Context, net.Listener) error
}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// denials records OnDenied events.
type denials struct {
	mu     sync.Mutex
	events []mesh.DenialEvent
}

func (d *denials) add(e mesh.DenialEvent) {
	d.mu.Lock()
	d.events = append(d.events, e)
	d.mu.Unlock()
}

func (d *denials) list() []mesh.DenialEvent {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]mesh.DenialEvent(nil), d.events...)
}

// world is ledger behind its agent's inbound, and the outbounds of
// payments and notifications.
type world struct {
	ca            *testCA
	echo          *echo
	ledgerAddr    string
	denied        *denials
	payments      string // base URL of payments' outbound
	notifications string // base URL of notifications' outbound
}

func newInbound(t testing.TB, ca *testCA, e *echo, d mesh.Decider, den *denials) string {
	t.Helper()
	in, err := mesh.NewInbound(mesh.InboundConfig{
		Upstream: e.url,
		Self:     spiffeid.RequireFromString(ledgerID),
		PeerKey:  testPeerKey,
	}, mesh.InboundDeps{Source: ca.source(t, ledgerID), Decider: d, OnDenied: den.add})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, in)
}

func newOutbound(t testing.TB, ca *testCA, self string, r mesh.Resolver, maxBody int64) string {
	t.Helper()
	out, err := mesh.NewOutbound(mesh.OutboundConfig{Self: spiffeid.RequireFromString(self), MaxBodyBytes: maxBody},
		mesh.OutboundDeps{Source: ca.source(t, self), Resolver: r})
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + serve(t, out)
}

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{ca: newCA(t, tdName), echo: newEcho(t), denied: &denials{}}
	w.ledgerAddr = newInbound(t, w.ca, w.echo, newEvaluator(t), w.denied)
	res := staticResolver{
		"ledger": {spiffeid.RequireFromString(ledgerID), []string{w.ledgerAddr}},
		// the directory says accounts, but the endpoint is ledger's agent
		"accounts": {spiffeid.RequireFromString(accountsID), []string{w.ledgerAddr}},
	}
	w.payments = newOutbound(t, w.ca, paymentsID, res, 1<<10)
	w.notifications = newOutbound(t, w.ca, notifyID, res, 0)
	return w
}

func client(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testDeadline}
}

// mtlsClient calls ledger's agent directly with the SVID of src.
func mtlsClient(t testing.TB, src staticSource) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: mtls.ClientConfig(src, src, mtls.AuthorizeID(spiffeid.RequireFromString(ledgerID)))}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testDeadline}
}

func do(t testing.TB, c *http.Client, method, url, body string, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func decodeEcho(t testing.TB, b []byte) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("echo body %q: %v", b, err)
	}
	return e
}

func TestOutboundToInbound(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	c := client(t)

	tests := []struct {
		name       string
		base       string
		method     string
		path       string
		body       string
		hdr        map[string]string
		wantStatus int
		wantEcho   bool
		wantPath   string
		wantQuery  string
	}{
		{name: "payments calls ledger", base: w.payments, method: http.MethodPost, path: "/ledger/v1/entries?account=a%2F1",
			body: `{"amount":5}`, wantStatus: http.StatusOK, wantEcho: true, wantPath: "/v1/entries", wantQuery: "account=a%2F1"},
		{name: "client-sent identity headers are replaced", base: w.payments, method: http.MethodGet, path: "/ledger/",
			hdr:        map[string]string{"X-Bulwark-Peer-ID": "spiffe://bank.example/admin", "X-Bulwark-User": "root", "X-Forwarded-For": "10.0.0.1"},
			wantStatus: http.StatusOK, wantEcho: true, wantPath: "/"},
		{name: "notifications may not call ledger", base: w.notifications, method: http.MethodGet, path: "/ledger/v1/entries", wantStatus: http.StatusForbidden},
		{name: "unknown service", base: w.payments, method: http.MethodGet, path: "/vault/x", wantStatus: http.StatusNotFound},
		{name: "malformed service name", base: w.payments, method: http.MethodGet, path: "/Ledger/x", wantStatus: http.StatusNotFound},
		{name: "destination presents another SPIFFE ID", base: w.payments, method: http.MethodGet, path: "/accounts/x", wantStatus: http.StatusBadGateway},
		{name: "body over the limit", base: w.payments, method: http.MethodPost, path: "/ledger/x", body: strings.Repeat("a", 2<<10), wantStatus: http.StatusRequestEntityTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := w.echo.hits.Load()
			status, body := do(t, c, tc.method, tc.base+tc.path, tc.body, tc.hdr)
			if status != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %s)", status, tc.wantStatus, body)
			}
			if !tc.wantEcho {
				if got := w.echo.hits.Load(); got != before {
					t.Fatalf("the service was reached (%d hits)", got-before)
				}
				return
			}
			e := decodeEcho(t, body)
			if got := e.Headers.Get(mesh.HeaderPeerID); got != paymentsID {
				t.Errorf("peer header %q, want %q", got, paymentsID)
			}
			if got := e.Headers.Values(mesh.HeaderPeerID); len(got) != 1 {
				t.Errorf("peer header values %q, want one", got)
			}
			if got := e.Headers.Get(mesh.HeaderDecisionReasons); got != policyPermit {
				t.Errorf("reasons header %q, want %q", got, policyPermit)
			}
			if e.PeerErr != "" {
				t.Errorf("the agent's signature does not verify: %s", e.PeerErr)
			}
			for k := range e.Headers {
				if strings.HasPrefix(k, "X-Bulwark-") && k != "X-Bulwark-Peer-Id" && k != "X-Bulwark-Decision-Reasons" && k != "X-Bulwark-Signature" {
					t.Errorf("client header %s reached the service", k)
				}
				if strings.HasPrefix(k, "X-Forwarded-") {
					t.Errorf("header %s reached the service", k)
				}
			}
			if e.Path != tc.wantPath || e.Query != tc.wantQuery || e.Body != tc.body {
				t.Errorf("service saw path %q query %q body %q, want %q %q %q", e.Path, e.Query, e.Body, tc.wantPath, tc.wantQuery, tc.body)
			}
		})
	}

	ev := w.denied.list()
	if len(ev) != 1 {
		t.Fatalf("denials %+v, want one", ev)
	}
	if ev[0].Peer.String() != notifyID || ev[0].Self.String() != ledgerID || ev[0].Action != mesh.DefaultAction ||
		ev[0].Path != "/v1/entries" || ev[0].BundleVersion != 7 {
		t.Errorf("denial %+v", ev[0])
	}
}

func TestInboundDirect(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	other := newCA(t, tdName) // same trust domain, another CA

	t.Run("client-sent peer header is replaced", func(t *testing.T) {
		status, body := do(t, mtlsClient(t, w.ca.source(t, paymentsID)), http.MethodGet, "https://"+w.ledgerAddr+"/x", "",
			map[string]string{"X-Bulwark-Peer-ID": notifyID, "x-bulwark-decision-reasons": "forged", "X-Bulwark-User": "root"})
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		e := decodeEcho(t, body)
		if got := e.Headers.Values(mesh.HeaderPeerID); len(got) != 1 || got[0] != paymentsID {
			t.Errorf("peer header %q, want [%s]", got, paymentsID)
		}
		if got := e.Headers.Values(mesh.HeaderDecisionReasons); len(got) != 1 || got[0] != policyPermit {
			t.Errorf("reasons header %q", got)
		}
		if got := e.Headers.Get("X-Bulwark-User"); got != "" {
			t.Errorf("client-sent X-Bulwark-User %q reached the service", got)
		}
	})

	failing := []struct {
		name string
		do   func() error
	}{
		{name: "certificate from another CA", do: func() error {
			src := staticSource{svid: other.svid(t, paymentsID), bundle: w.ca.bundle()}
			tr := &http.Transport{TLSClientConfig: mtls.ClientConfig(src, src, mtls.AuthorizeID(spiffeid.RequireFromString(ledgerID)))}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: testDeadline}).Get("https://" + w.ledgerAddr + "/x")
			if err == nil {
				resp.Body.Close()
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}},
		{name: "plaintext HTTP", do: func() error {
			resp, err := client(t).Get("http://" + w.ledgerAddr + "/x")
			if err == nil {
				defer resp.Body.Close()
				if resp.StatusCode < 400 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			return nil
		}},
		{name: "TLS without a client certificate", do: func() error {
			resp, err := client(t).Get("https://" + w.ledgerAddr + "/x")
			if err == nil {
				resp.Body.Close()
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}},
	}
	for _, tc := range failing {
		t.Run(tc.name, func(t *testing.T) {
			before := w.echo.hits.Load()
			if err := tc.do(); err != nil {
				t.Fatalf("not refused: %v", err)
			}
			if got := w.echo.hits.Load(); got != before {
				t.Fatal("the service was reached")
			}
		})
	}
}

func TestInboundRefusingDecider(t *testing.T) {
	t.Parallel()
	ca, e, den := newCA(t, tdName), newEcho(t), &denials{}
	var clock clocktest.Clock
	clock.Advance(48 * time.Hour)
	in, err := mesh.NewInbound(mesh.InboundConfig{Upstream: e.url, Self: spiffeid.RequireFromString(ledgerID), PeerKey: testPeerKey},
		mesh.InboundDeps{Source: ca.source(t, ledgerID), Decider: refusingDecider{}, OnDenied: den.add, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, in)
	status, body := do(t, mtlsClient(t, ca.source(t, paymentsID)), http.MethodGet, "https://"+addr+"/x", "", nil)
	if status != http.StatusForbidden {
		t.Fatalf("status %d, want 403: %s", status, body)
	}
	if strings.Contains(string(body), authz.RefusalStale) {
		t.Errorf("the refusal reason leaked to the client: %s", body)
	}
	if e.hits.Load() != 0 {
		t.Fatal("the service was reached")
	}
	ev := den.list()
	if len(ev) != 1 || ev[0].Refusal != authz.RefusalStale || ev[0].Peer.String() != paymentsID {
		t.Fatalf("denials %+v", ev)
	}
	if ev[0].Time.Before(time.Now().Add(47 * time.Hour)) {
		t.Errorf("denial time %s is not the injected clock's", ev[0].Time)
	}
}

func TestOutboundResolverDown(t *testing.T) {
	t.Parallel()
	ca := newCA(t, tdName)
	base := newOutbound(t, ca, paymentsID, staticResolver(nil), 0)
	status, body := do(t, client(t), http.MethodGet, base+"/ledger/x", "", nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", status, body)
	}
	if strings.Contains(string(body), "unreachable") {
		t.Errorf("internal detail leaked: %s", body)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	ca := newCA(t, tdName)
	src := ca.source(t, ledgerID)
	self := spiffeid.RequireFromString(ledgerID)
	ev := newEvaluator(t)
	res := staticResolver{}
	inbound := []struct {
		name string
		cfg  mesh.InboundConfig
		deps mesh.InboundDeps
		ok   bool
	}{
		{name: "valid", cfg: mesh.InboundConfig{Upstream: "http://127.0.0.1:8081", Self: self, PeerKey: testPeerKey}, deps: mesh.InboundDeps{Source: src, Decider: ev}, ok: true},
		{name: "localhost", cfg: mesh.InboundConfig{Upstream: "http://localhost:8081", Self: self, PeerKey: testPeerKey}, deps: mesh.InboundDeps{Source: src, Decider: ev}, ok: true},
		{name: "non-loopback upstream", cfg: mesh.InboundConfig{Upstream: "http://10.0.0.5:8081", Self: self, PeerKey: testPeerKey}, deps: mesh.InboundDeps{Source: src, Decider: ev}},
		{name: "upstream by name", cfg: mesh.InboundConfig{Upstream: "http://ledger.internal:8081", Self: self, PeerKey: testPeerKey}, deps: mesh.InboundDeps{Source: src, Decider: ev}},
		{name: "upstream with path", cfg: mesh.InboundConfig{Upstream: "http://127.0.0.1:8081/api", Self: self, PeerKey: testPeerKey}, deps: mesh.InboundDeps{Source: src, Decider: ev}},
		{name: "https upstream", cfg: mesh.InboundConfig{Upstream: "https://127.0.0.1:8081", Self: self, PeerKey: testPeerKey}, deps: mesh.InboundDeps{Source: src, Decider: ev}},
		{name: "no self", cfg: mesh.InboundConfig{Upstream: "http://127.0.0.1:8081", PeerKey: testPeerKey}, deps: mesh.InboundDeps{Source: src, Decider: ev}},
		{name: "no decider", cfg: mesh.InboundConfig{Upstream: "http://127.0.0.1:8081", Self: self, PeerKey: testPeerKey}, deps: mesh.InboundDeps{Source: src}},
		{name: "no source", cfg: mesh.InboundConfig{Upstream: "http://127.0.0.1:8081", Self: self, PeerKey: testPeerKey}, deps: mesh.InboundDeps{Decider: ev}},
		{name: "no peer key", cfg: mesh.InboundConfig{Upstream: "http://127.0.0.1:8081", Self: self}, deps: mesh.InboundDeps{Source: src, Decider: ev}},
		{name: "short peer key", cfg: mesh.InboundConfig{Upstream: "http://127.0.0.1:8081", Self: self, PeerKey: testPeerKey[:16]}, deps: mesh.InboundDeps{Source: src, Decider: ev}},
		{name: "negative timeout", cfg: mesh.InboundConfig{Upstream: "http://127.0.0.1:8081", Self: self, PeerKey: testPeerKey, Timeouts: mesh.Timeouts{Read: -1}}, deps: mesh.InboundDeps{Source: src, Decider: ev}},
	}
	for _, tc := range inbound {
		t.Run("inbound/"+tc.name, func(t *testing.T) {
			_, err := mesh.NewInbound(tc.cfg, tc.deps)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	outbound := []struct {
		name string
		cfg  mesh.OutboundConfig
		deps mesh.OutboundDeps
		ok   bool
	}{
		{name: "valid", cfg: mesh.OutboundConfig{Listen: "127.0.0.1:15001", Self: self}, deps: mesh.OutboundDeps{Source: src, Resolver: res}, ok: true},
		{name: "ipv6 loopback", cfg: mesh.OutboundConfig{Listen: "[::1]:15001", Self: self}, deps: mesh.OutboundDeps{Source: src, Resolver: res}, ok: true},
		{name: "all interfaces", cfg: mesh.OutboundConfig{Listen: ":15001", Self: self}, deps: mesh.OutboundDeps{Source: src, Resolver: res}},
		{name: "public address", cfg: mesh.OutboundConfig{Listen: "0.0.0.0:15001", Self: self}, deps: mesh.OutboundDeps{Source: src, Resolver: res}},
		{name: "no resolver", cfg: mesh.OutboundConfig{Listen: "127.0.0.1:15001", Self: self}, deps: mesh.OutboundDeps{Source: src}},
		{name: "negative body limit", cfg: mesh.OutboundConfig{Listen: "127.0.0.1:15001", Self: self, MaxBodyBytes: -1}, deps: mesh.OutboundDeps{Source: src, Resolver: res}},
	}
	for _, tc := range outbound {
		t.Run("outbound/"+tc.name, func(t *testing.T) {
			_, err := mesh.NewOutbound(tc.cfg, tc.deps)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestOutboundRefusesNonLoopbackListener(t *testing.T) {
	t.Parallel()
	ca := newCA(t, tdName)
	out, err := mesh.NewOutbound(mesh.OutboundConfig{Self: spiffeid.RequireFromString(paymentsID)},
		mesh.OutboundDeps{Source: ca.source(t, paymentsID), Resolver: staticResolver{}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	if err := out.ServeListener(context.Background(), ln); err == nil {
		t.Fatal("served on a non-loopback listener")
	}
}

func TestSplitServicePath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, service, rest string
		ok                bool
	}{
		{in: "/ledger/v1/entries", service: "ledger", rest: "/v1/entries", ok: true},
		{in: "/ledger", service: "ledger", rest: "/", ok: true},
		{in: "/ledger/", service: "ledger", rest: "/", ok: true},
		{in: "/ledger/a%2Fb", service: "ledger", rest: "/a%2Fb", ok: true},
		{in: "/", ok: false},
		{in: "", ok: false},
		{in: "ledger/x", ok: false},
		{in: "/Ledger/x", ok: false},
		{in: "/-ledger/x", ok: false},
		{in: "/led%67er/x", ok: false},
		{in: "/../x", ok: false},
		{in: "/ledger/%zz", ok: false},
	}
	for _, tc := range tests {
		s, r, ok := mesh.SplitServicePath(tc.in)
		if s != tc.service || r != tc.rest || ok != tc.ok {
			t.Errorf("SplitServicePath(%q) = %q, %q, %v; want %q, %q, %v", tc.in, s, r, ok, tc.service, tc.rest, tc.ok)
		}
	}
}

func FuzzSplitServicePath(f *testing.F) {
	for _, s := range []string{"/ledger/v1/entries", "/ledger", "/a%2F/b", "//", "/x-y/%zz", "/ledger/../../etc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, r, ok := mesh.SplitServicePath(in)
		if !ok {
			return
		}
		if s == "" || strings.ContainsAny(s, "/%.") || !strings.HasPrefix(r, "/") {
			t.Fatalf("SplitServicePath(%q) = %q, %q", in, s, r)
		}
		if in != "/"+s+r && in != "/"+s {
			t.Fatalf("SplitServicePath(%q) = %q, %q does not rebuild the input", in, s, r)
		}
	})
}

// BenchmarkOneHop measures payments' outbound -> ledger's inbound -> the
// echo service, over pooled mTLS connections, and reports the p50.
func BenchmarkOneHop(b *testing.B) {
	w := newWorld(b)
	c := client(b)
	call := func() {
		resp, err := c.Get(w.payments + "/ledger/v1/entries")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	call() // warm the pools
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		call()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

// TestOutboundPoolsAndResumes checks that the outbound reuses one connection
// for sequential calls, and that a new connection resumes the TLS session.
func TestOutboundPoolsAndResumes(t *testing.T) {
	t.Parallel()
	ca, e := newCA(t, tdName), newEcho(t)
	in, err := mesh.NewInbound(mesh.InboundConfig{Upstream: e.url, Self: spiffeid.RequireFromString(ledgerID), PeerKey: testPeerKey},
		mesh.InboundDeps{Source: ca.source(t, ledgerID), Decider: newEvaluator(t)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []string
	var resumed []bool
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			if len(conns) == 0 || conns[len(conns)-1] != r.RemoteAddr {
				conns = append(conns, r.RemoteAddr)
				resumed = append(resumed, r.TLS.DidResume)
			}
			mu.Unlock()
			in.Handler().ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: testDeadline,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(tls.NewListener(ln, in.TLSConfig())) }()
	t.Cleanup(func() { _ = srv.Close() })

	out, err := mesh.NewOutbound(mesh.OutboundConfig{Self: spiffeid.RequireFromString(paymentsID)},
		mesh.OutboundDeps{Source: ca.source(t, paymentsID), Resolver: staticResolver{
			"ledger": {spiffeid.RequireFromString(ledgerID), []string{ln.Addr().String()}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + serve(t, out)
	c := client(t)
	for i := range 5 {
		if status, body := do(t, c, http.MethodGet, base+"/ledger/x", "", nil); status != http.StatusOK {
			t.Fatalf("call %d: status %d: %s", i, status, body)
		}
	}
	out.CloseIdleConnections()
	if status, body := do(t, c, http.MethodGet, base+"/ledger/x", "", nil); status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 2 {
		t.Fatalf("%d connections (%v), want 2: one pooled, one after closing idle ones", len(conns), conns)
	}
	if resumed[0] || !resumed[1] {
		t.Fatalf("resumed = %v, want [false true]", resumed)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	t.Parallel()
	ca, e := newCA(t, tdName), newEcho(t)
	in, err := mesh.NewInbound(mesh.InboundConfig{Listen: "127.0.0.1:0", Upstream: e.url, Self: spiffeid.RequireFromString(ledgerID), PeerKey: testPeerKey},
		mesh.InboundDeps{Source: ca.source(t, ledgerID), Decider: newEvaluator(t)})
	if err != nil {
		t.Fatal(err)
	}
	out, err := mesh.NewOutbound(mesh.OutboundConfig{Listen: "127.0.0.1:0", Self: spiffeid.RequireFromString(paymentsID)},
		mesh.OutboundDeps{Source: ca.source(t, paymentsID), Resolver: staticResolver{}})
	if err != nil {
		t.Fatal(err)
	}
	for name, serve := range map[string]func(context.Context) error{"inbound": in.Serve, "outbound": out.Serve} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- serve(ctx) }()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
			case <-time.After(testDeadline):
				t.Fatal("Serve did not return after its context ended")
			}
		})
	}
}
