package workload

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/peer"

	"github.com/bulwarksec/bulwark/internal/keys"
)

func TestMatches(t *testing.T) {
	t.Parallel()
	c := &caller{peerCreds: peerCreds{PID: 7, UID: 1001, GID: 100}, Path: "/usr/bin/payments", SHA256: "ab12"}
	have := c.selectors()
	sel := func(ss ...string) Entry {
		var e Entry
		for _, s := range ss {
			typ, val, _ := strings.Cut(s, ":")
			e.Selectors = append(e.Selectors, Selector{typ, val})
		}
		return e
	}
	tests := []struct {
		name  string
		entry Entry
		want  bool
	}{
		{"uid", sel("unix:uid:1001"), true},
		{"all match", sel("unix:uid:1001", "unix:gid:100", "unix:path:/usr/bin/payments", "unix:sha256:ab12"), true},
		{"other uid", sel("unix:uid:1002"), false},
		{"one of two fails", sel("unix:uid:1001", "unix:sha256:ffff"), false},
		{"other path", sel("unix:uid:1001", "unix:path:/usr/bin/payments2"), false},
		{"path prefix is not a match", sel("unix:path:/usr/bin/pay"), false},
		{"other type", sel("k8s:uid:1001"), false},
		{"no selectors matches nothing", Entry{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := matches(tt.entry, have); got != tt.want {
				t.Fatalf("matches = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNormalizeSerial(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"0a1B", "a1b"},
		{"0x00ff", "ff"},
		{"01:02", "102"},
		{"", ""},
		{"xyz", ""},
		{"-1", ""},
	}
	for _, tt := range tests {
		if got := normalizeSerial(tt.in); got != tt.want {
			t.Errorf("normalizeSerial(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func testCert(t *testing.T, id spiffeid.ID, notAfter time.Time) ([]*x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0x1234), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter, URIs: []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{cert}, keyDER
}

func TestStateRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sealed, err := keys.OpenSealed(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	st := &stateStore{path: filepath.Join(dir, stateFile), sealer: sealed}
	agentID := spiffeid.RequireFromString("spiffe://example.org/agent/n1")
	wlID := spiffeid.RequireFromString("spiffe://example.org/ns/a/sa/b")
	chain, keyDER := testCert(t, agentID, time.Now().Add(time.Hour))
	wchain, wkeyDER := testCert(t, wlID, time.Now().Add(time.Hour))

	s := newState()
	s.agentID, s.agentChain, s.agentKeyDER = agentID, chain, keyDER
	if s.agentKey, err = parseKey(keyDER); err != nil {
		t.Fatal(err)
	}
	s.bundle = spiffebundle.FromX509Authorities(agentID.TrustDomain(), chain)
	s.entries = []Entry{{ID: "ent_1", SPIFFEID: wlID, ParentID: agentID, Selectors: []Selector{{"unix", "uid:1"}}, TTL: time.Minute}}
	wkey, err := parseKey(wkeyDER)
	if err != nil {
		t.Fatal(err)
	}
	s.svids["ent_1"] = &svid{entryID: "ent_1", id: wlID, chain: wchain, key: wkey, keyDER: wkeyDER}
	s.deny.seq = 9
	s.deny.ids["spiffe://example.org/ns/x/sa/y"] = true
	s.deny.serials["ff"] = true
	if err := st.save(s); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(st.path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "ent_1") || strings.Contains(string(raw), "example.org") {
		t.Fatal("state file is not sealed")
	}
	fi, err := os.Stat(st.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := st.load()
	if err != nil {
		t.Fatal(err)
	}
	if got.agentID != agentID || !got.agentChain[0].Equal(chain[0]) || !got.bundle.Equal(s.bundle) {
		t.Fatal("agent identity or bundle differs after reload")
	}
	if len(got.entries) != 1 || got.entries[0].SPIFFEID != wlID || got.entries[0].TTL != time.Minute || got.entries[0].Selectors[0] != (Selector{"unix", "uid:1"}) {
		t.Fatalf("entries after reload: %+v", got.entries)
	}
	if sv := got.svids["ent_1"]; sv == nil || sv.id != wlID || !publicKeyMatches(sv.chain[0], sv.key) {
		t.Fatal("workload SVID differs after reload")
	}
	if got.deny.seq != 9 || !got.deny.ids["spiffe://example.org/ns/x/sa/y"] || !got.deny.serials["ff"] {
		t.Fatal("deny list differs after reload")
	}

	// A tampered file is refused, not half-loaded.
	raw[len(raw)-1] ^= 1
	if err := os.WriteFile(st.path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.load(); err == nil {
		t.Fatal("tampered state loaded")
	}
}

func TestListenSocket(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "wls")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	t.Run("stale socket removed, mode 0660", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		ln2, err := listenSocket(path)
		if err != nil {
			t.Fatalf("stale socket not replaced: %v", err)
		}
		defer ln2.Close()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != socketMode {
			t.Fatalf("socket mode %v, want %v", fi.Mode().Perm(), socketMode)
		}
	})
	t.Run("live socket kept", func(t *testing.T) {
		path := filepath.Join(dir, "live.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if _, err := listenSocket(path); err == nil || !strings.Contains(err.Error(), "another process") {
			t.Fatalf("live socket taken over: %v", err)
		}
	})
	t.Run("regular file kept", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := listenSocket(path); err == nil {
			t.Fatal("a regular file was replaced by the socket")
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "x" {
			t.Fatal("the regular file was changed")
		}
	})
}

func TestParseStartTime(t *testing.T) {
	t.Parallel()
	rest := " S 1 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10"
	tests := []struct {
		name, stat string
		want       uint64
		wantErr    bool
	}{
		{"plain", "42 (payments)" + rest, 98765, false},
		{"name with spaces and parentheses", "42 (a) b (c))" + rest, 98765, false},
		{"no parenthesis", "42 payments" + rest, 0, true},
		{"truncated", "42 (p) S 1 1", 0, true},
		{"not a number", "42 (p) S 1 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 x 1000", 0, true},
		{"empty", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseStartTime(tt.stat)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseStartTime = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestAttestRefusesReusedPID: an RPC whose connection-time process start
// time differs from the pid's current one (the connecting process died and
// its pid was reused) is not attested as the new process.
func TestAttestRefusesReusedPID(t *testing.T) {
	t.Parallel()
	at := newAttestor()
	pid := int32(os.Getpid())
	start, err := procStartTime(at.proc, pid)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	ctxFor := func(pc peerCreds) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: pc})
	}
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	tests := []struct {
		name    string
		pc      peerCreds
		wantErr string
	}{
		{"same process", peerCreds{PID: pid, UID: uid, GID: gid, Start: start}, ""},
		{"pid reused", peerCreds{PID: pid, UID: uid, GID: gid, Start: start + 1}, "pid reused"},
		{"start unknown", peerCreds{PID: pid, UID: uid, GID: gid}, "pid reused"},
		{"no such process", peerCreds{PID: 1 << 30, UID: uid, GID: gid, Start: start}, "process"},
		{"no pid", peerCreds{UID: uid, GID: gid}, "no pid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := at.attest(ctxFor(tt.pc))
			if tt.wantErr == "" {
				if err != nil || c.Path != exe || len(c.SHA256) != 64 {
					t.Fatalf("attest = %+v, %v", c, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("attest error %v, want %q", err, tt.wantErr)
			}
			if c != nil && (c.Path != "" || c.SHA256 != "") {
				t.Fatal("a refused attestation still resolved the binary")
			}
		})
	}
	if _, err := at.attest(context.Background()); err == nil {
		t.Fatal("attested a call without peer information")
	}
}

func TestDueForRenewal(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/a/sa/b")
	chain, _ := testCert(t, id, t0.Add(10*time.Second))
	cert := chain[0]
	cert.NotBefore = t0.Add(-10 * time.Second) // backdated by the CA
	tests := []struct {
		name     string
		fraction float64
		received time.Time
		now      time.Time
		want     bool
	}{
		{"fresh", 0.5, t0, t0.Add(time.Second), false},
		{"just before half-life from reception", 0.5, t0, t0.Add(4900 * time.Millisecond), false},
		{"half-life from reception", 0.5, t0, t0.Add(5 * time.Second), true},
		{"unknown reception counts from NotBefore", 0.5, time.Time{}, t0, true},
		{"fraction 0.9", 0.9, t0, t0.Add(8 * time.Second), false},
		{"fraction 0.9 reached", 0.9, t0, t0.Add(9 * time.Second), true},
		{"expired", 0.5, t0, t0.Add(time.Minute), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := &Agent{cfg: Config{RotationFraction: tt.fraction, Now: func() time.Time { return tt.now }}}
			if got := a.dueForRenewal(cert, tt.received); got != tt.want {
				t.Fatalf("dueForRenewal = %v, want %v", got, tt.want)
			}
		})
	}
}
