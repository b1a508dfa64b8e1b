package bank

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

// Services are the names of the bank's services, in the order `bulwark dev`
// starts them.
var Services = []string{"accounts", "payments", "ledger", "notifications"}

// DefaultTrustDomain is the trust domain of the bank's SPIFFE IDs when
// Config.TrustDomain is empty.
const DefaultTrustDomain = "bulwark.local"

// Limits and defaults.
const (
	// maxBodyBytes bounds every request body a service reads.
	maxBodyBytes = 16 << 10
	// maxResponseBytes bounds what a service reads of another's answer.
	maxResponseBytes = 256 << 10
	// defaultCallTimeout bounds one call through the local agent.
	defaultCallTimeout = 5 * time.Second
)

// Config configures the bank. The zero value is not usable: DataDir and a
// peer key for every service are required, and the outbound URLs of the
// services that call others (payments, notifications).
type Config struct {
	// DataDir holds the databases, in DataDir/bank/<service>.db.
	DataDir string
	// TrustDomain of the bank's SPIFFE IDs (spiffe://<td>/ns/bank/sa/<name>);
	// empty means DefaultTrustDomain.
	TrustDomain string
	// OutboundURLs maps a service name to its agent's outbound base URL
	// (e.g. "http://127.0.0.1:15001"); a call to the ledger goes to
	// OutboundURLs["payments"] + "/ledger/v1/entries". The URL must be
	// http or https on a loopback address: the agent runs on the same host.
	// Required for payments and notifications.
	OutboundURLs map[string]string
	// PeerKeys maps a service name to the sdk/peer key it shares with its
	// agent (peer.KeySize bytes). Required for every service.
	PeerKeys map[string][]byte
}

// Events receives the bank's audit events; *forward.Forwarder is one.
type Events interface {
	Send(ctx context.Context, events ...*audit.Event) error
}

// Deps are the bank's dependencies; all are optional.
type Deps struct {
	// Events receives business audit events (payment created, ledger entry
	// posted, ...) and one Authentication failure event for every request
	// refused for a missing or bad agent signature. Nil drops them.
	Events Events
	// OnRefused, if not nil, is also called for every request a service
	// refused because it did not come through its agent (metrics, tests).
	// The refusal is already sent to Events.
	OnRefused func(service string, r *http.Request, err error)
	// HTTPClient makes the calls through the local agent; nil means a client
	// with a 5 s timeout.
	HTTPClient *http.Client
	// Logger receives operational logs (never IBANs, tokens or bodies); nil
	// discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Bank holds the four services and their databases.
type Bank struct {
	cfg      Config
	deps     Deps
	td       spiffeid.TrustDomain
	ids      map[string]spiffeid.ID
	dbs      map[string]*sql.DB
	handlers map[string]http.Handler
}

// New validates cfg, opens (and migrates) the four databases and builds the
// services' handlers.
func New(cfg Config, deps Deps) (*Bank, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("bank: config: data_dir is empty")
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("bank: config: trust domain %q: %w", cfg.TrustDomain, err)
	}
	for name := range cfg.PeerKeys {
		if !slices.Contains(Services, name) {
			return nil, fmt.Errorf("bank: config: peer key for unknown service %q (want one of %s)", name, strings.Join(Services, ", "))
		}
	}
	for _, name := range Services {
		if n := len(cfg.PeerKeys[name]); n != peer.KeySize {
			return nil, fmt.Errorf("bank: config: peer key of %s is %d bytes, want %d", name, n, peer.KeySize)
		}
	}
	for name, u := range cfg.OutboundURLs {
		if !slices.Contains(Services, name) {
			return nil, fmt.Errorf("bank: config: outbound URL for unknown service %q (want one of %s)", name, strings.Join(Services, ", "))
		}
		if err := checkOutboundURL(u); err != nil {
			return nil, fmt.Errorf("bank: config: outbound URL of %s: %w", name, err)
		}
	}
	for _, name := range []string{"payments", "notifications"} {
		if cfg.OutboundURLs[name] == "" {
			return nil, fmt.Errorf("bank: config: %s needs the outbound URL of its agent", name)
		}
	}
	if deps.HTTPClient == nil {
		deps.HTTPClient = &http.Client{Timeout: defaultCallTimeout}
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	b := &Bank{cfg: cfg, deps: deps, td: td, ids: map[string]spiffeid.ID{}, dbs: map[string]*sql.DB{}, handlers: map[string]http.Handler{}}
	for _, name := range append(slices.Clone(Services), "gateway") {
		id, err := spiffeid.FromSegments(td, "ns", "bank", "sa", name)
		if err != nil {
			return nil, fmt.Errorf("bank: SPIFFE ID of %s: %w", name, err)
		}
		b.ids[name] = id
	}
	dir := filepath.Join(cfg.DataDir, "bank")
	for _, name := range Services {
		db, err := openDB(context.Background(), filepath.Join(dir, name+".db"), migrations[name])
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("bank: %s: %w", name, err)
		}
		b.dbs[name] = db
	}
	b.handlers["accounts"] = b.protect("accounts", newAccounts(b).routes())
	b.handlers["payments"] = b.protect("payments", newPayments(b).routes())
	b.handlers["ledger"] = b.protect("ledger", newLedger(b).routes())
	b.handlers["notifications"] = b.protect("notifications", newNotifications(b).routes())
	return b, nil
}

