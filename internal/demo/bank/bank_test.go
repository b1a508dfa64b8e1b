package bank

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/correlation"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

// recorder collects the bank's audit events and refusals.
type recorder struct {
	mu       sync.Mutex
	events   []*audit.Event
	refusals []refusal
}

type refusal struct {
	service string
	err     error
}

func (r *recorder) Send(_ context.Context, events ...*audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		if err := e.Normalize(time.Now()); err != nil {
			return err
		}
		r.events = append(r.events, e)
	}
	return nil
}

func (r *recorder) onRefused(service string, _ *http.Request, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refusals = append(r.refusals, refusal{service, err})
}

func (r *recorder) eventsWhere(pred func(*audit.Event) bool) []*audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*audit.Event
	for _, e := range r.events {
		if pred(e) {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) refusalsOf(service string) []refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []refusal
	for _, f := range r.refusals {
		if f.service == service {
			out = append(out, f)
		}
	}
	return out
}

// allowedCalls is the fake agents' stand-in for the bank's Cedar policy
// (examples/policies/bank/services.cedar).
var allowedCalls = map[[2]string]bool{
	{"payments", "ledger"}: true, {"payments", "notifications"}: true, {"accounts", "ledger"}: true,
}

// fakeAgent is a local agent's outbound listener for one calling service:
// it routes /<service>/<path> to that service's listener, allows only the
// pairs of allowedCalls (403 otherwise, as the mesh inbound does) and signs
// the request with the destination's peer key as the mesh inbound would.
// A real mesh is internal/mesh's job; this is what the bank sees of it.
type fakeAgent struct {
	env    *testEnv
	caller string

	mu    sync.Mutex
	down  map[string]bool // destinations answering 503
	calls []agentCall
}

type agentCall struct {
	to, method, path, requestID, traceparent string
	status                                   int
}

func (a *fakeAgent) setDown(service string, down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down[service] = down
}

func (a *fakeAgent) callsTo(service, method string) []agentCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []agentCall
	for _, c := range a.calls {
		if c.to == service && c.method == method {
			out = append(out, c)
		}
	}
	return out
}

func (a *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	to, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	call := agentCall{to: to, method: r.Method, path: "/" + rest,
		requestID: r.Header.Get(correlation.HeaderRequestID), traceparent: r.Header.Get(correlation.HeaderTraceparent)}
	status := a.forward(w, r, to, "/"+rest)
	call.status = status
	a.mu.Lock()
	a.calls = append(a.calls, call)
	a.mu.Unlock()
}

func (a *fakeAgent) forward(w http.ResponseWriter, r *http.Request, to, path string) int {
	a.mu.Lock()
	down := a.down[to]
	a.mu.Unlock()
	base, ok := a.env.urls[to]
	switch {
	case !ok:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown service"})
		return http.StatusNotFound
	case !allowedCalls[[2]string{a.caller, to}]:
		writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]string{"code": "forbidden", "message": "the policy does not allow this call"}})
		return http.StatusForbidden
	case down:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "upstream unavailable"})
		return http.StatusServiceUnavailable
	}
	uri := path
	if r.URL.RawQuery != "" {
		uri += "?" + r.URL.RawQuery
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, base+uri, r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "bad request"})
		return http.StatusBadGateway
	}
	req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	req.Header.Set(peer.HeaderPeerID, a.env.bank.ids[a.caller].String())
	for _, h := range []string{correlation.HeaderRequestID, correlation.HeaderTraceparent} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	peer.Sign(req.Header, a.env.keys[to], req.Method, req.URL.RequestURI(), time.Now())
	resp, err := a.env.client.Do(req)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "upstream unreachable"})
		return http.StatusBadGateway
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	return resp.StatusCode
}

// testEnv is the four services on real loopback listeners, with a fake
// agent outbound for each service that calls others.
type testEnv struct {
	bank *Bank
	rec  *recorder
	// client is the env's own HTTP client: cleanup closes its idle
	// connections before the services shut down, because net/http's
	// Shutdown waits up to 5 s for a dialled connection that never carried
	// a request.
	client *http.Client
	keys   map[string][]byte
	urls   map[string]string // service name -> http://127.0.0.1:port
	agents map[string]*fakeAgent
}

