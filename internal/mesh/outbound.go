package mesh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/correlation"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// OutboundConfig configures an Outbound. The zero values of MaxHeaderBytes,
// MaxBodyBytes, MaxIdleConnsPerHost and Timeouts are the documented defaults.
type OutboundConfig struct {
	// Listen is the loopback host:port local services call (Serve only).
	Listen string
	// Self is the local service's SPIFFE ID (for logs; the SVID presented
	// is the source's).
	Self spiffeid.ID
	// MaxHeaderBytes bounds request headers (DefaultMaxHeaderBytes).
	MaxHeaderBytes int
	// MaxBodyBytes bounds request bodies (DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// MaxIdleConnsPerHost bounds the pooled idle connections to one
	// destination endpoint (default 64).
	MaxIdleConnsPerHost int
	// Timeouts bound the phases of a request.
	Timeouts Timeouts
}

// OutboundDeps are an Outbound's dependencies. Source and Resolver are
// required; Logger defaults to discarding.
type OutboundDeps struct {
	Source   SVIDSource
	Resolver Resolver
	Logger   *slog.Logger
}

// Outbound forwards a local service's calls to other services' agents over
// mTLS.
type Outbound struct {
	cfg     OutboundConfig
	deps    OutboundDeps
	proxy   *httputil.ReverseProxy
	handler http.Handler

	mu         sync.Mutex
	transports map[spiffeid.ID]*http.Transport
	next       atomic.Uint64
	// current is the SVID leaf the pooled connections were made with.
	current atomic.Pointer[x509.Certificate]
}

// maxServiceName bounds a service name (a DNS label).
const maxServiceName = 63

