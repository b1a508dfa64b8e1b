// Package node is the runtime of the agent's mTLS proxy, what `bulwark
// agent` (and `bulwark dev`, in-process) run: for every local service named
// in the proxy file a mesh.Inbound (the mTLS listener peers reach) and a
// mesh.Outbound (the loopback listener the service calls, presenting the
// service's own SVID), sharing one policy client (the control plane's
// signed bundle, cached on disk, kept for MaxStaleness while the control
// plane is unreachable), one service-directory resolver and one audit
// forwarder whose durable spool keeps every event until the control plane
// has it.
//
// Lifecycle: New validates the configuration and binds every listener (so
// their addresses are known at once and a conflict is reported before
// anything runs); Run fetches what it needs from the control plane, serves
// until its context ends, and releases everything; Close releases the
// listeners and the spool of a Node that is never run.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/forward"
	"github.com/bulwarksec/bulwark/internal/directory"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

// Log attribute keys.
const (
	logKeyError   = "error"
	logKeyService = "service"
	logKeyAddr    = "addr"
	logKeySide    = "side"
	logKeyRetry   = "retry_in"
)

// Defaults of Config's zero fields.
const (
	// DefaultDirectoryTTL is how long a resolved destination is cached.
	DefaultDirectoryTTL = 30 * time.Second
	// DefaultMaxStaleness is how long the last policy bundle is used while
	// the control plane is unreachable.
	DefaultMaxStaleness = authz.DefaultMaxStaleness
)

// Files in Config.CacheDir.
const (
	bundleCacheFile = "policy-bundle.json"
	keysPinFile     = "policy-keys.json"
)

// Service is one local service behind the node.
type Service struct {
	// Name is the service's name in the directory.
	Name string
	// ID is the service's SPIFFE ID: the SVID its inbound and outbound
	// present, and the audience of the internal tokens it accepts.
	ID spiffeid.ID
	// Listen is the host:port of the inbound mTLS listener; ignored when
	// InboundListener is set.
	Listen string
	// InboundListener, if set, is an already-open listener for the inbound
	// (the node takes it over and closes it).
	InboundListener net.Listener
	// Upstream is the service's loopback URL.
	Upstream string
	// PeerKey is the sdk/peer key shared with the service.
	PeerKey []byte
	// OutboundListen is the loopback host:port of the service's outbound
	// listener; "" and no OutboundListener means no outbound.
	OutboundListen string
	// OutboundListener, if set, is an already-open loopback listener for
	// the outbound.
	OutboundListener net.Listener
}

// Config configures a Node. The zero value of every optional field is its
// documented default.
type Config struct {
	// ServerURL is the control plane's https URL: policy bundle and keys,
	// service directory and audit events. Required unless Deps provides
	// the Decider, the Resolver and the Appender.
	ServerURL string
	// Issuer is the issuer of internal tokens. Empty: the inbounds verify
	// no token (one sent is removed, never trusted).
	Issuer string
	// AuditAllowed audits every allowed request besides the refusals.
	AuditAllowed bool
	// SpoolDir is the audit forwarder's spool directory. Required.
	SpoolDir string
	// CacheDir keeps the last good policy bundle and the pinned bundle
	// keys, so that a restart while the control plane is down still
	// enforces the last policy. Empty: nothing is cached.
	CacheDir string
	// PolicyMaxStaleness is how long the last bundle is used while the
	// control plane is unreachable (DefaultMaxStaleness).
	PolicyMaxStaleness time.Duration
	// DirectoryTTL is how long a resolved destination is cached
	// (DefaultDirectoryTTL).
	DirectoryTTL time.Duration
	// Timeouts bound the proxied requests' phases.
	Timeouts mesh.Timeouts
	// Services are the local services; at least one.
	Services []Service
}

