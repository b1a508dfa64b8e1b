package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The workload identities of the test, in the default trust domain.
const (
	wlTrustDomain = "bulwark.local"
	wlPayments    = "spiffe://" + wlTrustDomain + "/ns/bank/sa/payments"
	wlAccounts    = "spiffe://" + wlTrustDomain + "/ns/bank/sa/accounts"
	wlLedger      = "spiffe://" + wlTrustDomain + "/ns/bank/sa/ledger"
	wlOtherUID    = "spiffe://" + wlTrustDomain + "/ns/bank/sa/notifications"
	wlOtherHash   = "spiffe://" + wlTrustDomain + "/ns/bank/sa/gateway"
	wlAgent       = "spiffe://" + wlTrustDomain + "/agent/node-1"
	// wlSVIDTTL is short so that the test sees rotations and expiry
	// within a minute, and long enough that a loaded CI machine renews at
	// the half-life point (10 s) well before expiry.
	wlSVIDTTL = 20 * time.Second
)

// TestWorkloadIdentityEndToEnd is issue 4's "done when" against the
// bulwark binary: `bulwark server` (20 s SVIDs) and `bulwark agent` run as
// real processes, registration goes through `bulwark ca`, and this test
// process is the workload, using go-spiffe's unmodified Workload API
// client. It checks, in order: a process matching no entry gets no SVID;
// a reused join token is refused; two workloads talk mTLS across two
// rotations; a quarantined identity is withdrawn and refused within 5 s;
// with the server stopped, the agent keeps serving valid SVIDs and then
// nothing once they expire, and mTLS with the expired SVIDs fails. The
// audit log verifies and holds the join, issuance and quarantine events.
func TestWorkloadIdentityEndToEnd(t *testing.T) {
	t.Parallel()
	env := startWorkloadServer(t)
	exe, exeHash := testBinary(t)
	uid := os.Getuid()

	// Entries this process must never match: another uid, another binary.
	env.ca(t, "entry", "create", "--spiffe-id", wlOtherUID,
		"--selector", fmt.Sprintf("unix:uid:%d", uid+1), "--selector", "unix:path:"+exe)
	env.ca(t, "entry", "create", "--spiffe-id", wlOtherHash,
		"--selector", fmt.Sprintf("unix:uid:%d", uid), "--selector", "unix:sha256:"+strings.Repeat("ab", 32))

	token := env.joinToken(t, "node-1")
	agent := env.startAgent(t, "agent1", token)
	addr := "unix://" + agent.socket

	// Done-when 2: no matching entry, no SVID.
	t.Run("no matching entry is PermissionDenied", func(t *testing.T) {
		code := fetchCode(t, addr)
		if code != codes.PermissionDenied {
			t.Fatalf("a process matching no entry: %v, want PermissionDenied", code)
		}
	})

	// Done-when 2: the join token is single-use.
	t.Run("reused join token is refused", func(t *testing.T) {
		second := env.startAgent(t, "agent2", token)
		select {
		case err := <-second.proc.done:
			second.proc.done <- err
			if err == nil {
				t.Fatal("a second agent joined with a used token and exited cleanly")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a second agent with a used join token is still running after 30 s")
		}
		if dialable(second.socket) {
			t.Fatal("the refused agent left a Workload API socket that answers")
		}
	})

	env.ca(t, "entry", "create", "--spiffe-id", wlPayments,
		"--selector", fmt.Sprintf("unix:uid:%d", uid), "--selector", "unix:path:"+exe)
	env.ca(t, "entry", "create", "--spiffe-id", wlAccounts,
		"--selector", fmt.Sprintf("unix:uid:%d", uid), "--selector", "unix:path:"+exe)
	env.ca(t, "entry", "create", "--spiffe-id", wlLedger,
		"--selector", fmt.Sprintf("unix:uid:%d", uid), "--selector", "unix:sha256:"+exeHash)

	// This process gets exactly the SVIDs of the entries it matches.
	// (The entries of another uid or binary were registered before.)
	waitSVIDs(t, addr, []string{wlAccounts, wlLedger, wlPayments}, 30*time.Second)

	payments := newSource(t, addr, wlPayments)
	accounts := newSource(t, addr, wlAccounts)
	ledger := newSource(t, addr, wlLedger)

	// issued maps every serial seen in a handshake to its SPIFFE ID: the
	// audit log must record each issuance.
	issued := map[string]string{}
	record := func(res *callResult, serverID, clientID string) {
		issued[res.serverSerial], issued[res.clientSerial] = serverID, clientID
	}

	// Done-when 1: payments serves accounts over mTLS across two rotations.
	pair := newMTLSPair(t, payments, wlPayments, accounts, wlAccounts)
	t.Run("mTLS across two rotations", func(t *testing.T) {
		serverSerials, clientSerials := map[string]bool{}, map[string]bool{}
		deadline := time.Now().Add(6 * wlSVIDTTL)
		for len(serverSerials) < 3 || len(clientSerials) < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("saw %d server and %d client serials in %s, want 3 each (two rotations)",
					len(serverSerials), len(clientSerials), 6*wlSVIDTTL)
			}
			res, err := pair.call()
			if err != nil {
				t.Fatalf("mTLS request during rotation: %v", err)
			}
			serverSerials[res.serverSerial] = true
			clientSerials[res.clientSerial] = true
			record(res, wlPayments, wlAccounts)
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("server serials %v, client serials %v", slices.Sorted(maps.Keys(serverSerials)), slices.Sorted(maps.Keys(clientSerials)))
	})

	// Done-when 2: quarantine withdraws the SVID and refuses new
	// connections within 5 s.
	t.Run("quarantine within 5 s", func(t *testing.T) {
		if _, err := pair.call(); err != nil {
			t.Fatalf("before quarantine: %v", err)
		}
		start := time.Now()
		env.ca(t, "quarantine", wlPayments, "--reason", "e2e-quarantine")
		for {
			_, err := pair.call()
			ids := fetchIDs(t, addr)
			if err != nil && !slices.Contains(ids, wlPayments) {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("5 s after quarantine: mTLS error %v, SVIDs served %v", err, ids)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("quarantine took effect in %s", time.Since(start).Round(time.Millisecond))
	})

	// Done-when 3: the server goes away; the agent keeps serving the valid
	// SVIDs, then nothing once they expired, and expired SVIDs fail mTLS.
	offline := newMTLSPair(t, accounts, wlAccounts, ledger, wlLedger)
	t.Run("server offline", func(t *testing.T) {
		res, err := offline.call()
		if err != nil {
			t.Fatalf("before the server stops: %v", err)
		}
		record(res, wlAccounts, wlLedger)
		if err := env.server.stop(t, syscall.SIGTERM, 15*time.Second); !exitedCleanly(err) {
			t.Fatalf("server did not stop cleanly: %v", err)
		}
		stopped := time.Now()
		// The latest expiry of what the agent holds: nothing can be renewed
		// from now on.
		var allExpired time.Time
		for _, sv := range fetchSVIDs(t, addr) {
			if sv.Certificates[0].NotAfter.After(allExpired) {
				allExpired = sv.Certificates[0].NotAfter
			}
		}
		lastExpiry := res.notAfter
		var okAfterStop int
		for {
			res, err := offline.call()
			now := time.Now()
			if err != nil {
				// Valid SVIDs keep working: the first failure is the expiry
				// of the SVIDs last served.
				if now.Before(lastExpiry.Add(-time.Second)) {
					t.Fatalf("mTLS failed %s after the server stopped, with SVIDs valid until %s: %v",
						now.Sub(stopped), lastExpiry.Format(time.RFC3339Nano), err)
				}
				break
			}
			okAfterStop++
			record(res, wlAccounts, wlLedger)
			if now.After(res.notAfter) {
				t.Fatalf("an mTLS handshake succeeded with a certificate expired at %s", res.notAfter)
			}
			lastExpiry = res.notAfter
			if now.Sub(stopped) > 3*wlSVIDTTL {
				t.Fatalf("mTLS still works %s after the server stopped, with %s SVIDs", now.Sub(stopped), wlSVIDTTL)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if okAfterStop < 5 {
			t.Fatalf("only %d requests worked after the server stopped", okAfterStop)
		}
		t.Logf("%d requests in %s after the server stopped, last certificate expiring at %s",
			okAfterStop, time.Since(stopped).Round(time.Millisecond), lastExpiry.Format(time.RFC3339Nano))
		// Once every SVID expired, the agent serves none.
		time.Sleep(time.Until(allExpired.Add(time.Second)))
		code := fetchCode(t, addr)
		if code == codes.OK {
			t.Fatal("the agent serves an SVID after every SVID it had expired")
		}
		t.Logf("after expiry the Workload API answers %v", code)
		if _, err := offline.call(); err == nil {
			t.Fatal("mTLS works with expired SVIDs")
		}
	})

	// The agent stops cleanly; the server, back on the same data, holds an
	// audit log that verifies and records what happened.
	if err := agent.proc.stop(t, syscall.SIGTERM, 15*time.Second); !exitedCleanly(err) {
		t.Fatalf("agent did not stop cleanly: %v", err)
	}
	env.restartServer(t)
	env.checkAudit(t, token, exe, issued)
}

// workloadEnv is a running `bulwark server` and where its files are.
type workloadEnv struct {
	dir, cfgPath, caFile, credFile, url string
	server                              *proc
	ep                                  *endpoint
	agents                              []*agentProc
}

// shortTempDir is a temporary directory with a short path: a unix socket
// path is limited to about 100 bytes, which t.TempDir() can exceed.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startWorkloadServer(t *testing.T) *workloadEnv {
	t.Helper()
	dir := shortTempDir(t)
	e := &workloadEnv{dir: dir, cfgPath: filepath.Join(dir, "server.yaml"),
		caFile: filepath.Join(dir, "server", "tls", "ca.pem"), credFile: filepath.Join(dir, "server", "admin.credential")}
	cfg := fmt.Sprintf("data_dir: %s\nlisten: 127.0.0.1:0\naudit:\n  checkpoint_interval: 1s\nca:\n  svid_ttl: %s\n",
		filepath.Join(dir, "server"), wlSVIDTTL)
	writeFile(t, e.cfgPath, []byte(cfg))
	e.restartServer(t)
	return e
}

// restartServer starts the server on the configuration and waits until
// it is ready.
func (e *workloadEnv) restartServer(t *testing.T) {
	t.Helper()
	e.server = startProc(t, "server", "--config", e.cfgPath)
	e.url = listenURL(t, e.server, 30*time.Second)
	e.ep = newEndpoint(t, e.url, e.caFile, e.credFile)
	e.ep.waitReady(t, 30*time.Second)
}

// ca runs `bulwark ca ARGS` against the server and returns its stdout.
func (e *workloadEnv) ca(t *testing.T, args ...string) string {
	t.Helper()
	args = append([]string{"ca"}, args...)
	return runBulwark(t, append(args, "--server", e.url, "--ca-cert", e.caFile, "--credential-file", e.credFile)...)
}

// joinToken creates a join token for agent name with the CLI.
func (e *workloadEnv) joinToken(t *testing.T, name string) string {
	t.Helper()
	out := e.ca(t, "join-token", "create", "--agent", name, "-o", "json")
	var res struct {
		Token   string `json:"token"`
		AgentID string `json:"agent_id"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Token == "" {
		t.Fatalf("join-token create: %v\n%s", err, out)
	}
	if res.AgentID != "spiffe://"+wlTrustDomain+"/agent/"+name {
		t.Fatalf("join-token create: agent ID %q", res.AgentID)
	}
	return res.Token
}

// agentProc is a running `bulwark agent`.
type agentProc struct {
	proc   *proc
	socket string
}

// startAgent starts an agent with its own data directory under name,
// joining with token.
func (e *workloadEnv) startAgent(t *testing.T, name, token string) *agentProc {
	t.Helper()
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "join.token")
	writeFile(t, tokenFile, []byte(token+"\n"))
	a := &agentProc{socket: filepath.Join(dir, "workload.sock")}
	cfg := fmt.Sprintf("data_dir: %s\nagent:\n  server_url: %s\n  server_ca_file: %s\n  join_token_file: %s\n  socket_path: %s\n",
		filepath.Join(dir, "data"), e.url, e.caFile, tokenFile, a.socket)
	cfgPath := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfgPath, []byte(cfg))
	a.proc = startProc(t, "agent", "--config", cfgPath)
	e.agents = append(e.agents, a)
	return a
}

// checkAudit verifies the audit log with the CLI and finds in it the
// agent's join, the refused reuse of its token, the refused attestation of
// exe, the issuance of every serial seen in a handshake and the
// quarantine. The join token is nowhere in the log nor in any process log.
func (e *workloadEnv) checkAudit(t *testing.T, token, exe string, issued map[string]string) {
	t.Helper()
	flags := []string{"--server", e.url, "--ca-cert", e.caFile, "--credential-file", e.credFile, "--key", verifierKey(t, e.ep)}
	runBulwark(t, append([]string{"audit", "verify", "--state", filepath.Join(e.dir, "state.json")}, flags...)...)
	tail := runBulwark(t, append([]string{"audit", "tail", "-n", "1000"}, flags...)...)
	events := parseAuditTail(t, tail)
	type auditCheck struct {
		what  string
		match func(ev auditRecord) bool
	}
	checks := []auditCheck{
		{"the agent's join", func(ev auditRecord) bool {
			return ev.ClassUID == 3002 && ev.StatusID == 1 && ev.names(wlAgent)
		}},
		{"the refused reuse of the join token", func(ev auditRecord) bool {
			return ev.ClassUID == 3002 && ev.StatusID == 2 && ev.names(wlAgent) && strings.Contains(ev.StatusDetail, "join")
		}},
		{"the refused attestation of a process matching no entry", func(ev auditRecord) bool {
			return ev.ClassUID == 3002 && ev.StatusID == 2 && ev.Unmapped["path"] == exe
		}},
		{"the quarantine", func(ev auditRecord) bool {
			return ev.ClassUID == 3004 && ev.ActivityID == 12 && ev.StatusID == 1 && ev.names(wlPayments) &&
				strings.Contains(ev.StatusDetail, "e2e-quarantine")
		}},
	}
	for serial, id := range issued {
		checks = append(checks, auditCheck{"the issuance of " + id + " serial " + serial, func(ev auditRecord) bool {
			return ev.ClassUID == 3004 && ev.ActivityID == 1 && ev.StatusID == 1 && ev.names(id) && ev.names(serial)
		}})
	}
	for _, c := range checks {
		if !slices.ContainsFunc(events, c.match) {
			t.Errorf("the audit log lacks %s", c.what)
		}
	}
	if strings.Contains(tail, token) {
		t.Error("the join token reached the audit log")
	}
	logs := e.server.stderr.String()
	for _, a := range e.agents {
		logs += a.proc.stderr.String() + a.proc.stdout.String()
	}
	if strings.Contains(logs, token) {
		t.Error("the join token reached the logs")
	}
}

// auditRecord is what the tests read of an OCSF event.
type auditRecord struct {
	ClassUID     int             `json:"class_uid"`
	ActivityID   int             `json:"activity_id"`
	StatusID     int             `json:"status_id"`
	StatusDetail string          `json:"status_detail"`
	Resources    []auditResource `json:"resources"`
	Unmapped     map[string]any  `json:"unmapped"`
}

// auditResource is a resource an event names.
type auditResource struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// names reports whether a resource of the event has name or uid s.
func (r auditRecord) names(s string) bool {
	return slices.ContainsFunc(r.Resources, func(res auditResource) bool { return res.Name == s || res.UID == s })
}

// parseAuditTail parses the JSON lines `bulwark audit tail` prints.
func parseAuditTail(t *testing.T, tail string) []auditRecord {
	t.Helper()
	var out []auditRecord
	for _, line := range strings.Split(tail, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var ev auditRecord
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit tail: %v in %q", err, line)
		}
		out = append(out, ev)
	}
	if len(out) == 0 {
		t.Fatal("audit tail printed no event")
	}
	return out
}

// writeFile writes a 0600 file.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// testBinary returns this test binary's path, which the agent sees as the
// workload's /proc/<pid>/exe, and its SHA-256.
func testBinary(t *testing.T) (string, string) {
	t.Helper()
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	b, err2 := os.ReadFile(exe)
	if err = errors.Join(err, err2); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return exe, hex.EncodeToString(sum[:])
}

// fetchCode asks the Workload API for X.509-SVIDs once the agent answers
// and returns the gRPC status code (OK when it served some).
func fetchCode(t *testing.T, addr string) codes.Code {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(addr))
		cancel()
		code := status.Code(err)
		if code != codes.Unavailable && code != codes.DeadlineExceeded || time.Now().After(deadline) {
			return code
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fetchSVIDs returns the X.509-SVIDs served now (none on an error).
func fetchSVIDs(t *testing.T, addr string) []*x509svid.SVID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	svids, _ := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(addr))
	return svids
}

// fetchIDs returns the sorted SPIFFE IDs of the X.509-SVIDs served now.
func fetchIDs(t *testing.T, addr string) []string {
	t.Helper()
	var ids []string
	for _, s := range fetchSVIDs(t, addr) {
		ids = append(ids, s.ID.String())
	}
	slices.Sort(ids)
	return ids
}

// waitSVIDs waits until the Workload API serves exactly want (sorted).
func waitSVIDs(t *testing.T, addr string, want []string, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ids := fetchIDs(t, addr)
		if slices.Equal(ids, want) {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Workload API serves %v after %s, want %v", ids, within, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// newSource is go-spiffe's X509Source on the agent's socket, picking the
// SVID of id.
func newSource(t *testing.T, addr, id string) *workloadapi.X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID.String() == id {
					return s
				}
			}
			return nil
		}))
	if err != nil {
		t.Fatalf("X509Source for %s: %v", id, err)
	}
	t.Cleanup(func() { src.Close() })
	for {
		s, err := src.GetX509SVID()
		if err == nil {
			if s.ID.String() != id || len(s.Certificates) != 2 {
				t.Fatalf("source for %s: SVID %s with %d certificates, want the leaf and the intermediate", id, s.ID, len(s.Certificates))
			}
			return src
		}
		if ctx.Err() != nil {
			t.Fatalf("source for %s: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mtlsPair is an HTTPS server of one workload and a client of another,
// each authorizing exactly the other's SPIFFE ID. Every call is a new
// connection, so every call is a full handshake with the current SVIDs.
type mtlsPair struct {
	url    string
	client *http.Client
}

// callResult is what one call saw: the serial of the server's leaf (seen
// by the client) and of the client's leaf (seen by the server), and the
// earliest expiry of the two.
type callResult struct {
	serverSerial, clientSerial string
	notAfter                   time.Time
}

func newMTLSPair(t *testing.T, server *workloadapi.X509Source, serverID string, client *workloadapi.X509Source, clientID string) *mtlsPair {
	t.Helper()
	sid, cid := spiffeid.RequireFromString(serverID), spiffeid.RequireFromString(clientID)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(server, server, tlsconfig.AuthorizeID(cid)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			leaf := r.TLS.PeerCertificates[0]
			fmt.Fprintf(w, "%s %d", leaf.SerialNumber.Text(16), leaf.NotAfter.UnixNano())
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // refused handshakes are expected
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	return &mtlsPair{
		url: "https://" + ln.Addr().String() + "/",
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   tlsconfig.MTLSClientConfig(client, client, tlsconfig.AuthorizeID(sid)),
			DisableKeepAlives: true,
		}},
	}
}

func (p *mtlsPair) call() (*callResult, error) {
	resp, err := p.client.Get(p.url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	serial, nanos, ok := strings.Cut(string(body), " ")
	n, err := strconv.ParseInt(nanos, 10, 64)
	if !ok || err != nil {
		return nil, fmt.Errorf("bad body %q", body)
	}
	leaf := resp.TLS.PeerCertificates[0]
	res := &callResult{serverSerial: leaf.SerialNumber.Text(16), clientSerial: serial, notAfter: leaf.NotAfter}
	if c := time.Unix(0, n); c.Before(res.notAfter) {
		res.notAfter = c
	}
	if err := checkSVIDShape(resp.TLS.PeerCertificates); err != nil {
		return nil, err
	}
	return res, nil
}

// checkSVIDShape checks a peer's chain: an X.509-SVID leaf (one URI SAN,
// no other SAN, not a CA) followed by its intermediate.
func checkSVIDShape(chain []*x509.Certificate) error {
	if len(chain) != 2 {
		return fmt.Errorf("peer sent %d certificates, want the leaf and the intermediate", len(chain))
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.IsCA {
		return errors.New("the peer's leaf is not an X.509-SVID")
	}
	if !chain[1].IsCA {
		return errors.New("the peer's second certificate is not a CA")
	}
	return nil
}

// dialable reports whether something accepts connections on the socket.
func dialable(socket string) bool {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestDevWorkloadAPI checks dev mode's workload identity: `bulwark dev`
// runs an agent in-process, dev.json names the trust domain and the
// Workload API socket, a go-spiffe client on that socket (this process is
// the user's) gets the five demo services' SVIDs, and a restart keeps the
// registration as it was.
func TestDevWorkloadAPI(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(shortTempDir(t), "data")
	var services []string
	for _, name := range []string{"accounts", "gateway", "ledger", "notifications", "payments"} {
		services = append(services, "spiffe://"+wlTrustDomain+"/ns/bank/sa/"+name)
	}
	for run := 0; run < 2; run++ {
		p := startProc(t, "dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0")
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(p.stdout.String(), "Press Ctrl-C to stop."); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("bulwark dev did not start")
			}
		}
		devJSON := filepath.Join(dataDir, "dev.json")
		var info struct {
			TrustDomain       string `json:"trust_domain"`
			WorkloadAPISocket string `json:"workload_api_socket"`
		}
		if err := json.Unmarshal(waitFile(t, devJSON, time.Second), &info); err != nil {
			t.Fatal(err)
		}
		if info.TrustDomain != wlTrustDomain || info.WorkloadAPISocket != filepath.Join(dataDir, "agent", "workload.sock") {
			t.Fatalf("dev.json: trust_domain %q, workload_api_socket %q", info.TrustDomain, info.WorkloadAPISocket)
		}
		if out := p.stdout.String(); !strings.Contains(out, "SPIFFE_ENDPOINT_SOCKET=unix://"+info.WorkloadAPISocket) {
			t.Fatalf("the banner shows no SPIFFE_ENDPOINT_SOCKET example:\n%s", out)
		}
		ids := waitSVIDs(t, "unix://"+info.WorkloadAPISocket, services, 20*time.Second)
		t.Logf("run %d: SVIDs %v", run, ids)

		var list struct {
			Entries []struct {
				SPIFFEID string `json:"spiffe_id"`
			} `json:"entries"`
		}
		if err := json.Unmarshal([]byte(runBulwark(t, "ca", "entry", "list", "-o", "json", "--dev-json", devJSON)), &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Entries) != len(services) {
			t.Fatalf("run %d: %d entries registered, want %d: %+v", run, len(list.Entries), len(services), list.Entries)
		}
		// The agent joined once: the restart reused its identity.
		events := parseAuditTail(t, runBulwark(t, "audit", "tail", "-n", "1000", "--dev-json", devJSON))
		joins := 0
		for _, ev := range events {
			if ev.ClassUID == 3002 && ev.StatusID == 1 && ev.names("spiffe://"+wlTrustDomain+"/agent/dev") {
				joins++
			}
		}
		if joins != 1 {
			t.Fatalf("run %d: the dev agent joined %d times, want once", run, joins)
		}
		if err := p.stop(t, syscall.SIGINT, 15*time.Second); !exitedCleanly(err) {
			t.Fatalf("dev did not exit cleanly on SIGINT: %v", err)
		}
	}
}
