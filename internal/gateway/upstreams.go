package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/gateway/upstream"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// Log attribute keys of the upstream deny checks.
const (
	logKeyEndpoint = "endpoint"
	logKeySerial   = "serial"
)

// upstreamHandshakeTimeout bounds an mTLS handshake with an agent.
const upstreamHandshakeTimeout = 5 * time.Second

// deniedReprobeInterval is how often an endpoint skipped for a revoked
// serial is dialed again, a handshake without a request, to learn whether
// it now presents another certificate (an agent replaces a revoked SVID).
const deniedReprobeInterval = 10 * time.Second

// errPeerDenied refuses an upstream whose SPIFFE ID or certificate serial is
// on the deny list although its certificate verifies.
var errPeerDenied = errors.New("upstream peer is revoked or quarantined")

// upstreams holds one pool per route, rebuilt when the directory names other
// endpoints or another SPIFFE ID for the route's service, and one mTLS
// transport per destination SPIFFE ID, which only completes a handshake with
// a server presenting exactly that ID.
//
// With a deny check (Deps.Denied) a transport also refuses a handshake with
// a denied peer, refuses to write on a connection whose peer became denied,
// and records per endpoint the identity and serial presented there last;
// the pools skip an endpoint whose recorded peer is denied without dialing.
type upstreams struct {
	source   mesh.SVIDSource
	breaker  upstream.BreakerConfig
	metrics  *upstream.Metrics
	logger   *slog.Logger
	now      func() time.Time
	onTrip   func(name string, from, to gobreaker.State)
	denied   func(id spiffeid.ID, serial string) bool
	onDenied func(endpoint, id, serial string)

	mu         sync.Mutex
	pools      map[string]*routePool // by route name
	transports map[spiffeid.ID]*peerTransport

	reportMu sync.Mutex
	reported map[string]bool // by endpoint and serial: a denied peer is audited once
}

// peerTransport is the mTLS transport to one service and, with a deny
// check, the peer each endpoint (host:port) presented in its last
// handshake.
type peerTransport struct {
	*http.Transport
	mu    sync.Mutex
	peers map[string]peerRecord
}

// peerRecord is the peer an endpoint presented last.
type peerRecord struct {
	peer
	checked time.Time // of the last handshake or probe
	probing bool
}

// peer is the identity an endpoint presented: its verified SPIFFE ID and its
// leaf certificate's serial (hex).
type peer struct {
	id     spiffeid.ID
	serial string
}

type routePool struct {
	id        spiffeid.ID
	endpoints []string
	handler   http.Handler
	pool      *upstream.Pool
}

// newUpstreams returns the gateway's upstreams; denied (nil: nothing is
// denied) is the deny check and onDenied is told once per endpoint and
// serial of a denied peer.
func newUpstreams(src mesh.SVIDSource, b upstream.BreakerConfig, m *upstream.Metrics, logger *slog.Logger, now func() time.Time,
	onTrip func(string, gobreaker.State, gobreaker.State), denied func(spiffeid.ID, string) bool, onDenied func(endpoint, id, serial string)) *upstreams {
	return &upstreams{source: src, breaker: b, metrics: m, logger: logger, now: now, onTrip: onTrip, denied: denied, onDenied: onDenied,
		pools: map[string]*routePool{}, transports: map[spiffeid.ID]*peerTransport{}, reported: map[string]bool{}}
}

// handler returns the proxy of route r to service id at endpoints.
func (u *upstreams) handler(r *Route, id spiffeid.ID, endpoints []string, rewrite func(*httputil.ProxyRequest)) (http.Handler, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if p, ok := u.pools[r.Name]; ok && p.id == id && slices.Equal(p.endpoints, endpoints) {
		return p.handler, nil
	}
	retries := r.Retries
	if retries == 0 {
		retries = -1 // upstream: negative disables retries, zero is its default
	}
	pt := u.transport(id)
	pool, err := upstream.New(upstream.Config{
		Name: r.Name, Endpoints: endpoints, Scheme: "https", Timeout: r.Timeout, MaxRetries: retries,
		Breaker: u.breaker, MaxBodyBytes: r.MaxBodyBytes,
	}, upstream.Deps{Transport: pt.Transport, Logger: u.logger, Metrics: u.metrics, Now: u.now, OnTrip: u.onTrip,
		Quarantined: u.quarantined(pt)})
	if err != nil {
		return nil, err
	}
	p := &routePool{id: id, endpoints: slices.Clone(endpoints), pool: pool, handler: pool.Handler(rewrite)}
	u.pools[r.Name] = p
	return p.handler, nil
}

// transport returns the pooled mTLS connections to the service id; u.mu is
// held.
func (u *upstreams) transport(id spiffeid.ID) *peerTransport {
	if t, ok := u.transports[id]; ok {
		return t
	}
	logger := u.logger
	refused := func(r mtls.Refusal) {
		logger.Warn("gateway upstream handshake refused", logKeyService, id.String(), logKeyPeer, r.PeerID.String(), logKeyError, r.Err)
	}
	tlsCfg := mtls.ClientConfig(u.source, u.source, mtls.AuthorizeID(id), mtls.WithRefusalHook(refused))
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	pt := &peerTransport{peers: map[string]peerRecord{}}
	pt.Transport = &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   upstreamHandshakeTimeout,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	if u.denied != nil {
		// The handshake is made here, per connection, to know which
		// endpoint presented which certificate (TLSClientConfig and
		// TLSHandshakeTimeout are then unused).
		pt.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return u.dialTLS(ctx, dialer, tlsCfg, pt, refused, network, addr)
		}
	}
	u.transports[id] = pt
	return pt
}

