package authz_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/sdk/authz"
)

// eventually is the generous deadline for anything asynchronous.
const eventually = 10 * time.Second

// fakeClock is an injected clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// bundleServer is a control plane's bundle endpoint, per the protocol:
// 200 with the bundle and ETag when the client's If-None-Match is older,
// else hold up to ?wait= and answer 304.
type bundleServer struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	raw     []byte
	version int64
	changed chan struct{}
	// replay makes the server answer every request with its bundle, as an
	// attacker replaying an old one would.
	replay bool
	status int // answer this status instead when non-zero

	requests  atomic.Int64
	lastQuery atomic.Value // string
	lastMatch atomic.Value // string
	lastAuth  atomic.Value // string
}

func newBundleServer(t *testing.T) *bundleServer {
	s := &bundleServer{t: t, changed: make(chan struct{})}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *bundleServer) publish(raw []byte, version int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw, s.version = raw, version
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *bundleServer) setReplay(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replay = on
}

func (s *bundleServer) setStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = code
}

func (s *bundleServer) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.lastQuery.Store(r.URL.RawQuery)
	s.lastMatch.Store(r.Header.Get("If-None-Match"))
	s.lastAuth.Store(r.Header.Get("Authorization"))
	if r.URL.Path != authz.BundlePath || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
	if err != nil {
		http.Error(w, "bad wait", http.StatusBadRequest)
		return
	}
	for {
		s.mu.Lock()
		raw, version, changed, replay, status := s.raw, s.version, s.changed, s.replay, s.status
		s.mu.Unlock()
		if status != 0 {
			http.Error(w, "unavailable", status)
			return
		}
		have, herr := strconv.ParseInt(strings.Trim(r.Header.Get("If-None-Match"), `"`), 10, 64)
		if raw != nil && (replay || herr != nil || have < version) {
			w.Header().Set("ETag", `"`+strconv.FormatInt(version, 10)+`"`)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(raw)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
			t.Stop()
			continue
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
		w.WriteHeader(http.StatusNotModified)
		return
	}
}

// clientPolicies: alice may read; a forbid for mallory.
func bundleAt(t *testing.T, priv ed25519.PrivateKey, version int64, issued time.Time, extra string) []byte {
	t.Helper()
	c := testContent(version)
	c.IssuedAt, c.ExpiresAt = issued, issued.Add(time.Hour)
	if extra != "" {
		c.Policies["extra.cedar"] = extra
	}
	return signedRaw(t, c, priv)
}

type harness struct {
	pub      ed25519.PublicKey
	priv     ed25519.PrivateKey
	clock    *fakeClock
	server   *bundleServer
	refusals chan authz.BundleRefusal
}

func newHarness(t *testing.T) *harness {
	pub, priv := newKey(t)
	return &harness{pub: pub, priv: priv, clock: &fakeClock{now: testIssued}, server: newBundleServer(t),
		refusals: make(chan authz.BundleRefusal, 16)}
}

func (h *harness) config(cache string) authz.Config {
	return authz.Config{
		URL: h.server.srv.URL, HTTPClient: h.server.srv.Client(), TrustedKeys: []ed25519.PublicKey{h.pub},
		Now: h.clock.Now, PollWait: 2 * time.Second, CacheFile: cache,
		Token:     func(context.Context) (string, error) { return "tok", nil },
		OnRefused: func(r authz.BundleRefusal) { h.refusals <- r },
	}
}

// start runs a client until the test ends.
func (h *harness) start(t *testing.T, cfg authz.Config) *authz.Client {
	t.Helper()
	c, err := authz.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(eventually):
			t.Error("Run did not return after its context ended")
		}
	})
	return c
}

func waitVersion(t *testing.T, c *authz.Client, v int64, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := c.WaitVersion(ctx, v); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) refusal(t *testing.T) authz.BundleRefusal {
	t.Helper()
	select {
	case r := <-h.refusals:
		return r
	case <-time.After(eventually):
		t.Fatal("no bundle refusal reported")
		return authz.BundleRefusal{}
	}
}