// Deps are the node's collaborators. Sources is required; HTTPClient is
// required for whatever of the rest is left nil.
type Deps struct {
	// Sources returns the SVID source of a local service's SPIFFE ID
	// (workload.Agent.SVIDSource).
	Sources func(spiffeid.ID) mesh.SVIDSource
	// HTTPClient calls the control plane and the issuer with the agent's
	// own identity (workload.Agent.ControlPlaneClient).
	HTTPClient *http.Client
	// Decider decides service-to-service calls; nil: an authz.Client of
	// the control plane's signed bundle.
	Decider mesh.Decider
	// Resolver finds destinations; nil: directory.NewResolver.
	Resolver mesh.Resolver
	// Appender receives the audit events shipped from the spool; nil:
	// audit.NewClient(ServerURL, HTTPClient, "").
	Appender forward.Appender
	// Tokens returns the verifier of internal tokens for a service (whose
	// Audience is its SPIFFE ID); nil: authn.New with Issuer, retried in
	// the background until the issuer answers (meanwhile a request with a
	// token gets 503, one without is unaffected). Not used without Issuer.
	Tokens func(ctx context.Context, self spiffeid.ID) (mesh.TokenVerifier, error)
	// Denied, if set, reports whether a peer's SPIFFE ID or certificate
	// serial is on the deny list (workload.Agent.IsDenied); the inbounds
	// refuse such peers.
	Denied func(id spiffeid.ID, serial string) bool
	// Logger receives the node's logs; nil discards.
	Logger *slog.Logger
	// Metrics registers the forwarder's metrics; nil does not register.
	Metrics prometheus.Registerer
	// Now is the clock of decisions and events; nil means time.Now.
	Now func() time.Time
}

// Node runs the mTLS proxy of every local service.
type Node struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	services  []Service
	inLn      map[string]net.Listener
	outLn     map[string]net.Listener
	forwarder *forward.Forwarder
	events    *eventSink

	ready     chan struct{}
	closeOnce sync.Once
	runOnce   sync.Once
}

// New validates cfg, opens the audit spool and binds every listener.
func New(cfg Config, deps Deps) (*Node, error) {
	if len(cfg.Services) == 0 {
		return nil, errors.New("mesh node: no service configured")
	}
	if deps.Sources == nil {
		return nil, errors.New("mesh node: SVID sources are required")
	}
	if deps.HTTPClient == nil && (deps.Decider == nil || deps.Resolver == nil || deps.Appender == nil ||
		(cfg.Issuer != "" && deps.Tokens == nil)) {
		return nil, errors.New("mesh node: an HTTP client for the control plane is required")
	}
	if cfg.ServerURL == "" && (deps.Decider == nil || deps.Resolver == nil || deps.Appender == nil) {
		return nil, errors.New("mesh node: server URL is required")
	}
	if cfg.ServerURL != "" && !strings.HasPrefix(cfg.ServerURL, "https://") {
		return nil, fmt.Errorf("mesh node: server URL %q is not an https URL", cfg.ServerURL)
	}
	if cfg.Issuer != "" && !strings.HasPrefix(cfg.Issuer, "https://") {
		return nil, fmt.Errorf("mesh node: issuer %q is not an https URL", cfg.Issuer)
	}
	if cfg.SpoolDir == "" {
		return nil, errors.New("mesh node: spool directory is required")
	}
	if cfg.PolicyMaxStaleness < 0 || cfg.DirectoryTTL < 0 {
		return nil, errors.New("mesh node: durations must not be negative")
	}
	if cfg.PolicyMaxStaleness == 0 {
		cfg.PolicyMaxStaleness = DefaultMaxStaleness
	}
	if cfg.DirectoryTTL == 0 {
		cfg.DirectoryTTL = DefaultDirectoryTTL
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	names, ids := map[string]bool{}, map[spiffeid.ID]bool{}
	for i, s := range cfg.Services {
		switch {
		case !validName(s.Name):
			return nil, fmt.Errorf("mesh node: service %d: name %q is not a lower-case DNS label", i, s.Name)
		case names[s.Name]:
			return nil, fmt.Errorf("mesh node: service %s: duplicate name", s.Name)
		case s.ID.IsZero():
			return nil, fmt.Errorf("mesh node: service %s: SPIFFE ID is required", s.Name)
		case ids[s.ID]:
			return nil, fmt.Errorf("mesh node: service %s: duplicate SPIFFE ID %s", s.Name, s.ID)
		case len(s.PeerKey) != peer.KeySize:
			return nil, fmt.Errorf("mesh node: service %s: peer key must be %d bytes", s.Name, peer.KeySize)
		case s.Listen == "" && s.InboundListener == nil:
			return nil, fmt.Errorf("mesh node: service %s: no inbound listen address", s.Name)
		}
		if err := checkUpstream(s.Upstream); err != nil {
			return nil, fmt.Errorf("mesh node: service %s: %w", s.Name, err)
		}
		if s.OutboundListen != "" {
			if err := checkLoopback(s.OutboundListen); err != nil {
				return nil, fmt.Errorf("mesh node: service %s: outbound: %w", s.Name, err)
			}
		}
		names[s.Name], ids[s.ID] = true, true
	}
	n := &Node{cfg: cfg, deps: deps, log: deps.Logger, services: cfg.Services,
		inLn: map[string]net.Listener{}, outLn: map[string]net.Listener{}, ready: make(chan struct{})}
	if err := n.bind(); err != nil {
		n.closeListeners()
		return nil, err
	}
	appender := deps.Appender
	if appender == nil {
		c, err := audit.NewClient(cfg.ServerURL, deps.HTTPClient, "")
		if err != nil {
			n.closeListeners()
			return nil, fmt.Errorf("mesh node: %w", err)
		}
		appender = c
	}
	fw, err := forward.New(forward.Config{SpoolDir: cfg.SpoolDir}, forward.Deps{Client: appender, Logger: deps.Logger, Metrics: deps.Metrics, Now: deps.Now})
	if err != nil {
		n.closeListeners()
		return nil, fmt.Errorf("mesh node: %w", err)
	}
	n.forwarder = fw
	n.events = newEventSink(fw, deps.Logger)
	return n, nil
}

// bind opens every listener not given.
func (n *Node) bind() error {
	for _, s := range n.services {
		ln := s.InboundListener
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", s.Listen); err != nil {
				return fmt.Errorf("mesh node: service %s: inbound: listen on %s: %w", s.Name, s.Listen, err)
			}
		}
		n.inLn[s.Name] = ln
		ln = s.OutboundListener
		if ln == nil && s.OutboundListen != "" {
			var err error
			if ln, err = net.Listen("tcp", s.OutboundListen); err != nil {
				return fmt.Errorf("mesh node: service %s: outbound: listen on %s: %w", s.Name, s.OutboundListen, err)
			}
		}
		if ln != nil {
			if err := checkLoopback(ln.Addr().String()); err != nil {
				_ = ln.Close()
				return fmt.Errorf("mesh node: service %s: outbound: %w", s.Name, err)
			}
			n.outLn[s.Name] = ln
		}
	}
	return nil
}

