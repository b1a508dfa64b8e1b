package gateway

import (
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

	"github.com/bulwarksec/bulwark/internal/gateway/upstream"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// upstreams holds one pool per route, rebuilt when the directory names other
// endpoints or another SPIFFE ID for the route's service, and one mTLS
// transport per destination SPIFFE ID, which only completes a handshake with
// a server presenting exactly that ID.
type upstreams struct {
	source  mesh.SVIDSource
	breaker upstream.BreakerConfig
	metrics *upstream.Metrics
	logger  *slog.Logger
	now     func() time.Time
	onTrip  func(name string, from, to gobreaker.State)

	mu         sync.Mutex
	pools      map[string]*routePool // by route name
	transports map[spiffeid.ID]*http.Transport
}

type routePool struct {
	id        spiffeid.ID
	endpoints []string
	handler   http.Handler
	pool      *upstream.Pool
}

func newUpstreams(src mesh.SVIDSource, b upstream.BreakerConfig, m *upstream.Metrics, logger *slog.Logger, now func() time.Time, onTrip func(string, gobreaker.State, gobreaker.State)) *upstreams {
	return &upstreams{source: src, breaker: b, metrics: m, logger: logger, now: now, onTrip: onTrip,
		pools: map[string]*routePool{}, transports: map[spiffeid.ID]*http.Transport{}}
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
	pool, err := upstream.New(upstream.Config{
		Name: r.Name, Endpoints: endpoints, Scheme: "https", Timeout: r.Timeout, MaxRetries: retries,
		Breaker: u.breaker, MaxBodyBytes: r.MaxBodyBytes,
	}, upstream.Deps{Transport: u.transport(id), Logger: u.logger, Metrics: u.metrics, Now: u.now, OnTrip: u.onTrip})
	if err != nil {
		return nil, err
	}
	p := &routePool{id: id, endpoints: slices.Clone(endpoints), pool: pool, handler: pool.Handler(rewrite)}
	u.pools[r.Name] = p
	return p.handler, nil
}

// transport returns the pooled mTLS connections to the service id; u.mu is
// held.
func (u *upstreams) transport(id spiffeid.ID) *http.Transport {
	if t, ok := u.transports[id]; ok {
		return t
	}
	logger := u.logger
	tlsCfg := mtls.ClientConfig(u.source, u.source, mtls.AuthorizeID(id), mtls.WithRefusalHook(func(r mtls.Refusal) {
		logger.Warn("gateway upstream handshake refused", logKeyService, id.String(), logKeyPeer, r.PeerID.String(), logKeyError, r.Err)
	}))
	t := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	u.transports[id] = t
	return t
}

// closeIdle closes the idle connections of every transport.
func (u *upstreams) closeIdle() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, t := range u.transports {
		t.CloseIdleConnections()
	}
}

// normalizeEndpoints sorts the endpoints so that an answer in another order
// does not rebuild the pool (and reset its breakers).
func normalizeEndpoints(eps []string) []string {
	out := slices.Clone(eps)
	slices.SortFunc(out, strings.Compare)
	return slices.Compact(out)
}
