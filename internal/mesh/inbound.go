package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/correlation"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/mtls"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

// Log attribute keys.
const (
	logKeyPeer    = "peer_id"
	logKeyService = "service"
	logKeyError   = "error"
	logKeyReason  = "reason"
	logKeySide    = "side"
)

// shutdownGrace bounds a graceful shutdown when Serve's context ends.
const shutdownGrace = 5 * time.Second

// InboundConfig configures an Inbound. The zero values of Action,
// MaxHeaderBytes and Timeouts are the documented defaults; PeerKey is
// required.
type InboundConfig struct {
	// Listen is the host:port of the mTLS listener (Serve only).
	Listen string
	// Upstream is the loopback URL of the local service
	// ("http://127.0.0.1:8081"); any other host is refused.
	Upstream string
	// Self is the local service's SPIFFE ID: the resource of every
	// decision. Peers must be of its trust domain.
	Self spiffeid.ID
	// Action is the Cedar action asked for every request (DefaultAction).
	Action string
	// MaxHeaderBytes bounds request headers (DefaultMaxHeaderBytes).
	MaxHeaderBytes int
	// Timeouts bound the phases of a request.
	Timeouts Timeouts
	// PeerKey is the sdk/peer key shared with the local service: the
	// identity headers are signed with it, so that the service can refuse
	// any request that did not come through the agent. Required,
	// peer.KeySize bytes.
	PeerKey []byte
}

// DenialEvent describes a request the inbound refused, for the audit trail.
type DenialEvent struct {
	// Time is when the decision was made.
	Time time.Time
	// Peer is the caller's verified SPIFFE ID.
	Peer spiffeid.ID
	// Self is the service called.
	Self spiffeid.ID
	// Action is the Cedar action asked.
	Action string
	// Method and Path are the request's.
	Method, Path string
	// Reasons are the determining (forbid) policies, if any.
	Reasons []string
	// Errors are the policy evaluation errors, if any.
	Errors []string
	// Refusal is why policies were not evaluated (no bundle, stale), if so.
	Refusal string
	// BundleVersion is the policy bundle the decision was made with.
	BundleVersion int64
	// RequestID and TraceID are the request's correlation (X-Request-ID
	// and the W3C trace id).
	RequestID, TraceID string
	// User and Client are the end user and the OAuth client the request
	// started from (authn.Principal.OriginClient), from the request's
	// internal token, when one verified.
	User, Client string
	// TokenRefusal is set when the request was refused because its
	// internal token did not verify: the sdk/authn reason (e.g.
	// "expired"), or "unavailable" when no verifier could be asked.
	// Policies were not evaluated then.
	TokenRefusal string
}

// AllowedEvent describes a request the inbound let through to the local
// service, for the audit trail.
type AllowedEvent struct {
	// Time is when the decision was made.
	Time time.Time
	// Peer is the caller's verified SPIFFE ID.
	Peer spiffeid.ID
	// Self is the service called.
	Self spiffeid.ID
	// Action is the Cedar action asked.
	Action string
	// Method and Path are the request's.
	Method, Path string
	// Reasons are the permitting policies.
	Reasons []string
	// BundleVersion is the policy bundle the decision was made with.
	BundleVersion int64
	// RequestID and TraceID are the request's correlation.
	RequestID, TraceID string
	// User and Client are the end user and the OAuth client the request
	// started from (authn.Principal.OriginClient), from the request's
	// internal token, when one verified.
	User, Client string
}

// TokenVerifier verifies the internal access token of a request; an
// *authn.Verifier whose Audience is the local service's SPIFFE ID is one.
// A refusal is an *authn.Error; any other error means the token could not
// be checked at all (the verifier is not loaded yet).
type TokenVerifier interface {
	VerifyRequest(r *http.Request) (*authn.Principal, error)
}

// InboundDeps are an Inbound's dependencies. Source and Decider are required;
// Logger defaults to discarding, Now to time.Now, Tokens, OnDenied and
// OnAllowed to nothing.
type InboundDeps struct {
	Source  SVIDSource
	Decider Decider
	Logger  *slog.Logger
	// Tokens, if set, verifies the internal token a request carries in
	// Authorization: a valid one sets X-Bulwark-User (its subject, when
	// that is a user) and X-Bulwark-Client (the client the request started
	// from: authn.Principal.OriginClient); an invalid one is
	// refused with 401 and reported to OnDenied. Without Tokens a token is
	// not trusted. Either way Authorization never reaches the service.
	Tokens TokenVerifier
	// OnDenied is called for every denied request, from the request's
	// goroutine; it must not block for long.
	OnDenied func(DenialEvent)
	// OnAllowed is called for every request let through, from the
	// request's goroutine before it is proxied; it must not block for
	// long.
	OnAllowed func(AllowedEvent)
	// Denied, if set, reports whether a peer's SPIFFE ID or certificate
	// serial (lowercase hex) is on the control plane's deny list
	// (workload.Agent.IsDenied); such a peer is refused with 403 and
	// reported with Refusal RefusalPeerDenied, even though its certificate
	// still verifies.
	Denied func(id spiffeid.ID, serial string) bool
	// Now returns the time of decisions and signatures.
	Now func() time.Time
}

