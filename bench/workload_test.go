package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/ca/caclient"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/keys"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// echoBytes is the request and response size of the transport benchmarks:
// small, so that the figures measure the transport and not the payload.
const echoBytes = 64

// workloadPKI is a root, an intermediate (the trust bundle) and two
// X.509-SVIDs of the shape Bulwark's CA issues: ECDSA P-256, one URI SAN,
// chain [leaf, intermediate].
type workloadPKI struct {
	bundle                 *x509bundle.Bundle
	serverSVID, clientSVID *x509svid.SVID
	serverID, clientID     spiffeid.ID
}

func newWorkloadPKI(tb testing.TB) *workloadPKI {
	tb.Helper()
	td := spiffeid.RequireTrustDomainFromString("bulwark.local")
	now := time.Now()
	mint := func(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			tb.Fatal(err)
		}
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Minute), now.Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
		if err != nil {
			tb.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			tb.Fatal(err)
		}
		return c, key
	}
	ca := func(cn string) *x509.Certificate {
		return &x509.Certificate{
			Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, PermittedURIDomains: []string{td.Name()},
		}
	}
	root, rootKey := mint(ca("root"), nil, nil)
	inter, interKey := mint(ca("intermediate"), root, rootKey)
	svid := func(id spiffeid.ID) *x509svid.SVID {
		leaf, key := mint(&x509.Certificate{
			URIs:        []*url.URL{id.URL()},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}, inter, interKey)
		return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, inter}, PrivateKey: key}
	}
	p := &workloadPKI{
		bundle:   x509bundle.FromX509Authorities(td, []*x509.Certificate{inter}),
		serverID: spiffeid.RequireFromPath(td, "/ns/payments/sa/api"),
		clientID: spiffeid.RequireFromPath(td, "/ns/shop/sa/checkout"),
	}
	p.serverSVID, p.clientSVID = svid(p.serverID), svid(p.clientID)
	return p
}

// serverConfig and clientConfig are the sdk/mtls configurations of the
// two workloads, each authorizing exactly the other.
func (p *workloadPKI) serverConfig() *tls.Config {
	return mtls.ServerConfig(p.serverSVID, p.bundle, mtls.AuthorizeID(p.clientID))
}

func (p *workloadPKI) clientConfig() *tls.Config {
	return mtls.ClientConfig(p.clientSVID, p.bundle, mtls.AuthorizeID(p.serverID))
}