// dialTLS connects to addr and makes the mTLS handshake of base (the
// go-spiffe verification and the SPIFFE ID authorization of
// mtls.ClientConfig), then refuses a verified peer that is denied. It
// records the peer presented at addr, denied or not.
func (u *upstreams) dialTLS(ctx context.Context, dialer *net.Dialer, base *tls.Config, pt *peerTransport, refused func(mtls.Refusal),
	network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("upstream address %q: %w", addr, err)
	}
	raw, err := dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cfg := base.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	var p peer
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err // refused and logged by mtls
		}
		leaf := cs.PeerCertificates[0]
		id, err := x509svid.IDFromCert(leaf)
		if err != nil {
			return err
		}
		p = peer{id: id, serial: leaf.SerialNumber.Text(16)}
		pt.record(addr, p, u.now())
		if u.denied(p.id, p.serial) {
			err := fmt.Errorf("%w: %s", errPeerDenied, addr)
			refused(mtls.Refusal{Side: mtls.SideClient, PeerID: p.id, Serial: p.serial, Resumed: cs.DidResume, Err: err})
			u.report(addr, p)
			return err
		}
		return nil
	}
	hctx, cancel := context.WithTimeout(ctx, upstreamHandshakeTimeout)
	defer cancel()
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return nil, err
	}
	return &peerConn{Conn: tc, u: u, addr: addr, peer: p}, nil
}

// record notes that p presented itself at endpoint at now.
func (pt *peerTransport) record(endpoint string, p peer, now time.Time) {
	pt.mu.Lock()
	pt.peers[endpoint] = peerRecord{peer: p, checked: now, probing: pt.peers[endpoint].probing}
	pt.mu.Unlock()
}

// quarantined returns the pools' check of an endpoint: whether the peer it
// presented last is denied; nil without a deny check. An endpoint not yet
// dialed is not quarantined: its handshake decides.
func (u *upstreams) quarantined(pt *peerTransport) func(string) bool {
	if u.denied == nil {
		return nil
	}
	return func(endpoint string) bool {
		pt.mu.Lock()
		r, ok := pt.peers[endpoint]
		pt.mu.Unlock()
		if !ok || !u.denied(r.id, r.serial) {
			return false
		}
		u.report(endpoint, r.peer)
		if !u.denied(r.id, "") { // a revoked serial, not a quarantined ID
			u.reprobe(pt, endpoint)
		}
		return true
	}
}

// reprobe dials endpoint again in the background, at most once per
// deniedReprobeInterval, to record the certificate it presents now; the
// handshake refuses a peer still denied, and no request is sent either way.
func (u *upstreams) reprobe(pt *peerTransport, endpoint string) {
	now := u.now()
	pt.mu.Lock()
	r, ok := pt.peers[endpoint]
	if !ok || r.probing || now.Sub(r.checked) < deniedReprobeInterval {
		pt.mu.Unlock()
		return
	}
	r.probing = true
	pt.peers[endpoint] = r
	pt.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*upstreamHandshakeTimeout)
		defer cancel()
		if conn, err := pt.DialTLSContext(ctx, "tcp", endpoint); err == nil {
			_ = conn.Close()
		}
		pt.mu.Lock()
		r := pt.peers[endpoint]
		r.probing, r.checked = false, u.now()
		pt.peers[endpoint] = r
		pt.mu.Unlock()
	}()
}

// report logs and audits a denied peer at endpoint, once per endpoint and
// serial.
func (u *upstreams) report(endpoint string, p peer) {
	key := endpoint + " " + p.serial
	u.reportMu.Lock()
	seen := u.reported[key]
	u.reported[key] = true
	u.reportMu.Unlock()
	if seen {
		return
	}
	u.logger.Warn("gateway upstream instance revoked or quarantined", logKeyEndpoint, endpoint, logKeyPeer, p.id.String(), logKeySerial, p.serial)
	if u.onDenied != nil {
		u.onDenied(endpoint, p.id.String(), p.serial)
	}
}

// peerConn is a connection to an upstream that refuses to send anything
// once its peer is denied, so that a request never reaches an instance
// revoked or quarantined after the connection was made (a kept-alive
// connection included). It hides the *tls.Conn from net/http, which then
// leaves Response.TLS nil; nothing behind the pool reads it.
type peerConn struct {
	net.Conn
	u    *upstreams
	addr string
	peer peer
}

func (c *peerConn) Write(b []byte) (int, error) {
	if c.u.denied(c.peer.id, c.peer.serial) {
		c.u.report(c.addr, c.peer)
		_ = c.Conn.Close()
		return 0, fmt.Errorf("%w: %s", errPeerDenied, c.addr)
	}
	return c.Conn.Write(b)
}

// closeIdle closes the idle connections of every transport.
func (u *upstreams) closeIdle() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, t := range u.transports {
		t.Transport.CloseIdleConnections()
	}
}

// normalizeEndpoints sorts the endpoints so that an answer in another order
// does not rebuild the pool (and reset its breakers).
func normalizeEndpoints(eps []string) []string {
	out := slices.Clone(eps)
	slices.SortFunc(out, strings.Compare)
	return slices.Compact(out)
}