type envOptions struct {
	// outbound overrides a service's outbound URL (e.g. a closed port).
	outbound map[string]string
}

func newEnv(t *testing.T, opts envOptions) *testEnv {
	t.Helper()
	env := &testEnv{client: &http.Client{Transport: &http.Transport{}}, rec: &recorder{}, keys: map[string][]byte{}, urls: map[string]string{}, agents: map[string]*fakeAgent{}}
	outbound := map[string]string{}
	for _, caller := range []string{"payments", "notifications"} {
		a := &fakeAgent{env: env, caller: caller, down: map[string]bool{}}
		env.agents[caller] = a
		outbound[caller] = serveHTTP(t, a)
	}
	for k, v := range opts.outbound {
		outbound[k] = v
	}
	for _, name := range Services {
		key, err := peer.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		env.keys[name] = key
	}
	b, err := New(Config{DataDir: t.TempDir(), OutboundURLs: outbound, PeerKeys: env.keys},
		Deps{Events: env.rec, OnRefused: env.rec.onRefused})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	env.bank = b
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		env.client.CloseIdleConnections()
		cancel()
		wg.Wait()
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	for _, name := range Services {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		env.urls[name] = "http://" + ln.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Serve(ctx, name, ln); err != nil {
				t.Errorf("Serve %s: %v", name, err)
			}
		}()
	}
	return env
}

// serveHTTP serves h on a loopback listener until the test ends.
func serveHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// call is a request as an agent delivers it to a service: signed with the
// service's key, from peer (a bank service name or "gateway"), for user.
type call struct {
	service, method, path string
	body                  any
	peer, user            string
	headers               map[string]string
	// sign, if set, replaces the normal signing (attacks).
	sign func(h http.Header, key []byte, method, uri string)
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("decode %s: %v", a.body, err)
	}
}

func (a answer) errorMessage(t *testing.T) string {
	t.Helper()
	var e errorBody
	a.json(t, &e)
	return e.Error
}

func (env *testEnv) do(t *testing.T, c call) answer {
	t.Helper()
	a, err := env.send(t.Name(), c)
	if err != nil {
		t.Fatalf("%s %s %s: %v", c.service, c.method, c.path, err)
	}
	return a
}