// RefusalPeerDenied is DenialEvent.Refusal for a peer whose SPIFFE ID is
// quarantined or whose certificate is revoked.
const RefusalPeerDenied = "peer_denied"

// Inbound is the mTLS listener in front of one local service.
type Inbound struct {
	cfg      InboundConfig
	deps     InboundDeps
	upstream *url.URL
	action   authz.Request
	tls      *tls.Config
	proxy    *httputil.ReverseProxy
	handler  http.Handler
}

// NewInbound validates cfg and returns an Inbound.
func NewInbound(cfg InboundConfig, deps InboundDeps) (*Inbound, error) {
	if cfg.Self.IsZero() {
		return nil, errors.New("mesh inbound: self SPIFFE ID is required")
	}
	up, err := parseLoopbackURL(cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("mesh inbound: %w", err)
	}
	if cfg.Action == "" {
		cfg.Action = DefaultAction
	}
	if cfg.MaxHeaderBytes < 0 {
		return nil, fmt.Errorf("mesh inbound: max header bytes is negative (%d)", cfg.MaxHeaderBytes)
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if err := cfg.Timeouts.validate(); err != nil {
		return nil, fmt.Errorf("mesh inbound: %w", err)
	}
	cfg.Timeouts = cfg.Timeouts.withDefaults()
	if len(cfg.PeerKey) != peer.KeySize {
		return nil, fmt.Errorf("mesh inbound: peer key must be %d bytes, got %d", peer.KeySize, len(cfg.PeerKey))
	}
	cfg.PeerKey = append([]byte(nil), cfg.PeerKey...)
	if deps.Source == nil {
		return nil, errors.New("mesh inbound: SVID source is required")
	}
	if deps.Decider == nil {
		return nil, errors.New("mesh inbound: decider is required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	in := &Inbound{
		cfg:      cfg,
		deps:     deps,
		upstream: up,
		action: authz.Request{
			Action:   authz.ActionUID(cfg.Action),
			Resource: authz.ServiceUID(cfg.Self),
		},
	}
	logger := deps.Logger
	in.tls = mtls.ServerConfig(deps.Source, deps.Source, mtls.AuthorizeMemberOf(cfg.Self.TrustDomain()),
		mtls.WithRefusalHook(func(r mtls.Refusal) {
			logger.Warn("mesh inbound handshake refused", logKeySide, string(r.Side), logKeyPeer, r.PeerID.String(), logKeyError, r.Err)
		}))
	in.proxy = &httputil.ReverseProxy{
		Rewrite: in.rewrite,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       cfg.Timeouts.Idle,
			ResponseHeaderTimeout: cfg.Timeouts.Upstream,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			httpapi.WriteError(w, r, logger, &httpapi.Error{Status: http.StatusBadGateway, Code: CodeBadGateway,
				Message: "the service is unavailable", Err: fmt.Errorf("mesh inbound: proxy to %s: %w", cfg.Self, err)})
		},
	}
	in.handler = http.HandlerFunc(in.serveHTTP)
	return in, nil
}

// Handler returns the inbound's HTTP handler; it expects requests from a
// server using TLSConfig (r.TLS set) and refuses others.
func (in *Inbound) Handler() http.Handler { return in.handler }

// TLSConfig returns the listener's mTLS configuration: any SVID of Self's
// trust domain passes the handshake; requests are authorized one by one.
func (in *Inbound) TLSConfig() *tls.Config { return in.tls }

// Serve listens on cfg.Listen and serves until ctx ends.
func (in *Inbound) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", in.cfg.Listen)
	if err != nil {
		return fmt.Errorf("mesh inbound: listen on %s: %w", in.cfg.Listen, err)
	}
	return in.ServeListener(ctx, ln)
}

// ServeListener serves mTLS on ln until ctx ends, then shuts down
// gracefully; it closes ln.
func (in *Inbound) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           in.handler,
		ReadHeaderTimeout: in.cfg.Timeouts.ReadHeader,
		ReadTimeout:       in.cfg.Timeouts.Read,
		WriteTimeout:      in.cfg.Timeouts.Write,
		IdleTimeout:       in.cfg.Timeouts.Idle,
		MaxHeaderBytes:    in.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(in.deps.Logger.Handler(), slog.LevelDebug),
	}
	return serveUntil(ctx, srv, tls.NewListener(ln, in.tls), "mesh inbound")
}

// serveUntil runs srv on ln until ctx ends.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener, what string) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: serve: %w", what, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: serve: %w", what, err)
	}
	return nil
}

type reasonsKey struct{}

