package workload_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/workload"
)

// controlPlane is a real control plane on 127.0.0.1:0 in a temporary
// directory.
type controlPlane struct {
	srv  *controlplane.Server
	pool *x509.CertPool
	stop func()
}

func startControlPlane(t *testing.T, svidTTL time.Duration) *controlPlane {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	if svidTTL > 0 {
		cfg.CA.SVIDTTL = config.Duration(svidTTL)
	}
	cfg.ResolvePaths()
	srv, err := controlplane.New(context.Background(), &cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("control plane: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	pemData, err := os.ReadFile(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	return &controlPlane{srv: srv, pool: pool, stop: stop}
}

// shortTempDir returns a directory short enough for a unix socket path.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bwa")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// agentUnderTest is a running agent.
type agentUnderTest struct {
	agent  *workload.Agent
	id     spiffeid.ID
	dir    string
	socket string
	stop   func()
}

func (a *agentUnderTest) addr() workloadapi.ClientOption {
	return workloadapi.WithAddr("unix://" + a.socket)
}

// startAgent joins a new agent to cp and runs it until the test ends.
func startAgent(t *testing.T, cp *controlPlane, dir string, mutate func(*workload.Config)) *agentUnderTest {
	t.Helper()
	cfg := workload.Config{
		ServerURL:    cp.srv.URL(),
		ServerCAs:    cp.pool,
		DataDir:      dir,
		SocketPath:   filepath.Join(dir, "wl.sock"),
		SyncInterval: 200 * time.Millisecond,
		DenyWait:     5 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := workload.New(cfg, workload.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for !a.Ready() {
		select {
		case err := <-done:
			t.Fatalf("agent stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("agent not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &agentUnderTest{agent: a, dir: dir, socket: cfg.SocketPath, stop: stop}
}

// joinAgent creates a join token and starts an agent with it.
func joinAgent(t *testing.T, cp *controlPlane, name string, mutate func(*workload.Config)) *agentUnderTest {
	t.Helper()
	return joinAgentIn(t, cp, name, shortTempDir(t), mutate)
}

// joinAgentIn is joinAgent with the agent's data directory.
func joinAgentIn(t *testing.T, cp *controlPlane, name, dir string, mutate func(*workload.Config)) *agentUnderTest {
	t.Helper()
	token, id, _, err := cp.srv.CA().CreateJoinToken(context.Background(), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cp, dir, func(c *workload.Config) {
		c.JoinToken = token
		if mutate != nil {
			mutate(c)
		}
	})
	a.id = id
	return a
}

// self returns the selectors of this test process.
func self(t *testing.T) (uid, path, sum string) {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(os.Getuid()), exe, hex.EncodeToString(h.Sum(nil))
}

func createEntry(t *testing.T, cp *controlPlane, id string, parent spiffeid.ID, selectors ...string) ca.Entry {
	t.Helper()
	e := ca.Entry{SPIFFEID: spiffeid.RequireFromString(id), ParentID: parent}
	for _, s := range selectors {
		sel, err := ca.ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		e.Selectors = append(e.Selectors, sel)
	}
	if err := cp.srv.CA().CreateEntry(context.Background(), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// fetchX509 fetches the X.509 context once with the go-spiffe client.
func fetchX509(ctx context.Context, a *agentUnderTest) (*workloadapi.X509Context, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, a.addr())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.FetchX509Context(ctx)
}

// eventually retries f until it succeeds or d passes.
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

// auditHas reports whether the control plane's audit log holds an entry
// containing every one of parts.
func auditHas(t *testing.T, cp *controlPlane, parts ...string) error {
	t.Helper()
	entries, err := cp.srv.AuditLog().Entries(context.Background(), 0, 10000)
	if err != nil {
		return err
	}
next:
	for _, e := range entries {
		for _, p := range parts {
			if !strings.Contains(string(e.Data), p) {
				continue next
			}
		}
		return nil
	}
	return errors.New("no audit event with " + strings.Join(parts, ", "))
}

func isDenied(err error) bool { return status.Code(err) == codes.PermissionDenied }