// send is do without the test: safe from any goroutine.
func (env *testEnv) send(testName string, c call) (answer, error) {
	var rd io.Reader
	if c.body != nil {
		if raw, ok := c.body.(string); ok {
			rd = strings.NewReader(raw)
		} else {
			b, err := json.Marshal(c.body)
			if err != nil {
				return answer{}, err
			}
			rd = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequest(c.method, env.urls[c.service]+c.path, rd)
	if err != nil {
		return answer{}, err
	}
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.peer == "" {
		c.peer = "gateway"
	}
	if id, ok := env.bank.ServiceID(c.peer); ok {
		req.Header.Set(peer.HeaderPeerID, id.String())
	} else {
		req.Header.Set(peer.HeaderPeerID, c.peer)
	}
	if c.user != "" {
		req.Header.Set(peer.HeaderUser, c.user)
		req.Header.Set(peer.HeaderClient, "bank-web")
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	if req.Header.Get(correlation.HeaderRequestID) == "" {
		req.Header.Set(correlation.HeaderRequestID, "req-"+strings.ReplaceAll(testName, "/", "-"))
	}
	if c.sign != nil {
		c.sign(req.Header, env.keys[c.service], req.Method, req.URL.RequestURI())
	} else {
		peer.Sign(req.Header, env.keys[c.service], req.Method, req.URL.RequestURI(), time.Now())
	}
	resp, err := env.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	keys := func() map[string][]byte {
		m := map[string][]byte{}
		for _, n := range Services {
			m[n] = bytes.Repeat([]byte{1}, peer.KeySize)
		}
		return m
	}
	outbound := func() map[string]string {
		return map[string]string{"payments": "http://127.0.0.1:15001", "notifications": "http://127.0.0.1:15002"}
	}
	tests := []struct {
		name    string
		mutate  func(c *Config)
		wantErr string
	}{
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data_dir is empty"},
		{"missing peer key", func(c *Config) { delete(c.PeerKeys, "ledger") }, "peer key of ledger is 0 bytes"},
		{"short peer key", func(c *Config) { c.PeerKeys["accounts"] = []byte("short") }, "peer key of accounts is 5 bytes"},
		{"peer key of an unknown service", func(c *Config) { c.PeerKeys["vault"] = c.PeerKeys["ledger"] }, `unknown service "vault"`},
		{"no outbound for payments", func(c *Config) { delete(c.OutboundURLs, "payments") }, "payments needs the outbound URL"},
		{"outbound not on loopback", func(c *Config) { c.OutboundURLs["payments"] = "http://10.0.0.8:15001" }, "loopback"},
		{"outbound with a bad scheme", func(c *Config) { c.OutboundURLs["notifications"] = "ftp://127.0.0.1:21" }, "scheme must be http or https"},
		{"outbound with credentials", func(c *Config) { c.OutboundURLs["payments"] = "http://u:s3cret@127.0.0.1:1" }, "without credentials"},
		{"outbound not a URL", func(c *Config) { c.OutboundURLs["payments"] = "http://[::1" }, "not a URL"},
		{"bad trust domain", func(c *Config) { c.TrustDomain = "Not A Domain" }, "trust domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{DataDir: t.TempDir(), PeerKeys: keys(), OutboundURLs: outbound()}
			tt.mutate(&cfg)
			b, err := New(cfg, Deps{})
			if err == nil {
				b.Close()
				t.Fatal("New accepted the config")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q repeats a credential", err)
			}
		})
	}
}

// fakeListener is a listener on an address of our choosing, never accepting.
type fakeListener struct{ addr net.Addr }

func (l fakeListener) Accept() (net.Conn, error) { return nil, errors.New("fake listener") }
func (l fakeListener) Close() error              { return nil }
func (l fakeListener) Addr() net.Addr            { return l.addr }

func TestServeRefusesNonLoopbackListener(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})
	tests := []struct {
		name string
		addr net.Addr
	}{
		{"all interfaces", &net.TCPAddr{IP: net.IPv4zero, Port: 8081}},
		{"a routable address", &net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 8081}},
		{"IPv6 all interfaces", &net.TCPAddr{IP: net.IPv6zero, Port: 8081}},
		{"a unix socket", &net.UnixAddr{Name: "/tmp/bank.sock", Net: "unix"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := env.bank.Serve(context.Background(), "accounts", fakeListener{tt.addr})
			if err == nil || !strings.Contains(err.Error(), "not on a loopback address") {
				t.Errorf("Serve = %v, want a loopback refusal", err)
			}
		})
	}
	if err := env.bank.Serve(context.Background(), "vault", fakeListener{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}); err == nil {
		t.Error("Serve accepted an unknown service")
	}
	if _, err := env.bank.Handler("vault"); err == nil {
		t.Error("Handler accepted an unknown service")
	}
}