// startEcho serves an echo of echoBytes-sized messages on 127.0.0.1, over
// TLS with cfg or over plain TCP when cfg is nil, until the test ends.
func startEcho(tb testing.TB, cfg *tls.Config) string {
	tb.Helper()
	var (
		ln  net.Listener
		err error
	)
	if cfg != nil {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", cfg)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				buf := make([]byte, echoBytes)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// echoClient is one connection to an echo server.
type echoClient struct {
	conn     net.Conn
	req, got []byte
}

// dialEcho connects to addr, over TLS with cfg (handshake included) or over
// plain TCP when cfg is nil.
func dialEcho(addr string, cfg *tls.Config) (*echoClient, error) {
	var (
		c   net.Conn
		err error
	)
	if cfg != nil {
		c, err = tls.Dial("tcp", addr, cfg)
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	req := make([]byte, echoBytes)
	copy(req, "ping")
	return &echoClient{conn: c, req: req, got: make([]byte, echoBytes)}, nil
}

// request sends one message and reads the echo.
func (e *echoClient) request() error {
	if _, err := e.conn.Write(e.req); err != nil {
		return err
	}
	if _, err := io.ReadFull(e.conn, e.got); err != nil {
		return err
	}
	if !bytes.Equal(e.got, e.req) {
		return errors.New("echo mismatch")
	}
	return nil
}

// resumed reports whether the connection resumed a TLS session.
func (e *echoClient) resumed() bool {
	tc, ok := e.conn.(*tls.Conn)
	return ok && tc.ConnectionState().DidResume
}

// connectAndRequest is one request on a new connection: dial, handshake
// (for TLS), one echo, close. It reports whether the session resumed.
func connectAndRequest(addr string, cfg *tls.Config) (bool, error) {
	e, err := dialEcho(addr, cfg)
	if err != nil {
		return false, err
	}
	defer func() { _ = e.conn.Close() }()
	// The echo completes the handshake on both sides and, in TLS 1.3,
	// delivers the session ticket the next connection resumes with.
	if err := e.request(); err != nil {
		return false, err
	}
	return e.resumed(), nil
}

// transportModes are the four ways BenchmarkMTLSHandshake sends a request.
var transportModes = []string{"full", "resumed", "pooled", "tcp"}

// runTransport sends n requests in mode and returns an error if any fails
// or if the connections do not resume (or do) as the mode says.
func runTransport(tb testing.TB, p *workloadPKI, mode string, n int, timed func(func())) error {
	tb.Helper()
	switch mode {
	case "full", "resumed":
		addr := startEcho(tb, p.serverConfig())
		cfg := p.clientConfig()
		if mode == "full" {
			cfg.ClientSessionCache = nil // a full handshake every time
		} else if _, err := connectAndRequest(addr, cfg); err != nil { // gets the first ticket
			return fmt.Errorf("first connection: %w", err)
		}
		var err error
		timed(func() {
			for i := 0; i < n && err == nil; i++ {
				var resumed bool
				resumed, err = connectAndRequest(addr, cfg)
				if err == nil && resumed != (mode == "resumed") {
					err = fmt.Errorf("connection %d: resumed %v in mode %s", i, resumed, mode)
				}
			}
		})
		return err
	case "pooled", "tcp":
		var addr string
		var cfg *tls.Config
		if mode == "pooled" {
			addr, cfg = startEcho(tb, p.serverConfig()), p.clientConfig()
		} else {
			addr = startEcho(tb, nil)
		}
		e, err := dialEcho(addr, cfg)
		if err != nil {
			return err
		}
		defer func() { _ = e.conn.Close() }()
		if err := e.request(); err != nil { // completes the handshake before the timer
			return err
		}
		timed(func() {
			for i := 0; i < n && err == nil; i++ {
				err = e.request()
			}
		})
		if tc, ok := e.conn.(*tls.Conn); ok && err == nil && tc.ConnectionState().Version != tls.VersionTLS13 {
			err = errors.New("pooled connection is not TLS 1.3")
		}
		return err
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// BenchmarkMTLSHandshake measures the cost of a tiny request (64-byte echo)
// between two workloads on 127.0.0.1 using sdk/mtls configurations (ECDSA
// P-256 SVIDs, TLS 1.3, each side authorizing the other's SPIFFE ID), one
// client sending requests one after the other, both ends in this process:
//
//   - full: a new connection per request with a full mutual handshake;
//   - resumed: a new connection per request resuming a session ticket
//     (still re-verifying and re-authorizing the peer, see sdk/mtls);
//   - pooled: one long-lived mTLS connection carrying every request;
//   - tcp: the same over one plain TCP connection, the baseline.
//
// One op is one request; µs/request is its wall time, cpu-µs/request the
// CPU this process (client and server together) spent on it. The added
// cost of mTLS on a pooled connection is pooled − tcp (target: < 10 µs).
func BenchmarkMTLSHandshake(b *testing.B) {
	p := newWorkloadPKI(b)
	for _, mode := range transportModes {
		b.Run(mode, func(b *testing.B) {
			var cpu time.Duration
			err := runTransport(b, p, mode, b.N, func(f func()) {
				cpu0 := cpuTime()
				b.ResetTimer()
				f()
				b.StopTimer()
				cpu = cpuTime() - cpu0
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1000/float64(b.N), "µs/request")
			b.ReportMetric(float64(cpu.Nanoseconds())/1000/float64(b.N), "cpu-µs/request")
		})
	}
}

// TestMTLSHarness runs BenchmarkMTLSHandshake's modes at small scale, so
// that plain go test checks the harness: every mode works, full handshakes
// never resume and resumed ones always do.
func TestMTLSHarness(t *testing.T) {
	t.Parallel()
	p := newWorkloadPKI(t)
	for _, mode := range transportModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			if err := runTransport(t, p, mode, 20, func(f func()) { f() }); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// issuanceEnv is the control plane's CA on a real HTTPS listener on
// 127.0.0.1 (SQLite in a temporary directory, a durable audit log: every
// SVID is an inventory row and an audit event before it is returned) and
// agents that joined with join tokens, each with its own connection
// presenting its agent SVID, and perAgent registration entries.
type issuanceEnv struct {
	agents []issuanceAgent
	csrs   [][]byte // pre-generated ECDSA P-256 CSRs without SANs
}

type issuanceAgent struct {
	client  *caclient.Client
	entries []string
}

func newIssuanceEnv(tb testing.TB, agents, perAgent, csrs int) *issuanceEnv {
	tb.Helper()
	ctx := context.Background()
	db := storetest.Open(tb, store.SQLite)
	l := startLog(tb, db, audit.Config{}, nil)
	sealer, err := keys.OpenSealed(filepath.Join(tb.TempDir(), "keys"))
	if err != nil {
		tb.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("bulwark.local")
	a, err := ca.New(ctx, ca.Config{TrustDomain: td, SVIDTTL: time.Hour, JWTSVIDTTL: 5 * time.Minute,
		IntermediateTTL: 720 * time.Hour, RotationOverlap: 2 * time.Hour, JoinTokenTTL: 10 * time.Minute},
		ca.Deps{DB: db, Sealer: sealer, RootStore: sealer, Audit: l, Metrics: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	ca.NewAPI(a, nil).Register(mux, func(next http.Handler) http.Handler { return next })
	ts := httptest.NewUnstartedServer(httpapi.WithRequestID(mux))
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	tb.Cleanup(ts.Close)
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())

	env := &issuanceEnv{csrs: make([][]byte, csrs)}
	for i := range env.csrs {
		env.csrs[i] = newCSR(tb)
	}
	for i := range agents {
		token, agentID, _, err := a.CreateJoinToken(ctx, fmt.Sprintf("node-%d", i), 0)
		if err != nil {
			tb.Fatal(err)
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			tb.Fatal(err)
		}
		joined, err := caclient.New(ts.URL, pool).Join(ctx, token, csr)
		if err != nil {
			tb.Fatalf("join: %v", err)
		}
		cert := tls.Certificate{PrivateKey: key, Leaf: joined.SVID[0]}
		for _, c := range joined.SVID {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		ag := issuanceAgent{client: caclient.New(ts.URL, pool).WithCertificate(cert)}
		for j := range perAgent {
			e := &ca.Entry{
				SPIFFEID:  spiffeid.RequireFromPathf(td, "/ns/bench/sa/svc-%d-%d", i, j),
				ParentID:  agentID,
				Selectors: []ca.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", 1000+j)}},
			}
			if err := a.CreateEntry(ctx, e); err != nil {
				tb.Fatal(err)
			}
			ag.entries = append(ag.entries, e.ID)
		}
		env.agents = append(env.agents, ag)
	}
	return env
}

func newCSR(tb testing.TB) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// issue has every agent send batches of up to batch SVID requests (one
// per entry, cycling through the pre-generated CSRs), concurrently, until
// n SVIDs are issued. It returns the latency of each batch.
func (env *issuanceEnv) issue(n, batch int) ([]time.Duration, error) {
	var (
		next    atomic.Int64
		mu      sync.Mutex
		lat     []time.Duration
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
	)
	for _, ag := range env.agents {
		wg.Go(func() {
			var mine []time.Duration
			defer func() { mu.Lock(); lat = append(lat, mine...); mu.Unlock() }()
			reqs := make([]caclient.SVIDRequest, 0, batch)
			for {
				end := int(next.Add(int64(batch)))
				start := end - batch
				if start >= n {
					return
				}
				reqs = reqs[:0]
				for i := start; i < min(end, n); i++ {
					reqs = append(reqs, caclient.SVIDRequest{EntryID: ag.entries[i%len(ag.entries)], CSR: env.csrs[i%len(env.csrs)]})
				}
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a stuck server fails the run
				got, refused, err := ag.client.SVIDs(ctx, reqs)
				cancel()
				mine = append(mine, time.Since(t0))
				if err == nil && (len(refused) > 0 || len(got) != len(reqs)) {
					err = fmt.Errorf("%d of %d SVIDs issued, refusals %+v", len(got), len(reqs), refused)
				}
				if err == nil && (len(got[0].SVID) != 2 || got[0].SVID[0].URIs[0].String() != got[0].ID.String()) {
					err = fmt.Errorf("SVID of %s has chain of %d", got[0].ID, len(got[0].SVID))
				}
				if err != nil {
					errOnce.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return lat, first
}

// issuanceShapes are the loads of BenchmarkSVIDIssuance: agents sending
// batches concurrently, each agent with as many entries as its batch.
var issuanceShapes = []struct{ agents, batch int }{{16, 50}, {64, 10}, {4, 100}}

// BenchmarkSVIDIssuance measures workload SVID issuance over the
// agent–server channel: agents POST /v1/ca/agent/svids (internal/ca's API,
// the caclient the agent uses, HTTPS with the agent SVID as client
// certificate) with batches of CSRs made before the timer starts; the
// server verifies the agent, checks each entry belongs to it, checks each
// CSR, signs (ECDSA P-256), records the certificate in the inventory and
// appends an audit event, durably, before answering. Everything runs in
// this process on the same CPUs. One op is one SVID. Target: at least
// 2,000 SVIDs/s on 2 cores.
func BenchmarkSVIDIssuance(b *testing.B) {
	for _, shape := range issuanceShapes {
		b.Run(fmt.Sprintf("agents=%d/batch=%d", shape.agents, shape.batch), func(b *testing.B) {
			env := newIssuanceEnv(b, shape.agents, shape.batch, 1024)
			if _, err := env.issue(shape.agents*shape.batch, shape.batch); err != nil { // warm up connections
				b.Fatal(err)
			}
			cpu0 := cpuTime()
			b.ResetTimer()
			start := time.Now()
			lat, err := env.issue(b.N, shape.batch)
			elapsed := time.Since(start)
			b.StopTimer()
			cpu := cpuTime() - cpu0
			if err != nil {
				b.Fatal(err)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "svids/s")
			b.ReportMetric(ms(lat[len(lat)/2]), "batch-p50-ms")
			b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "batch-p99-ms")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/svid")
		})
	}
}

// TestSVIDIssuanceHarness runs BenchmarkSVIDIssuance's harness at small
// scale: agents join, and every batch comes back fully issued.
func TestSVIDIssuanceHarness(t *testing.T) {
	t.Parallel()
	env := newIssuanceEnv(t, 2, 3, 4)
	lat, err := env.issue(20, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 7 {
		t.Fatalf("%d batches for 20 SVIDs in batches of 3, want 7", len(lat))
	}
}