func (n *Node) closeListeners() {
	for _, ln := range n.inLn {
		_ = ln.Close()
	}
	for _, ln := range n.outLn {
		_ = ln.Close()
	}
}

// InboundAddr returns the address of a service's inbound listener, or nil
// for an unknown service.
func (n *Node) InboundAddr(name string) net.Addr {
	if ln, ok := n.inLn[name]; ok {
		return ln.Addr()
	}
	return nil
}

// OutboundAddr returns the address of a service's outbound listener, or
// nil when it has none.
func (n *Node) OutboundAddr(name string) net.Addr {
	if ln, ok := n.outLn[name]; ok {
		return ln.Addr()
	}
	return nil
}

// Ready is closed once Run serves every listener.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// PendingEvents returns the audit events spooled and not yet delivered.
func (n *Node) PendingEvents() int64 { return n.forwarder.Pending() }

// Close releases the listeners and the spool of a Node that is not running;
// Run releases them itself.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		n.closeListeners()
		err = n.forwarder.Close()
	})
	return err
}

// Run gets the policy (pinned keys, signed bundle), starts the token
// verifiers, serves every inbound and outbound and ships audit events until
// ctx ends; then it stops the listeners gracefully, spools the last events
// and releases everything. It runs once.
func (n *Node) Run(ctx context.Context) error {
	err := errors.New("mesh node: already run")
	n.runOnce.Do(func() { err = n.run(ctx) })
	return err
}