var (
	readAlice   = authz.Request{Principal: uid("User", "alice"), Action: action("read"), Resource: uid("User", "alice")}
	readMallory = authz.Request{Principal: uid("User", "mallory"), Action: action("read"), Resource: uid("User", "alice")}
)

func TestClientNoBundleDenies(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.server.setStatus(http.StatusInternalServerError)
	c := h.start(t, h.config(""))
	deadline := time.Now().Add(eventually)
	for h.server.requests.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling for the retry, with a deadline
	}
	if h.server.requests.Load() < 2 {
		t.Fatal("client did not retry after a server error")
	}
	d := c.Decide(readAlice)
	if d.Allowed || d.Refusal != authz.RefusalNoBundle || d.BundleVersion != 0 || c.Version() != 0 {
		t.Errorf("without a bundle: %+v, version %d; want a denial with refusal %q", d, c.Version(), authz.RefusalNoBundle)
	}
}

func TestClientLongPoll(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.server.publish(bundleAt(t, h.priv, 1, testIssued, ""), 1)
	c := h.start(t, h.config(""))
	waitVersion(t, c, 1, eventually)
	if d := c.Decide(readAlice); !d.Allowed || d.BundleVersion != 1 || !equalStrings(d.Reasons, "allow-read") {
		t.Fatalf("decision from version 1: %+v", d)
	}
	// The client is now parked in a long poll; a new bundle must reach it
	// within 5 s.
	deadline := time.Now().Add(eventually)
	for h.server.lastMatch.Load() != `"1"` && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := h.server.lastMatch.Load(); got != `"1"` {
		t.Fatalf("If-None-Match = %v, want \"1\"", got)
	}
	if q := h.server.lastQuery.Load().(string); q != "wait=2s" {
		t.Errorf("query %q, want wait=2s", q)
	}
	if a := h.server.lastAuth.Load(); a != "Bearer tok" {
		t.Errorf("Authorization %v, want the bearer token", a)
	}
	h.server.publish(bundleAt(t, h.priv, 2, testIssued, `@id("no-alice") forbid (principal == Bulwark::User::"alice", action, resource);`), 2)
	start := time.Now()
	waitVersion(t, c, 2, 5*time.Second)
	t.Logf("new bundle active after %v", time.Since(start))
	if d := c.Decide(readAlice); d.Allowed || d.BundleVersion != 2 || !equalStrings(d.Reasons, "no-alice") {
		t.Errorf("decision from version 2: %+v", d)
	}
}

