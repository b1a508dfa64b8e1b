package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/gateway/ratelimit"
	"github.com/bulwarksec/bulwark/internal/gateway/upstream"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/authn"
)

// Server defaults.
const (
	DefaultShutdownTimeout   = 10 * time.Second
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultWriteTimeout      = 2 * time.Minute
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
)

// Verifier authenticates a request's access token (and its DPoP proof or
// client certificate); *authn.Verifier is one. A refusal is an *authn.Error.
type Verifier interface {
	VerifyRequest(r *http.Request) (*authn.Principal, error)
}

// TokenExchanger obtains the internal token for an upstream audience in
// exchange for the caller's token; *Exchanger is one.
type TokenExchanger interface {
	Exchange(ctx context.Context, subjectToken, audience string) (token string, exp time.Time, err error)
}

// EventSender takes the gateway's audit events; *forward.Forwarder is one.
// Send should return once the events are durable.
type EventSender interface {
	Send(ctx context.Context, events ...*audit.Event) error
}

// Limiters are the rate limiters of the three keys; a nil one is a Local
// limiter with the routes file's limit.
type Limiters struct {
	IP, Client, User ratelimit.Limiter
}

// Config configures a Gateway.
type Config struct {
	// Routes are the routes and limits (LoadRoutes). Required.
	Routes *Routes
	// CertFile and KeyFile are the listener's PEM certificate and key;
	// empty means the X.509-SVID of Deps.Source.
	CertFile, KeyFile string
	// Breaker configures the circuit breaker of each upstream endpoint;
	// zero fields take upstream's defaults.
	Breaker upstream.BreakerConfig
	// ShutdownTimeout bounds a graceful shutdown (DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// MaxHeaderBytes bounds request headers (DefaultMaxHeaderBytes).
	MaxHeaderBytes int
}

// Deps are the Gateway's collaborators.
type Deps struct {
	// Verifier authenticates access tokens. Required.
	Verifier Verifier
	// Decider answers Cedar decisions from the policy bundle. Required.
	Decider mesh.Decider
	// Resolver finds a route's service: its SPIFFE ID and agent
	// endpoints. Required.
	Resolver mesh.Resolver
	// Source is the gateway's X.509-SVID and trust bundles, for mutual TLS
	// to the agents (and the listener when no cert file is set). Required.
	Source mesh.SVIDSource
	// Exchanger obtains internal tokens. Required.
	Exchanger TokenExchanger
	// Events receives audit events. Required.
	Events EventSender
	// Limiters are the rate limiters; nil ones are local.
	Limiters Limiters
	// TracerProvider makes the request spans; nil means no tracing.
	TracerProvider trace.TracerProvider
	// Logger receives the gateway's logs (through the redacting handler);
	// nil discards.
	Logger *slog.Logger
	// Registerer registers the metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Denied reports whether a SPIFFE ID or a certificate serial (hex) is
	// on the control plane's deny list (revoked or quarantined):
	// workload.Agent.IsDenied or workload.DenyList.IsDenied. An upstream
	// instance presenting a denied identity is refused at the handshake,
	// skipped by load balancing and audited; nil means nothing is denied.
	Denied func(id spiffeid.ID, serial string) bool
}

// Gateway is the edge proxy. It is safe for concurrent use.
type Gateway struct {
	cfg       Config
	deps      Deps
	routes    *Routes
	logger    *slog.Logger
	tracer    trace.Tracer
	metrics   *metrics
	wafs      map[WAFMode]*wafEngine
	upstreams *upstreams
	handler   http.Handler

	cert *tls.Certificate

	done    chan struct{}
	doneErr error
}