// checkOutboundURL accepts an http(s) base URL on a loopback address. Its
// errors never repeat credentials the URL may hold.
func checkOutboundURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	shown := u.Redacted()
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: scheme must be http or https", shown)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: must be a base URL without credentials, query or fragment", shown)
	}
	host := u.Hostname()
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("%q: the agent's outbound listener must be on a loopback address", shown)
		}
	}
	return nil
}

// Handler returns the handler of the service name, behind sdk/peer's
// signature check.
func (b *Bank) Handler(name string) (http.Handler, error) {
	h, ok := b.handlers[name]
	if !ok {
		return nil, fmt.Errorf("bank: unknown service %q (want one of %s)", name, strings.Join(Services, ", "))
	}
	return h, nil
}

// Serve serves the service name on ln until ctx is done, then shuts down
// gracefully. It refuses a listener that is not on a loopback TCP address:
// a bank service is reachable only through its agent.
func (b *Bank) Serve(ctx context.Context, name string, ln net.Listener) error {
	h, err := b.Handler(name)
	if err != nil {
		return err
	}
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok || !addr.IP.IsLoopback() {
		return fmt.Errorf("bank: serve %s: listener %s is not on a loopback address", name, ln.Addr())
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(b.deps.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("bank: serve %s: %w", name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		<-errc
		return fmt.Errorf("bank: shut down %s: %w", name, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("bank: serve %s: %w", name, err)
	}
	return nil
}

// Close closes the databases.
func (b *Bank) Close() error {
	var errs []error
	for name, db := range b.dbs {
		if err := db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("bank: close %s database: %w", name, err))
		}
	}
	b.dbs = map[string]*sql.DB{}
	return errors.Join(errs...)
}

// ServiceID returns the SPIFFE ID of the bank service name ("accounts",
// "payments", "ledger", "notifications" or "gateway") in the bank's trust
// domain, spiffe://<td>/ns/bank/sa/<name>, and whether name is one of them.
func (b *Bank) ServiceID(name string) (spiffeid.ID, bool) {
	id, ok := b.ids[name]
	return id, ok
}

// protect puts h behind the agent signature check of service name.
func (b *Bank) protect(name string, h http.Handler) http.Handler {
	key := b.cfg.PeerKeys[name]
	return peer.Middleware(key, func(r *http.Request, err error) {
		b.refused(name, r, err)
	})(h)
}