// TestRefusesRequestsThatBypassTheAgent: a request to a service port that
// did not come through the agent — unsigned, signed with another key,
// tampered with after signing, or replayed after the signature expired — is
// refused with 401, reported to OnRefused and audited as an authentication
// failure; the service never sees it.
func TestRefusesRequestsThatBypassTheAgent(t *testing.T) {
	t.Parallel()
	env := newEnv(t, envOptions{})
	otherKey, err := peer.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	attacks := []struct {
		name    string
		sign    func(h http.Header, key []byte, method, uri string)
		wantErr error
		detail  string
	}{
		{"unsigned", func(http.Header, []byte, string, string) {}, peer.ErrUnsigned, "request not signed by the agent"},
		{"signed with another key", func(h http.Header, _ []byte, m, u string) { peer.Sign(h, otherKey, m, u, time.Now()) },
			peer.ErrBadSignature, "agent signature invalid"},
		{"user swapped after signing", func(h http.Header, key []byte, m, u string) {
			peer.Sign(h, key, m, u, time.Now())
			h.Set(peer.HeaderUser, "mallory")
		}, peer.ErrBadSignature, "agent signature invalid"},
		{"replayed after expiry", func(h http.Header, key []byte, m, u string) {
			peer.Sign(h, key, m, u, time.Now().Add(-2*peer.MaxAge))
		}, peer.ErrExpired, "agent signature expired"},
	}
	targets := []struct{ service, method, path string }{
		{"accounts", http.MethodGet, "/v1/accounts"},
		{"payments", http.MethodGet, "/v1/payments/pay_00000000000000000000000000000000"},
		{"ledger", http.MethodGet, "/v1/entries"},
		{"notifications", http.MethodGet, "/v1/notifications"},
	}
	for _, tg := range targets {
		for _, at := range attacks {
			t.Run(tg.service+"/"+at.name, func(t *testing.T) {
				before := len(env.rec.refusalsOf(tg.service))
				rid := "attack-" + strings.ReplaceAll(tg.service+"-"+at.name, " ", "-")
				a := env.do(t, call{service: tg.service, method: tg.method, path: tg.path, user: "alice",
					headers: map[string]string{correlation.HeaderRequestID: rid}, sign: at.sign})
				if a.status != http.StatusUnauthorized {
					t.Fatalf("status %d, want 401: %s", a.status, a.body)
				}
				refs := env.rec.refusalsOf(tg.service)
				if len(refs) != before+1 || !errors.Is(refs[len(refs)-1].err, at.wantErr) {
					t.Fatalf("OnRefused got %v, want one more refusal with %v", refs, at.wantErr)
				}
				evs := env.rec.eventsWhere(func(e *audit.Event) bool { return e.Metadata.CorrelationUID == rid })
				if len(evs) != 1 {
					t.Fatalf("%d events for the refusal, want 1", len(evs))
				}
				e := evs[0]
				if e.ClassUID != 3002 || e.ActivityID != 1 || e.StatusID != audit.StatusFailure || e.StatusDetail != at.detail {
					t.Errorf("event %+v, want an Authentication failure %q", e, at.detail)
				}
				if len(e.Resources) != 1 || e.Resources[0].Name != tg.service {
					t.Errorf("event resources %+v, want the %s service", e.Resources, tg.service)
				}
			})
		}
	}
	// Nothing of the refused requests reached a service: alice has no account.
	if evs := env.rec.eventsWhere(func(e *audit.Event) bool { return e.StatusDetail == "account opened" }); len(evs) != 0 {
		t.Errorf("a refused request opened an account: %+v", evs)
	}
}

func TestDatabasesAreMigratedOncePerService(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keys := map[string][]byte{}
	for _, n := range Services {
		keys[n] = bytes.Repeat([]byte{7}, peer.KeySize)
	}
	cfg := Config{DataDir: dir, PeerKeys: keys,
		OutboundURLs: map[string]string{"payments": "http://127.0.0.1:1", "notifications": "http://localhost:2"}}
	for i := range 2 { // the second start finds the schema in place
		b, err := New(cfg, Deps{})
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		for _, name := range Services {
			var mode string
			if err := b.dbs[name].QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
				t.Errorf("%s: journal mode %q (%v), want wal", name, mode, err)
			}
			var v int
			if err := b.dbs[name].QueryRow(`SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil || v != len(migrations[name]) {
				t.Errorf("%s: schema version %d (%v), want %d", name, v, err, len(migrations[name]))
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// id returns the SPIFFE ID of a bank service in the test trust domain.
func id(t *testing.T, name string) spiffeid.ID {
	t.Helper()
	return spiffeid.RequireFromString("spiffe://bulwark.local/ns/bank/sa/" + name)
}