// New validates cfg and deps and builds the gateway: its limiters, one WAF
// per distinct mode used by the routes, and the upstream pools' transports.
func New(cfg Config, deps Deps) (*Gateway, error) {
	switch {
	case cfg.Routes == nil || len(cfg.Routes.Routes) == 0:
		return nil, errors.New("gateway: routes are required")
	case deps.Verifier == nil:
		return nil, errors.New("gateway: a token verifier is required")
	case deps.Decider == nil:
		return nil, errors.New("gateway: a policy decider is required")
	case deps.Resolver == nil:
		return nil, errors.New("gateway: a service resolver is required")
	case deps.Source == nil:
		return nil, errors.New("gateway: an SVID source is required")
	case deps.Exchanger == nil:
		return nil, errors.New("gateway: a token exchanger is required")
	case deps.Events == nil:
		return nil, errors.New("gateway: an audit event sender is required")
	case (cfg.CertFile == "") != (cfg.KeyFile == ""):
		return nil, errors.New("gateway: cert file and key file go together")
	case cfg.ShutdownTimeout < 0 || cfg.MaxHeaderBytes < 0:
		return nil, errors.New("gateway: shutdown timeout and max header bytes must not be negative")
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.TracerProvider == nil {
		deps.TracerProvider = noop.NewTracerProvider()
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	rlm, err := ratelimit.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("gateway: rate limit metrics: %w", err)
	}
	um, err := upstream.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("gateway: upstream metrics: %w", err)
	}
	rs := cfg.Routes
	for _, l := range []struct {
		name  string
		lim   *ratelimit.Limiter
		limit ratelimit.Limit
	}{{"ip", &deps.Limiters.IP, rs.PerIP}, {"client", &deps.Limiters.Client, rs.PerClient}, {"user", &deps.Limiters.User, rs.PerUser}} {
		if *l.lim != nil {
			continue
		}
		local, err := ratelimit.NewLocal(ratelimit.LocalConfig{Name: l.name, Limit: l.limit, Now: deps.Now, Metrics: rlm})
		if err != nil {
			return nil, fmt.Errorf("gateway: %s rate limit: %w", l.name, err)
		}
		*l.lim = local
	}
	g := &Gateway{
		cfg: cfg, deps: deps, routes: rs, logger: deps.Logger, metrics: m,
		tracer: deps.TracerProvider.Tracer("github.com/bulwarksec/bulwark/internal/gateway"),
		wafs:   map[WAFMode]*wafEngine{},
		done:   make(chan struct{}),
	}
	var maxBody int64 = DefaultRouteMaxBodyBytes
	for _, r := range rs.Routes {
		maxBody = max(maxBody, r.MaxBodyBytes)
	}
	for _, r := range rs.Routes {
		if r.WAF == WAFOff || g.wafs[r.WAF] != nil {
			continue
		}
		w, err := newWAF(r.WAF, maxBody)
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		g.wafs[r.WAF] = w
	}
	if cfg.CertFile != "" {
		c, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("gateway: listener certificate: %w", err)
		}
		g.cert = &c
	}
	g.upstreams = newUpstreams(deps.Source, cfg.Breaker, um, deps.Logger, deps.Now, g.onTrip, deps.Denied, g.onUpstreamDenied)
	g.handler = http.HandlerFunc(g.serve)
	return g, nil
}

// Handler returns the gateway's request pipeline. It expects requests from a
// server that does TLS (ServeListener); used behind another server it still
// applies every check.
func (g *Gateway) Handler() http.Handler { return g.handler }

// TLSConfig returns the listener's TLS configuration: TLS 1.2 at least,
// the configured certificate or the current X.509-SVID, and an optional
// client certificate for certificate-bound tokens (RFC 8705), which the
// verifier matches against the token; it is not trusted otherwise.
func (g *Gateway) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: g.getCertificate,
		NextProtos:     []string{"http/1.1"},
	}
}

func (g *Gateway) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if g.cert != nil {
		return g.cert, nil
	}
	svid, err := g.deps.Source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("gateway: listener SVID: %w", err)
	}
	c := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, cert := range svid.Certificates {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c, nil
}

// ServeListener serves HTTPS on ln until ctx ends, then shuts down
// gracefully (at most Config.ShutdownTimeout) and closes ln.
func (g *Gateway) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           g.handler,
		TLSConfig:         g.TLSConfig(),
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    g.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.logger.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, srv.TLSConfig)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	g.upstreams.closeIdle()
	if err != nil {
		return fmt.Errorf("gateway: shutdown: %w", err)
	}
	return nil
}

// Start builds a gateway (New), listens on listen (host:port; port 0
// picks one) and serves until ctx ends, in a goroutine. It returns the
// bound address; Done is closed, and Err set, once serving has stopped.
// `bulwark gateway` and `bulwark dev` use it.
func Start(ctx context.Context, cfg Config, deps Deps, listen string) (*Gateway, net.Addr, error) {
	g, err := New(cfg, deps)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: listen on %s: %w", listen, err)
	}
	go func() {
		g.doneErr = g.ServeListener(ctx, ln)
		close(g.done)
	}()
	return g, ln.Addr(), nil
}

// Done is closed when a gateway started by Start has stopped serving.
func (g *Gateway) Done() <-chan struct{} { return g.done }

// Err returns why a gateway started by Start stopped (nil for a clean
// shutdown); it is meaningful once Done is closed.
func (g *Gateway) Err() error {
	<-g.done
	return g.doneErr
}