func (n *Node) run(ctx context.Context) (err error) {
	defer func() {
		if cerr := n.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	fwdCtx, fwdCancel := context.WithCancel(context.WithoutCancel(ctx))
	fwdDone := make(chan error, 1)
	go func() { fwdDone <- n.forwarder.Run(fwdCtx) }()
	sinkDone := make(chan struct{})
	go func() { n.events.run(); close(sinkDone) }()
	defer func() {
		n.events.close()
		<-sinkDone
		fwdCancel()
		if ferr := <-fwdDone; ferr != nil && err == nil {
			err = ferr
		}
	}()

	g, gctx := errgroup.WithContext(ctx)
	decider := n.deps.Decider
	if decider == nil {
		client, err := n.policyClient(gctx)
		if err != nil {
			return err
		}
		if client == nil { // ctx ended while waiting for the control plane
			return nil
		}
		g.Go(func() error {
			if err := client.Run(gctx); err != nil && gctx.Err() == nil {
				return fmt.Errorf("mesh node: policy client: %w", err)
			}
			return nil
		})
		decider = client
	}
	resolver := n.deps.Resolver
	if resolver == nil {
		resolver = directory.NewResolver(n.cfg.ServerURL, n.deps.HTTPClient, n.cfg.DirectoryTTL)
	}
	for _, s := range n.services {
		deps := mesh.InboundDeps{
			Source: n.deps.Sources(s.ID), Decider: decider, Logger: n.log.With(logKeyService, s.Name),
			OnDenied: n.onDenied(s), Denied: n.deps.Denied, Now: n.deps.Now,
		}
		if n.cfg.AuditAllowed {
			deps.OnAllowed = n.onAllowed(s)
		}
		if n.cfg.Issuer != "" {
			deps.Tokens = n.tokens(gctx, s.ID)
		}
		in, err := mesh.NewInbound(mesh.InboundConfig{Upstream: s.Upstream, Self: s.ID, PeerKey: s.PeerKey, Timeouts: n.cfg.Timeouts}, deps)
		if err != nil {
			return fmt.Errorf("mesh node: service %s: %w", s.Name, err)
		}
		ln := n.inLn[s.Name]
		g.Go(func() error { return in.ServeListener(gctx, ln) })
		n.log.Info("mesh inbound listening", logKeyService, s.Name, logKeyAddr, ln.Addr().String())
		oln, ok := n.outLn[s.Name]
		if !ok {
			continue
		}
		out, err := mesh.NewOutbound(mesh.OutboundConfig{Self: s.ID, Timeouts: n.cfg.Timeouts},
			mesh.OutboundDeps{Source: n.deps.Sources(s.ID), Resolver: resolver, Logger: n.log.With(logKeyService, s.Name)})
		if err != nil {
			return fmt.Errorf("mesh node: service %s: %w", s.Name, err)
		}
		g.Go(func() error { return out.ServeListener(gctx, oln) })
		n.log.Info("mesh outbound listening", logKeyService, s.Name, logKeyAddr, oln.Addr().String())
	}
	close(n.ready)
	return g.Wait()
}

// tokens returns the verifier of internal tokens for self.
func (n *Node) tokens(ctx context.Context, self spiffeid.ID) mesh.TokenVerifier {
	if n.deps.Tokens != nil {
		lv := &lazyVerifier{}
		go lv.load(ctx, n.log, func(ctx context.Context) (mesh.TokenVerifier, error) { return n.deps.Tokens(ctx, self) })
		return lv
	}
	lv := &lazyVerifier{}
	go lv.load(ctx, n.log, func(ctx context.Context) (mesh.TokenVerifier, error) {
		return authn.New(ctx, authn.Config{Issuer: n.cfg.Issuer, Audience: self.String(), HTTPClient: n.deps.HTTPClient,
			Logger: n.log, Now: n.deps.Now})
	})
	return lv
}

// lazyVerifier is a token verifier that is loaded in the background; until
// it is, it fails with an error that is not an *authn.Error (the inbound
// answers 503 and nothing is trusted).
type lazyVerifier struct {
	mu sync.RWMutex
	v  mesh.TokenVerifier
}

// errVerifierNotLoaded is the error of a lazyVerifier not loaded yet.
var errVerifierNotLoaded = errors.New("token verifier not loaded yet")

func (l *lazyVerifier) VerifyRequest(r *http.Request) (*authn.Principal, error) {
	l.mu.RLock()
	v := l.v
	l.mu.RUnlock()
	if v == nil {
		return nil, errVerifierNotLoaded
	}
	return v.VerifyRequest(r)
}

func (l *lazyVerifier) load(ctx context.Context, log *slog.Logger, build func(context.Context) (mesh.TokenVerifier, error)) {
	for attempt := 0; ; attempt++ {
		v, err := build(ctx)
		if err == nil {
			l.mu.Lock()
			l.v = v
			l.mu.Unlock()
			return
		}
		delay := retryDelay(attempt)
		log.Warn("mesh node: token verifier not loaded; retrying", logKeyError, err, logKeyRetry, delay)
		if !sleep(ctx, delay) {
			return
		}
	}
}

// retryDelay is a capped exponential backoff: 250ms, 500ms, ... 15s.
func retryDelay(attempt int) time.Duration {
	d := 250 * time.Millisecond
	for range min(attempt, 6) {
		d *= 2
	}
	return min(d, 15*time.Second)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// checkUpstream checks that raw is an http URL of a loopback host (the
// inbound checks the rest).
func checkUpstream(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("upstream %q: want http://<loopback host>:<port>", raw)
	}
	if h := u.Hostname(); h != "localhost" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("upstream %q is not a loopback address", raw)
		}
	}
	return nil
}

// cachePath returns the path of a file in CacheDir, or "".
func (n *Node) cachePath(name string) string {
	if n.cfg.CacheDir == "" {
		return ""
	}
	return filepath.Join(n.cfg.CacheDir, name)
}