func equalStrings(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func TestClientRefusesBadBundles(t *testing.T) {
	t.Parallel()
	_, otherPriv := newKey(t)
	tests := []struct {
		name   string
		bundle func(h *harness) []byte
		want   authz.BundleRefusalReason
	}{
		{name: "policy changed after signing", want: authz.RefusedDigest, bundle: func(h *harness) []byte {
			return mutateJSON(t, bundleAt(t, h.priv, 2, testIssued, ""), func(b *authz.Bundle) {
				b.Policies["b.cedar"] = `permit (principal == Bulwark::User::"mallory", action, resource);`
			})
		}},
		{name: "entities changed after signing", want: authz.RefusedDigest, bundle: func(h *harness) []byte {
			return mutateJSON(t, bundleAt(t, h.priv, 2, testIssued, ""), func(b *authz.Bundle) { b.Entities = json.RawMessage(`[]`) })
		}},
		{name: "manifest changed after signing", want: authz.RefusedBadSignature, bundle: func(h *harness) []byte {
			return mutateJSON(t, bundleAt(t, h.priv, 2, testIssued, ""), func(b *authz.Bundle) {
				b.Manifest = replaceB64(t, b.Manifest, `"version":2`, `"version":3`)
			})
		}},
		{name: "signed by another key", want: authz.RefusedUnknownKey, bundle: func(*harness) []byte {
			return bundleAt(t, otherPriv, 2, testIssued, `permit (principal, action, resource);`)
		}},
		{name: "expired", want: authz.RefusedExpired, bundle: func(h *harness) []byte {
			return bundleAt(t, h.priv, 2, testIssued.Add(-2*time.Hour), "")
		}},
		{name: "not a bundle", want: authz.RefusedMalformed, bundle: func(*harness) []byte { return []byte(`{"hello":"world"}`) }},
		{name: "oversized", want: authz.RefusedMalformed, bundle: func(h *harness) []byte {
			raw := bundleAt(t, h.priv, 2, testIssued, "")
			return append(raw, make([]byte, authz.DefaultMaxBundleBytes)...)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.server.publish(bundleAt(t, h.priv, 1, testIssued, ""), 1)
			c := h.start(t, h.config(""))
			waitVersion(t, c, 1, eventually)
			h.server.publish(tc.bundle(h), 2)
			r := h.refusal(t)
			if r.Reason != tc.want || r.Source != authz.SourceControlPlane || r.ActiveVersion != 1 || r.Err == nil {
				t.Errorf("refusal %+v, want reason %q from the control plane with version 1 kept", r, tc.want)
			}
			if c.Version() != 1 {
				t.Errorf("version %d after a refused bundle, want 1 kept", c.Version())
			}
			if d := c.Decide(readAlice); !d.Allowed || d.BundleVersion != 1 {
				t.Errorf("decision after a refused bundle: %+v, want version 1's allow", d)
			}
			if d := c.Decide(readMallory); d.Allowed {
				t.Errorf("the refused bundle's content was used: %+v", d)
			}
		})
	}
}

func TestClientRefusesRollback(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	old := bundleAt(t, h.priv, 1, testIssued, `permit (principal == Bulwark::User::"mallory", action, resource);`)
	h.server.publish(bundleAt(t, h.priv, 2, testIssued, ""), 2)
	c := h.start(t, h.config(""))
	waitVersion(t, c, 2, eventually)
	h.server.setReplay(true)
	h.server.publish(old, 1)
	r := h.refusal(t)
	if r.Reason != authz.RefusedRollback || r.Version != 1 || r.ActiveVersion != 2 {
		t.Errorf("refusal %+v, want a rollback of version 1 under version 2", r)
	}
	if c.Version() != 2 {
		t.Errorf("version %d after a replayed bundle, want 2", c.Version())
	}
	if d := c.Decide(readMallory); d.Allowed {
		t.Errorf("the replayed bundle's policy was used: %+v", d)
	}
}

func TestClientStaleness(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.server.publish(bundleAt(t, h.priv, 1, testIssued, ""), 1)
	cfg := h.config("")
	cfg.MaxStaleness = 10 * time.Minute
	c := h.start(t, cfg)
	waitVersion(t, c, 1, eventually)
	h.server.srv.CloseClientConnections()
	h.server.setStatus(http.StatusServiceUnavailable)
	h.server.srv.Close() // the control plane is gone
	tests := []struct {
		name    string
		at      time.Time
		allowed bool
		refusal string
	}{
		{name: "fresh", at: testIssued.Add(time.Minute), allowed: true},
		{name: "just inside the limit", at: testIssued.Add(10 * time.Minute), allowed: true},
		{name: "past the limit", at: testIssued.Add(10*time.Minute + time.Second), refusal: authz.RefusalStale},
		{name: "long after", at: testIssued.Add(50 * time.Hour), refusal: authz.RefusalStale},
	}
	for _, tc := range tests {
		h.clock.Set(tc.at)
		d := c.Decide(readAlice)
		if d.Allowed != tc.allowed || d.Refusal != tc.refusal || d.BundleVersion != 1 {
			t.Errorf("%s: %+v, want allowed=%v refusal=%q version 1", tc.name, d, tc.allowed, tc.refusal)
		}
	}
	// A bundle past its expiry is not used even within MaxStaleness.
	cfg.MaxStaleness = 48 * time.Hour
	h2 := newHarness(t)
	h2.server.publish(bundleAt(t, h2.priv, 1, testIssued, ""), 1)
	cfg2 := h2.config("")
	cfg2.MaxStaleness = 48 * time.Hour
	c2 := h2.start(t, cfg2)
	waitVersion(t, c2, 1, eventually)
	h2.clock.Set(testIssued.Add(time.Hour))
	if d := c2.Decide(readAlice); d.Allowed || d.Refusal != authz.RefusalStale {
		t.Errorf("expired bundle: %+v, want a stale refusal", d)
	}
}

func TestClientCacheFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cache := filepath.Join(t.TempDir(), "bundle.json")
	h.server.publish(bundleAt(t, h.priv, 3, testIssued, ""), 3)
	ctx, cancel := context.WithCancel(context.Background())
	first, err := authz.New(h.config(cache))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	waitVersion(t, first, 3, eventually)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	fi, err := os.Stat(cache)
	if err != nil {
		t.Fatalf("cache file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode %v, want 0600", fi.Mode().Perm())
	}

	// Restart with the control plane down: the cached bundle is used.
	h.server.setStatus(http.StatusServiceUnavailable)
	second, err := authz.New(h.config(cache))
	if err != nil {
		t.Fatal(err)
	}
	if second.Version() != 3 {
		t.Fatalf("version after a restart from the cache: %d, want 3", second.Version())
	}
	if d := second.Decide(readAlice); !d.Allowed || d.BundleVersion != 3 {
		t.Errorf("decision from the cache: %+v", d)
	}

	// Across the restart an older validly signed bundle is still a rollback.
	h.server.setStatus(0)
	h.server.setReplay(true)
	h.server.publish(bundleAt(t, h.priv, 2, testIssued, `permit (principal == Bulwark::User::"mallory", action, resource);`), 2)
	c := h.start(t, h.config(cache))
	if r := h.refusal(t); r.Reason != authz.RefusedRollback || r.Version != 2 || r.ActiveVersion != 3 {
		t.Errorf("refusal %+v, want a rollback to version 2 under the cached version 3", r)
	}
	if c.Version() != 3 {
		t.Errorf("version %d, want the cached 3", c.Version())
	}
}

func TestClientCacheFileRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, otherPriv := newKey(t)
	good := bundleAt(t, h.priv, 4, testIssued, "")
	tests := []struct {
		name  string
		raw   []byte
		want  authz.BundleRefusalReason
		floor int64
	}{
		{name: "tampered", raw: mutateJSON(t, good, func(b *authz.Bundle) { b.Schema += " " }), want: authz.RefusedDigest},
		{name: "another key", raw: bundleAt(t, otherPriv, 9, testIssued, ""), want: authz.RefusedUnknownKey},
		{name: "garbage", raw: []byte("not json"), want: authz.RefusedMalformed},
		{name: "expired still sets the rollback floor", raw: bundleAt(t, h.priv, 7, testIssued.Add(-3*time.Hour), ""), want: authz.RefusedExpired, floor: 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cache := filepath.Join(t.TempDir(), "bundle.json")
			if err := os.WriteFile(cache, tc.raw, 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := authz.New(h.config(cache))
			if err != nil {
				t.Fatal(err)
			}
			r := h.refusal(t)
			if r.Reason != tc.want || r.Source != authz.SourceCache || r.Version != tc.floor {
				t.Errorf("refusal %+v, want %q from the cache (version %d)", r, tc.want, tc.floor)
			}
			if c.Version() != 0 || c.Decide(readAlice).Allowed {
				t.Errorf("a refused cache file was used: version %d", c.Version())
			}
		})
	}
}