// NewOutbound validates cfg and returns an Outbound.
func NewOutbound(cfg OutboundConfig, deps OutboundDeps) (*Outbound, error) {
	if cfg.Listen != "" {
		if err := checkLoopbackAddr(cfg.Listen); err != nil {
			return nil, fmt.Errorf("mesh outbound: listen: %w", err)
		}
	}
	if cfg.Self.IsZero() {
		return nil, errors.New("mesh outbound: self SPIFFE ID is required")
	}
	if cfg.MaxHeaderBytes < 0 || cfg.MaxBodyBytes < 0 || cfg.MaxIdleConnsPerHost < 0 {
		return nil, errors.New("mesh outbound: limits must not be negative")
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxIdleConnsPerHost == 0 {
		cfg.MaxIdleConnsPerHost = 64
	}
	if err := cfg.Timeouts.validate(); err != nil {
		return nil, fmt.Errorf("mesh outbound: %w", err)
	}
	cfg.Timeouts = cfg.Timeouts.withDefaults()
	if deps.Source == nil {
		return nil, errors.New("mesh outbound: SVID source is required")
	}
	if deps.Resolver == nil {
		return nil, errors.New("mesh outbound: resolver is required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	o := &Outbound{cfg: cfg, deps: deps, transports: make(map[spiffeid.ID]*http.Transport)}
	o.proxy = &httputil.ReverseProxy{
		Rewrite:   o.rewrite,
		Transport: http.RoundTripper(roundTripFunc(o.roundTrip)),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			httpapi.WriteError(w, r, deps.Logger, &httpapi.Error{Status: http.StatusBadGateway, Code: CodeBadGateway,
				Message: "the destination is unavailable", Err: fmt.Errorf("mesh outbound: %w", err)})
		},
	}
	o.handler = http.HandlerFunc(o.serveHTTP)
	return o, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Handler returns the outbound's HTTP handler.
func (o *Outbound) Handler() http.Handler { return o.handler }

// Serve listens on cfg.Listen (loopback) and serves until ctx ends.
func (o *Outbound) Serve(ctx context.Context) error {
	if o.cfg.Listen == "" {
		return errors.New("mesh outbound: no listen address")
	}
	ln, err := net.Listen("tcp", o.cfg.Listen)
	if err != nil {
		return fmt.Errorf("mesh outbound: listen on %s: %w", o.cfg.Listen, err)
	}
	return o.ServeListener(ctx, ln)
}

// ServeListener serves plain HTTP on ln, which must be bound to a loopback
// address, until ctx ends; it closes ln and the pooled connections.
func (o *Outbound) ServeListener(ctx context.Context, ln net.Listener) error {
	if err := checkLoopbackAddr(ln.Addr().String()); err != nil {
		_ = ln.Close()
		return fmt.Errorf("mesh outbound: %w", err)
	}
	srv := &http.Server{
		Handler:           o.handler,
		ReadHeaderTimeout: o.cfg.Timeouts.ReadHeader,
		ReadTimeout:       o.cfg.Timeouts.Read,
		WriteTimeout:      o.cfg.Timeouts.Write,
		IdleTimeout:       o.cfg.Timeouts.Idle,
		MaxHeaderBytes:    o.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(o.deps.Logger.Handler(), slog.LevelDebug),
	}
	defer o.CloseIdleConnections()
	return serveUntil(ctx, srv, ln, "mesh outbound")
}

// CloseIdleConnections closes the pooled idle connections to every
// destination (after an SVID rotation, say); the TLS session caches stay,
// so the next connections resume their sessions.
func (o *Outbound) CloseIdleConnections() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, t := range o.transports {
		t.CloseIdleConnections()
	}
}

// destination is what the handler resolved, carried to rewrite and
// roundTrip in the request context.
type destination struct {
	id       spiffeid.ID
	endpoint string
	rawPath  string
}

type destKey struct{}

// SplitServicePath splits the escaped path of a local call,
// "/<service>/<rest>", into the service name (a DNS label) and the escaped
// remainder, which starts with "/". It reports false for a malformed path.
func SplitServicePath(escaped string) (service, rest string, ok bool) {
	p, found := strings.CutPrefix(escaped, "/")
	if !found {
		return "", "", false
	}
	service, rest, _ = strings.Cut(p, "/")
	rest = "/" + rest
	if !validServiceName(service) {
		return "", "", false
	}
	if _, err := url.PathUnescape(rest); err != nil {
		return "", "", false
	}
	return service, rest, true
}

// validServiceName reports whether s is a DNS label in lower case.
func validServiceName(s string) bool {
	if s == "" || len(s) > maxServiceName || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// proxyTarget splits a request the local service sent to the agent as its
// HTTP proxy (HTTP_PROXY=http://<agent>), in absolute form
// "http://<service>[:port]/<path>", into the service name and the escaped
// path; the port is ignored, the directory says where the service is. It
// reports false for a malformed target.
func proxyTarget(u *url.URL) (service, rest string, ok bool) {
	if u.Scheme != "http" || u.User != nil || u.Opaque != "" {
		return "", "", false
	}
	service = strings.ToLower(u.Hostname())
	rest = u.EscapedPath()
	if rest == "" {
		rest = "/"
	}
	if !validServiceName(service) || !strings.HasPrefix(rest, "/") {
		return "", "", false
	}
	if _, err := url.PathUnescape(rest); err != nil {
		return "", "", false
	}
	return service, rest, true
}

func (o *Outbound) serveHTTP(w http.ResponseWriter, r *http.Request) {
	logger := o.deps.Logger
	if r.Method == http.MethodConnect {
		// A tunnel would carry the service's own TLS: the agent makes the
		// mutual TLS itself, so the service calls http://, never https://.
		httpapi.WriteError(w, r, logger, httpapi.Errorf(http.StatusMethodNotAllowed, httpapi.CodeInvalidRequest,
			"the agent does not tunnel: call http://<service>/<path> through it, or http://<agent>/<service>/<path>"))
		return
	}
	correlation.Ensure(r.Header)
	var name, rest string
	var ok bool
	if r.URL.Host != "" || r.URL.Scheme != "" {
		name, rest, ok = proxyTarget(r.URL) // the agent as the service's HTTP proxy
	} else {
		name, rest, ok = SplitServicePath(r.URL.EscapedPath())
	}
	if !ok {
		httpapi.WriteError(w, r, logger, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such service"))
		return
	}
	id, endpoints, err := o.deps.Resolver.Resolve(r.Context(), name)
	switch {
	case errors.Is(err, ErrUnknownService):
		httpapi.WriteError(w, r, logger, &httpapi.Error{Status: http.StatusNotFound, Code: httpapi.CodeNotFound, Message: "no such service", Err: err})
		return
	case err != nil:
		httpapi.WriteError(w, r, logger, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "the service directory is unavailable", Err: fmt.Errorf("mesh outbound: resolve %q: %w", name, err)})
		return
	case id.IsZero() || len(endpoints) == 0:
		httpapi.WriteError(w, r, logger, httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the service has no endpoint"))
		return
	}
	ep := endpoints[int(o.next.Add(1)%uint64(len(endpoints)))]
	if _, _, err := net.SplitHostPort(ep); err != nil {
		httpapi.WriteError(w, r, logger, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: httpapi.CodeUnavailable,
			Message: "the service has no usable endpoint", Err: fmt.Errorf("mesh outbound: endpoint of %q: %w", name, err)})
		return
	}
	if r.ContentLength > o.cfg.MaxBodyBytes {
		httpapi.WriteError(w, r, logger, httpapi.Errorf(http.StatusRequestEntityTooLarge, httpapi.CodeTooLarge, "the request body is too large"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, o.cfg.MaxBodyBytes)
	ctx := context.WithValue(r.Context(), destKey{}, destination{id: id, endpoint: ep, rawPath: rest})
	o.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// rewrite addresses the request to the destination's agent, without any
// X-Bulwark-* header of the local caller.
func (o *Outbound) rewrite(pr *httputil.ProxyRequest) {
	d, _ := pr.In.Context().Value(destKey{}).(destination)
	path, _ := url.PathUnescape(d.rawPath) // checked by SplitServicePath
	pr.Out.URL = &url.URL{Scheme: "https", Host: d.endpoint, Path: path, RawPath: d.rawPath, RawQuery: pr.In.URL.RawQuery}
	if pr.Out.URL.EscapedPath() != d.rawPath {
		pr.Out.URL.RawPath = ""
	}
	pr.Out.Host = d.endpoint
	stripBulwarkHeaders(pr.Out.Header)
}

// roundTrip sends r over the pooled mTLS transport that accepts exactly the
// destination's SPIFFE ID.
func (o *Outbound) roundTrip(r *http.Request) (*http.Response, error) {
	d, ok := r.Context().Value(destKey{}).(destination)
	if !ok || d.id.IsZero() {
		return nil, errors.New("no resolved destination")
	}
	if err := o.checkSVID(); err != nil {
		return nil, err
	}
	resp, err := o.transport(d.id).RoundTrip(r)
	if err != nil {
		return nil, fmt.Errorf("call %s at %s: %w", d.id, d.endpoint, err)
	}
	return resp, nil
}

// checkSVID makes sure the pooled connections present the source's current
// SVID: after a rotation (or a revoked SVID replaced) the pools are
// dropped, so that no call goes out under a superseded certificate; with
// no SVID at all (expired, quarantined) the call fails.
func (o *Outbound) checkSVID() error {
	sv, err := o.deps.Source.GetX509SVID()
	if err == nil && len(sv.Certificates) == 0 {
		err = errors.New("empty certificate chain")
	}
	if err != nil {
		o.resetTransports()
		return fmt.Errorf("no SVID to present: %w", err)
	}
	leaf := sv.Certificates[0]
	prev := o.current.Load()
	if prev == leaf {
		return nil
	}
	if prev != nil && !prev.Equal(leaf) {
		o.resetTransports()
	}
	o.current.Store(leaf)
	return nil
}

// resetTransports drops every pool; connections in use finish their
// request and are then closed when idle.
func (o *Outbound) resetTransports() {
	o.mu.Lock()
	old := o.transports
	o.transports = make(map[spiffeid.ID]*http.Transport)
	o.mu.Unlock()
	for _, t := range old {
		t.CloseIdleConnections()
	}
}

// transport returns the pool of connections to the service id.
func (o *Outbound) transport(id spiffeid.ID) *http.Transport {
	o.mu.Lock()
	defer o.mu.Unlock()
	if t, ok := o.transports[id]; ok {
		return t
	}
	logger := o.deps.Logger
	tlsCfg := mtls.ClientConfig(o.deps.Source, o.deps.Source, mtls.AuthorizeID(id),
		mtls.WithRefusalHook(func(r mtls.Refusal) {
			logger.Warn("mesh outbound handshake refused", logKeySide, string(r.Side), logKeyPeer, r.PeerID.String(), logKeyService, id.String(), logKeyError, r.Err)
		}))
	t := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   o.cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       o.cfg.Timeouts.Idle,
		ResponseHeaderTimeout: o.cfg.Timeouts.Upstream,
		ForceAttemptHTTP2:     false,
	}
	o.transports[id] = t
	return t
}