func (in *Inbound) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		httpapi.WriteError(w, r, in.deps.Logger, httpapi.Errorf(http.StatusForbidden, CodeForbidden, "mutual TLS is required"))
		return
	}
	peerID, err := mtls.PeerID(r.TLS)
	if err != nil {
		httpapi.WriteError(w, r, in.deps.Logger, &httpapi.Error{Status: http.StatusForbidden, Code: CodeForbidden,
			Message: "no verified peer identity", Err: fmt.Errorf("mesh inbound: peer ID: %w", err)})
		return
	}
	requestID, tc := correlation.Ensure(r.Header)
	now := in.deps.Now()
	denial := DenialEvent{Time: now, Peer: peerID, Self: in.cfg.Self, Action: in.cfg.Action,
		Method: r.Method, Path: r.URL.Path, RequestID: requestID, TraceID: tc.TraceID}
	if in.deps.Denied != nil && in.deps.Denied(peerID, r.TLS.PeerCertificates[0].SerialNumber.Text(16)) {
		in.deps.Logger.Warn("mesh inbound peer on the deny list", logKeyPeer, peerID.String(), logKeyService, in.cfg.Self.String())
		denial.Refusal = RefusalPeerDenied
		in.denied(denial)
		httpapi.WriteError(w, r, in.deps.Logger, httpapi.Errorf(http.StatusForbidden, CodeForbidden, "the policy does not allow this call"))
		return
	}

	var user, client string
	if in.deps.Tokens != nil && len(r.Header.Values("Authorization")) > 0 {
		p, err := in.deps.Tokens.VerifyRequest(r)
		if err != nil {
			var ae *authn.Error
			denial.TokenRefusal = "unavailable"
			status, code, msg := http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the token cannot be verified now"
			if errors.As(err, &ae) {
				denial.TokenRefusal = ae.Reason
				status, code, msg = http.StatusUnauthorized, httpapi.CodeUnauthenticated, "the internal token is not valid"
			}
			in.deps.Logger.Info("mesh inbound token refused", logKeyPeer, peerID.String(), logKeyService, in.cfg.Self.String(), logKeyReason, denial.TokenRefusal)
			in.denied(denial)
			httpapi.WriteError(w, r, in.deps.Logger, &httpapi.Error{Status: status, Code: code, Message: msg})
			return
		}
		client = p.OriginClient()
		if p.IsUser() {
			user = p.Subject
		}
		denial.User, denial.Client = user, client
	}

	req := in.action
	req.Principal = authz.ServiceUID(peerID)
	req.Context = authz.Context{Time: now, Hour: -1}.Record()
	d := in.deps.Decider.Decide(req)
	if !d.Allowed {
		in.deps.Logger.Info("mesh inbound request denied", logKeyPeer, peerID.String(), logKeyService, in.cfg.Self.String(), logKeyReason, denialSummary(d))
		denial.Reasons, denial.Errors, denial.Refusal, denial.BundleVersion = d.Reasons, d.Errors, d.Refusal, d.BundleVersion
		in.denied(denial)
		httpapi.WriteError(w, r, in.deps.Logger, httpapi.Errorf(http.StatusForbidden, CodeForbidden, "the policy does not allow this call"))
		return
	}
	if in.deps.OnAllowed != nil {
		in.deps.OnAllowed(AllowedEvent{
			Time: now, Peer: peerID, Self: in.cfg.Self, Action: in.cfg.Action, Method: r.Method, Path: r.URL.Path,
			Reasons: d.Reasons, BundleVersion: d.BundleVersion, RequestID: requestID, TraceID: tc.TraceID,
			User: user, Client: client,
		})
	}
	ctx := context.WithValue(r.Context(), reasonsKey{}, peerDecision{peer: peerID, reasons: d.Reasons, user: user, client: client})
	in.proxy.ServeHTTP(w, r.WithContext(ctx))
}

func (in *Inbound) denied(e DenialEvent) {
	if in.deps.OnDenied != nil {
		in.deps.OnDenied(e)
	}
}

type peerDecision struct {
	peer         spiffeid.ID
	reasons      []string
	user, client string
}

// rewrite sends an allowed request to the local service with the agent's
// identity headers, and only those, signed with the peer key; the
// caller's credentials stay behind.
func (in *Inbound) rewrite(pr *httputil.ProxyRequest) {
	pd, _ := pr.In.Context().Value(reasonsKey{}).(peerDecision)
	pr.SetURL(in.upstream)
	pr.Out.Host = in.upstream.Host
	h := pr.Out.Header
	stripBulwarkHeaders(h)
	h.Del("Authorization")
	h.Del("DPoP")
	h.Set(HeaderPeerID, pd.peer.String())
	h.Set(HeaderDecisionReasons, strings.Join(pd.reasons, ","))
	if pd.user != "" {
		h.Set(peer.HeaderUser, pd.user)
	}
	if pd.client != "" {
		h.Set(peer.HeaderClient, pd.client)
	}
	peer.Sign(h, in.cfg.PeerKey, pr.Out.Method, pr.Out.URL.RequestURI(), in.deps.Now())
}

// denialSummary says why d denied, for the log.
func denialSummary(d authz.Decision) string {
	switch {
	case d.Refusal != "":
		return "refused: " + d.Refusal
	case len(d.Errors) > 0:
		return "evaluation errors"
	case len(d.Reasons) > 0:
		return "forbidden by " + strings.Join(d.Reasons, ",")
	default:
		return "no policy permits it"
	}
}