func TestNewConfigErrors(t *testing.T) {
	t.Parallel()
	pub, _ := newKey(t)
	good := authz.Config{URL: "https://127.0.0.1:8443", HTTPClient: http.DefaultClient, TrustedKeys: []ed25519.PublicKey{pub}}
	tests := []struct {
		name string
		edit func(c *authz.Config)
		want string
	}{
		{name: "no URL", edit: func(c *authz.Config) { c.URL = "" }, want: "URL"},
		{name: "plain http", edit: func(c *authz.Config) { c.URL = "http://127.0.0.1:8443" }, want: "https"},
		{name: "relative URL", edit: func(c *authz.Config) { c.URL = "/v1" }, want: "absolute"},
		{name: "no HTTP client", edit: func(c *authz.Config) { c.HTTPClient = nil }, want: "HTTPClient"},
		{name: "no keys", edit: func(c *authz.Config) { c.TrustedKeys = nil }, want: "trusted"},
		{name: "short key", edit: func(c *authz.Config) { c.TrustedKeys = []ed25519.PublicKey{pub[:10]} }, want: "trusted key 0"},
		{name: "negative staleness", edit: func(c *authz.Config) { c.MaxStaleness = -1 }, want: "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tc.edit(&cfg)
			_, err := authz.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error naming %q", err, tc.want)
			}
		})
	}
	if _, err := authz.New(good); err != nil {
		t.Errorf("New with a good config: %v", err)
	}
}

func TestWaitVersionContext(t *testing.T) {
	t.Parallel()
	pub, _ := newKey(t)
	c, err := authz.New(authz.Config{URL: "https://127.0.0.1:1", HTTPClient: http.DefaultClient, TrustedKeys: []ed25519.PublicKey{pub}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.WaitVersion(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitVersion: %v, want context.Canceled", err)
	}
}

// TestClientPacesAnEagerServer: a server that answers at once instead of
// holding the long poll (here: the same bundle again and again) must not
// make the client spin.
func TestClientPacesAnEagerServer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.server.publish(bundleAt(t, h.priv, 1, testIssued, ""), 1)
	h.server.setReplay(true)
	c := h.start(t, h.config(""))
	waitVersion(t, c, 1, eventually)
	before := h.server.requests.Load()
	time.Sleep(2 * time.Second) // the interval being measured, not synchronisation
	if n := h.server.requests.Load() - before; n > 4 {
		t.Errorf("%d requests in 2 s to a server answering at once, want at most about one a second", n)
	}
	select {
	case r := <-h.refusals:
		t.Errorf("the same version again was refused: %+v", r)
	default:
	}
}

// TestClientStalenessCountsFromConfirmation: a connected client whose
// bundle was signed long ago is not stale while the control plane keeps
// confirming it (304 Not Modified); once the control plane is gone, the
// limit counts from the last confirmation.
func TestClientStalenessCountsFromConfirmation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.server.publish(bundleAt(t, h.priv, 1, testIssued, ""), 1)
	cfg := h.config("")
	cfg.MaxStaleness = 10 * time.Minute
	cfg.PollWait = time.Second
	c := h.start(t, cfg)
	waitVersion(t, c, 1, eventually)

	// 30 minutes later the bundle is unchanged; a long poll confirms it.
	confirmedAt := testIssued.Add(30 * time.Minute)
	h.clock.Set(confirmedAt)
	before := h.server.requests.Load()
	deadline := time.Now().Add(eventually)
	for h.server.requests.Load() < before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d := c.Decide(readAlice); !d.Allowed {
		t.Fatalf("a confirmed bundle signed 30 minutes ago: %+v, want allowed", d)
	}
	h.server.srv.CloseClientConnections()
	h.server.setStatus(http.StatusServiceUnavailable)
	h.server.srv.Close()
	h.clock.Set(confirmedAt.Add(9 * time.Minute))
	if d := c.Decide(readAlice); !d.Allowed {
		t.Fatalf("9 minutes after the last confirmation: %+v, want allowed", d)
	}
	h.clock.Set(confirmedAt.Add(10*time.Minute + time.Second))
	if d := c.Decide(readAlice); d.Allowed || d.Refusal != authz.RefusalStale {
		t.Fatalf("past the limit after the last confirmation: %+v, want a stale refusal", d)
	}
}
