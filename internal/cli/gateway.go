package cli

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/forward"
	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/directory"
	"github.com/bulwarksec/bulwark/internal/egress"
	"github.com/bulwarksec/bulwark/internal/gateway"
	"github.com/bulwarksec/bulwark/internal/gateway/ratelimit"
	"github.com/bulwarksec/bulwark/internal/identity"
	"github.com/bulwarksec/bulwark/internal/workload"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// Limits and timeouts of the gateway's start.
const (
	gatewayStartTimeout  = 30 * time.Second
	maxGatewayKeyFile    = 64 << 10
	gatewayBundleCache   = "policy-bundle.json"
	gatewayClientTimeout = 2 * time.Minute
	gatewayAuditTimeout  = 5 * time.Second
	// gatewayAuditProduct names the gateway in the events it reports.
	gatewayAuditProduct = "bulwark-gateway"
)

func newGatewayCommand() *cobra.Command {
	var configPath string
	var replicas int
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the edge API gateway in front of the services' agents",
		Long: `Run the Bulwark edge gateway (see docs/gateway.md). It gets its X.509-SVID
from the local agent's Workload API (gateway.workload_api_socket), fetches the
policy bundle and the service directory from the control plane
(gateway.server_url, verified with gateway.server_ca_file) with that SVID,
verifies access tokens of gateway.issuer for gateway.audience, exchanges them
for internal tokens as OAuth client gateway.exchange_client_id (key in
gateway.exchange_key_file), and serves the routes of gateway.routes_file on
gateway.listen over TLS. It follows the control plane's deny list and sends no
request to an upstream instance whose certificate is revoked or whose SPIFFE ID
is quarantined. Audit events are spooled in gateway.spool_dir; with
gateway.redis_addr the rate limits are shared by every replica.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			cfg.ResolvePaths()
			if replicas < 1 {
				return &usageError{errors.New("--replicas must be at least 1")}
			}
			logger := newLogger(cmd.ErrOrStderr(), cfg.Log)
			return runGateway(cmd.Context(), &cfg, replicas, cmd.OutOrStdout(), logger)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML configuration file")
	cmd.Flags().IntVar(&replicas, "replicas", 1, "number of gateway replicas sharing the Redis rate limits (each enforces its share while Redis is down)")
	return cmd
}

// runGateway builds the gateway and its collaborators from cfg and serves
// until ctx ends.
func runGateway(ctx context.Context, cfg *config.Config, replicas int, stdout io.Writer, logger *slog.Logger) error {
	gc := cfg.Gateway
	switch {
	case gc.RoutesFile == "":
		return errors.New("gateway.routes_file is required")
	case gc.ExchangeKeyFile == "":
		return errors.New("gateway.exchange_key_file is required")
	case gc.WorkloadAPISocket == "":
		return errors.New("gateway.workload_api_socket (or agent.socket_path) is required")
	}
	routes, err := gateway.LoadRoutes(gc.RoutesFile)
	if err != nil {
		return fmt.Errorf("gateway.routes_file: %w", err)
	}
	exchangeKey, err := loadExchangeKey(gc.ExchangeKeyFile)
	if err != nil {
		return fmt.Errorf("gateway.exchange_key_file: %w", err)
	}
	roots, err := certPool(gc.ServerCAFile)
	if err != nil {
		return fmt.Errorf("gateway.server_ca_file: %w", err)
	}

	// The control plane client presents the SVID once the agent has given
	// it; it is not used before (the forwarder ships only from Run).
	var source atomic.Pointer[workloadapi.X509Source]
	svidClient := &http.Client{Timeout: gatewayClientTimeout, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			src := source.Load()
			if src == nil {
				return nil, errors.New("gateway SVID not yet available")
			}
			return svidCertificate(src)
		},
	}}}
	// The audit spool opens first, so that every refusal from here on (the
	// egress guard's at start included) is kept even while the control
	// plane is unreachable.
	reg := prometheus.NewRegistry()
	appender, err := audit.NewClient(gc.ServerURL, svidClient, "")
	if err != nil {
		return fmt.Errorf("gateway audit client: %w", err)
	}
	fwd, err := forward.New(forward.Config{SpoolDir: gc.SpoolDir}, forward.Deps{Client: appender, Logger: logger, Metrics: reg})
	if err != nil {
		return fmt.Errorf("gateway audit spool: %w", err)
	}
	defer fwd.Close()

	issuer := firstOf(gc.Issuer, gc.ServerURL)
	issuerClient, err := gatewayIssuerClient(issuer, gc.ServerURL, roots, fwd, logger)
	if err != nil {
		return err
	}

	startCtx, cancel := context.WithTimeout(ctx, gatewayStartTimeout)
	defer cancel()
	src, err := mtls.Source(startCtx, mtls.SourceOptions{SocketPath: gc.WorkloadAPISocket})
	if err != nil {
		return fmt.Errorf("gateway SVID from %s: %w", gc.WorkloadAPISocket, err)
	}
	defer src.Close()
	source.Store(src)
	keys, _, err := authz.FetchTrustedKeys(startCtx, svidClient, gc.ServerURL)
	if err != nil {
		return err
	}
	decider, err := authz.New(authz.Config{URL: gc.ServerURL, HTTPClient: svidClient, TrustedKeys: keys,
		CacheFile: filepath.Join(cfg.DataDir, "gateway", gatewayBundleCache), MaxStaleness: time.Duration(gc.PolicyMaxStaleness), Logger: logger})
	if err != nil {
		return fmt.Errorf("gateway policy client: %w", err)
	}
	vcfg := authn.Config{Issuer: issuer, Audience: gc.Audience, HTTPClient: issuerClient, Logger: logger}
	if gc.PublicURL != "" {
		base := strings.TrimRight(gc.PublicURL, "/")
		vcfg.PublicURL = func(r *http.Request) string { return base + r.URL.Path }
	}
	verifier, err := authn.New(ctx, vcfg)
	if err != nil {
		return fmt.Errorf("gateway token verifier: %w", err)
	}
	exchanger, err := gateway.NewExchanger(gateway.ExchangerConfig{TokenURL: strings.TrimRight(issuer, "/") + identity.PathToken,
		ClientID: gc.ExchangeClientID, Key: exchangeKey, HTTPClient: issuerClient})
	if err != nil {
		return err
	}
	limiters, closeRedis, err := gatewayLimiters(gc.RedisAddr, routes, replicas, reg, logger)
	if err != nil {
		return err
	}
	defer closeRedis()
	tracer, err := gatewayTracer(ctx, gc.OTLPEndpoint)
	if err != nil {
		return err
	}
	if tracer != nil {
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gatewayAuditTimeout)
			defer cancel()
			if err := tracer.Shutdown(sctx); err != nil {
				logger.Warn("gateway spans not all exported", "error", err)
			}
		}()
	}

	// The deny list (revoked serials, quarantined SPIFFE IDs) is public: it
	// is followed without a client certificate, verifying the control plane
	// with the same roots.
	denyCP, err := workload.NewControlPlane(gc.ServerURL, roots)(nil)
	if err != nil {
		return fmt.Errorf("gateway deny list client: %w", err)
	}
	denyList, err := workload.NewDenyList(denyCP, logger)
	if err != nil {
		return fmt.Errorf("gateway deny list: %w", err)
	}
	// The whole list is known before the first request is served.
	if err := denyList.Sync(startCtx); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return decider.Run(gctx) })
	g.Go(func() error { return fwd.Run(gctx) })
	g.Go(func() error {
		err := denyList.Run(gctx)
		if c, ok := denyCP.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
		return err
	})
	gw, addr, err := gateway.Start(gctx, gateway.Config{Routes: routes, CertFile: gc.CertFile, KeyFile: gc.KeyFile}, gateway.Deps{
		Verifier:       verifier,
		Decider:        decider,
		Resolver:       directory.NewResolver(gc.ServerURL, svidClient, 0),
		Source:         src,
		Exchanger:      exchanger,
		Events:         fwd,
		Limiters:       limiters,
		Logger:         logger,
		Registerer:     reg,
		TracerProvider: tracerProvider(tracer),
		Denied:         denyList.IsDenied,
	}, gc.Listen)
	if err != nil {
		stop()
		return errors.Join(err, g.Wait())
	}
	if gc.MetricsListen != "" {
		if err := serveGatewayMetrics(gctx, g, gc.MetricsListen, reg, logger); err != nil {
			stop()
			return errors.Join(err, g.Wait())
		}
	}
	fmt.Fprintf(stdout, "gateway listening on https://%s\n", addr)
	logger.Info("gateway started", "addr", addr.String(), "routes", len(routes.Routes), "issuer", issuer)
	g.Go(func() error {
		<-gw.Done()
		if err := gw.Err(); err != nil {
			return err
		}
		if ctx.Err() == nil {
			return errors.New("gateway stopped")
		}
		return nil
	})
	return g.Wait()
}

// gatewayIssuerClient returns the client of the token issuer: the control
// plane's trust roots when the issuer is the control plane (explicitly
// allowed, loopback in dev included), else a client through the SSRF guard
// (public https addresses only), whose every refusal is logged and sent to
// events as the guard's audit event.
func gatewayIssuerClient(issuer, serverURL string, roots *x509.CertPool, events gateway.EventSender, logger *slog.Logger) (*http.Client, error) {
	if strings.TrimRight(issuer, "/") == strings.TrimRight(serverURL, "/") {
		return &http.Client{Timeout: gatewayClientTimeout, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12, RootCAs: roots}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
	}
	guard, err := egress.New(egress.Config{Timeout: gatewayClientTimeout, MaxRedirects: -1, OnBlocked: func(b egress.BlockedError) {
		logger.Warn("gateway refused an issuer address", "host", b.Host, "reason", b.Reason)
		auditEgressRefusal(events, b, logger)
	}})
	if err != nil {
		return nil, fmt.Errorf("gateway egress guard: %w", err)
	}
	if err := guard.CheckURL(issuer); err != nil {
		return nil, fmt.Errorf("gateway.issuer: %w", err)
	}
	return guard.HTTPClient(), nil
}

// auditEgressRefusal spools the egress guard's event for a refused issuer
// address. The spool is local disk, so the wait is short and bounded; a
// failure is logged, never a reason to let the connection through.
func auditEgressRefusal(events gateway.EventSender, b egress.BlockedError, logger *slog.Logger) {
	ev := b.AuditEvent()
	ev.Metadata.Product = gatewayAuditProduct
	ev.Unmapped = map[string]any{"config_key": "gateway.issuer"}
	ctx, cancel := context.WithTimeout(context.Background(), gatewayAuditTimeout)
	defer cancel()
	if err := events.Send(ctx, &ev); err != nil {
		logger.Error("gateway egress refusal not spooled", "error", err)
	}
}

// loadExchangeKey reads a PEM PKCS #8 private key.
func loadExchangeKey(path string) (crypto.Signer, error) {
	data, err := readBounded(path, maxGatewayKeyFile)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: not a PEM PRIVATE KEY (PKCS #8)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key type %T cannot sign", path, k)
	}
	return s, nil
}

// gatewayLimiters returns the Redis-backed shared limiters when addr is set
// (nil limiters otherwise: the gateway's local buckets), and a function that
// closes the Redis client. Their refusals and degraded decisions are
// counted in reg, beside the local limiters'.
func gatewayLimiters(addr string, routes *gateway.Routes, replicas int, reg prometheus.Registerer, logger *slog.Logger) (gateway.Limiters, func(), error) {
	if addr == "" {
		return gateway.Limiters{}, func() {}, nil
	}
	metrics, err := ratelimit.NewMetrics(reg)
	if err != nil {
		return gateway.Limiters{}, nil, fmt.Errorf("gateway rate limits: %w", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	var out gateway.Limiters
	for _, l := range []struct {
		name  string
		limit ratelimit.Limit
		dst   *ratelimit.Limiter
	}{{"ip", routes.PerIP, &out.IP}, {"client", routes.PerClient, &out.Client}, {"user", routes.PerUser, &out.User}} {
		name := l.name
		s, err := ratelimit.NewShared(ratelimit.SharedConfig{Name: "gateway-" + name, Limit: l.limit, Replicas: replicas, Metrics: metrics,
			OnDegraded: func(degraded bool, err error) {
				logger.Warn("gateway shared rate limit", "limit", name, "degraded", degraded, "error", err)
			}}, rdb)
		if err != nil {
			_ = rdb.Close()
			return gateway.Limiters{}, nil, fmt.Errorf("gateway %s rate limit: %w", name, err)
		}
		*l.dst = s
	}
	return out, func() { _ = rdb.Close() }, nil
}

// serveGatewayMetrics serves reg at http://<listen>/metrics until ctx ends.
func serveGatewayMetrics(ctx context.Context, g *errgroup.Group, listen string, reg *prometheus.Registry, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("gateway.metrics_listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	logger.Info("gateway metrics listening", "addr", ln.Addr().String())
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("gateway metrics: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		return srv.Close()
	})
	return nil
}

// gatewayTracer returns the tracer provider exporting the gateway's spans
// over OTLP/HTTP to endpoint (batched), or nil when endpoint is "".
func gatewayTracer(ctx context.Context, endpoint string) (*sdktrace.TracerProvider, error) {
	if endpoint == "" {
		return nil, nil
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("gateway.otlp_endpoint: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", gatewayAuditProduct)))), nil
}

// tracerProvider is tp as a trace.TracerProvider, nil (no tracing) when tp
// is nil.
func tracerProvider(tp *sdktrace.TracerProvider) trace.TracerProvider {
	if tp == nil {
		return nil
	}
	return tp
}
