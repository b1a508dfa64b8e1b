package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/store"
)

// Errors of the workload CA. Callers test them with errors.Is; the HTTP
// layer maps them to statuses and stable codes.
var (
	// ErrNotFound is an unknown entry, token or certificate.
	ErrNotFound = errors.New("not found")
	// ErrInvalid is a request that is malformed or breaks a rule (a bad
	// CSR, selector or SPIFFE ID); nothing was changed.
	ErrInvalid = errors.New("invalid request")
	// ErrDenied is a SPIFFE ID or serial on the deny list.
	ErrDenied = errors.New("identity denied")
	// ErrTokenInvalid is a join token that is unknown, used or expired.
	ErrTokenInvalid = errors.New("invalid join token")
)

// Config is the CA's configuration (see config.CA).
type Config struct {
	TrustDomain     spiffeid.TrustDomain
	SVIDTTL         time.Duration // default lifetime of X.509-SVIDs
	JWTSVIDTTL      time.Duration // default lifetime of JWT-SVIDs
	IntermediateTTL time.Duration // lifetime of a new intermediate
	RotationOverlap time.Duration // how long a rotated-out intermediate stays trusted
	JoinTokenTTL    time.Duration // default lifetime of a join token
}

// ConfigFrom converts the file configuration.
func ConfigFrom(c config.CA) (Config, error) {
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return Config{}, fmt.Errorf("ca.trust_domain %q: %w", c.TrustDomain, err)
	}
	cfg := Config{
		TrustDomain:     td,
		SVIDTTL:         time.Duration(c.SVIDTTL),
		JWTSVIDTTL:      time.Duration(c.JWTSVIDTTL),
		IntermediateTTL: time.Duration(c.IntermediateTTL),
		RotationOverlap: time.Duration(c.RotationOverlap),
		JoinTokenTTL:    time.Duration(c.JoinTokenTTL),
	}
	return cfg, cfg.validate()
}

func (c Config) validate() error {
	switch {
	case c.TrustDomain.IsZero():
		return errors.New("ca: trust domain is required")
	case c.SVIDTTL <= 0 || c.JWTSVIDTTL <= 0 || c.IntermediateTTL <= 0 || c.RotationOverlap <= 0 || c.JoinTokenTTL <= 0:
		return errors.New("ca: every TTL and the rotation overlap must be positive")
	case c.RotationOverlap <= c.SVIDTTL:
		return fmt.Errorf("ca: rotation overlap %s must exceed the SVID TTL %s", c.RotationOverlap, c.SVIDTTL)
	case c.IntermediateTTL <= c.SVIDTTL:
		return fmt.Errorf("ca: intermediate TTL %s must exceed the SVID TTL %s", c.IntermediateTTL, c.SVIDTTL)
	}
	return nil
}

// Sealer seals keys at rest (satisfied by *keys.Sealed).
type Sealer interface {
	Seal(plaintext []byte, context string) ([]byte, error)
	Open(blob []byte, context string) ([]byte, error)
}

// Auditor records audit events (satisfied by *audit.Log).
type Auditor interface {
	Append(ctx context.Context, events []*audit.Event) (audit.AppendResult, error)
}

// Deps are the Authority's collaborators. DB, Sealer and Audit are
// required. RootStore holds the dev-mode root ("ca-root"); without it the
// CA needs an existing intermediate (made with `bulwark ca rotate`).
type Deps struct {
	DB        *store.DB
	Sealer    Sealer
	RootStore KeyStore
	Audit     Auditor
	Logger    *slog.Logger
	Metrics   prometheus.Registerer
	Now       func() time.Time
}

// Authority is the workload CA: it signs X.509- and JWT-SVIDs, keeps the
// registration entries, joins agents, and maintains the deny list and the
// certificate inventory. It is safe for concurrent use.
type Authority struct {
	cfg    Config
	db     *store.DB
	sealer Sealer
	roots  KeyStore
	audit  Auditor
	log    *slog.Logger
	now    func() time.Time

	state   atomic.Pointer[caState] // signing keys and trusted authorities
	stateMu sync.Mutex              // serialises reloads

	deny denyIndex

	rec recorder // group commit of inventory rows

	soonestMs atomic.Int64 // not_after (Unix ms) of the soonest-expiring unexpired SVID; 0 = none
	issued    prometheus.Counter
}

// refreshInterval is how often Run re-reads the deny list and the
// authorities, so that changes made by other replicas take effect.
const refreshInterval = time.Second

// maintenanceInterval is how often Run refreshes the expiry gauge and
// prunes expired rows.
const maintenanceInterval = 30 * time.Second

// New loads the CA. On the first start with no intermediate it creates the
// dev root (sealed in Deps.RootStore as "ca-root") and an intermediate.
func New(ctx context.Context, cfg Config, deps Deps) (*Authority, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if deps.DB == nil || deps.Sealer == nil || deps.Audit == nil {
		return nil, errors.New("ca: DB, Sealer and Audit are required")
	}
	a := &Authority{
		cfg: cfg, db: deps.DB, sealer: deps.Sealer, roots: deps.RootStore, audit: deps.Audit,
		log: deps.Logger, now: deps.Now,
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_ca_svids_issued_total", Help: "X.509-SVIDs issued by the workload CA.",
		}),
	}
	if a.log == nil {
		a.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.deny.init()
	if err := a.reload(ctx); err != nil {
		return nil, err
	}
	if a.state.Load().signer == nil {
		if a.roots == nil {
			return nil, errors.New("ca: no intermediate and no dev root store: create one with 'bulwark ca rotate'")
		}
		none := ""
		if _, err := a.rotate(ctx, nil, nil, &none); err != nil {
			return nil, fmt.Errorf("ca: first intermediate: %w", err)
		}
	}
	if err := a.refreshDeny(ctx); err != nil {
		return nil, err
	}
	if err := a.refreshSoonest(ctx); err != nil {
		return nil, err
	}
	if deps.Metrics != nil {
		if err := a.registerMetrics(deps.Metrics); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *Authority) registerMetrics(r prometheus.Registerer) error {
	soonest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bulwark_ca_svid_soonest_expiry_seconds",
		Help: "Seconds until the soonest-expiring unexpired X.509-SVID expires (+Inf when there is none).",
	}, func() float64 {
		ms := a.soonestMs.Load()
		if ms == 0 {
			return math.Inf(1)
		}
		return time.UnixMilli(ms).Sub(a.now()).Seconds()
	})
	inter := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bulwark_ca_intermediate_expiry_seconds",
		Help: "Seconds until the signing intermediate certificate expires.",
	}, func() float64 {
		s := a.state.Load()
		if s == nil || s.signer == nil {
			return 0
		}
		return s.signer.cert.NotAfter.Sub(a.now()).Seconds()
	})
	for _, c := range []prometheus.Collector{a.issued, soonest, inter} {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("ca: register metrics: %w", err)
		}
	}
	return nil
}

// Run keeps the CA current until ctx ends: it follows the deny list and
// rotations made by other replicas every second, and refreshes the expiry
// gauge, renews a dev intermediate about to expire and prunes expired
// rows at the first tick and then every 30 seconds.
func (a *Authority) Run(ctx context.Context) error {
	tick := time.NewTicker(refreshInterval)
	defer tick.Stop()
	var lastMaint time.Time // zero: maintain at the first tick
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := a.refreshDeny(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("ca: refresh deny list", slog.Any(logKeyError, err))
		}
		if err := a.reload(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("ca: reload authorities", slog.Any(logKeyError, err))
		}
		if now := a.now(); now.Sub(lastMaint) >= maintenanceInterval || now.Before(lastMaint) {
			lastMaint = now
			if err := a.maintain(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("ca: maintenance", slog.Any(logKeyError, err))
			}
		}
	}
}

// Log attribute keys.
const (
	logKeyError    = "error"
	logKeyNotAfter = "not_after"
)

// TrustDomain is the CA's trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.cfg.TrustDomain }

// X509Authorities is the X.509 trust bundle handed to workloads: the
// intermediates trusted now (the signing one, and a rotated-out one until
// its overlap ends).
func (a *Authority) X509Authorities() []*x509.Certificate {
	now := a.now()
	var out []*x509.Certificate
	for _, in := range a.state.Load().inters {
		if in.trustedAt(now) {
			out = append(out, in.cert)
		}
	}
	return out
}

// JWTAuthorities are the public keys (by kid) that verify JWT-SVIDs now.
func (a *Authority) JWTAuthorities() map[string]crypto.PublicKey {
	now := a.now()
	out := map[string]crypto.PublicKey{}
	for _, k := range a.state.Load().jwtKeys {
		if k.trustedUntil.IsZero() || now.Before(k.trustedUntil) {
			out[k.kid] = k.key.Public()
		}
	}
	return out
}

// Bundle is the SPIFFE bundle of the trust domain: X.509 and JWT
// authorities, a sequence number that grows at every change, and a
// refresh hint.
func (a *Authority) Bundle() *spiffebundle.Bundle {
	b := spiffebundle.New(a.cfg.TrustDomain)
	b.SetX509Authorities(a.X509Authorities())
	b.SetJWTAuthorities(a.JWTAuthorities())
	b.SetRefreshHint(a.refreshHint())
	b.SetSequenceNumber(a.sequence())
	return b
}

// refreshHint is how often bundle consumers should re-fetch: often enough
// to see a new intermediate well within the rotation overlap.
func (a *Authority) refreshHint() time.Duration {
	h := min(a.cfg.RotationOverlap/4, 5*time.Minute)
	return max(h, 10*time.Second)
}

// sequence counts the changes of the trust bundle so far: authorities
// added, and rotated-out authorities whose overlap has ended. It only
// grows.
func (a *Authority) sequence() uint64 {
	now := a.now()
	var n uint64
	s := a.state.Load()
	for _, in := range s.inters {
		n++
		if !in.trustedUntil.IsZero() && !now.Before(in.trustedUntil) {
			n++
		}
	}
	for _, k := range s.jwtKeys {
		n++
		if !k.trustedUntil.IsZero() && !now.Before(k.trustedUntil) {
			n++
		}
	}
	return n
}

// maintain renews a dev intermediate that is about to expire, refreshes
// the soonest-expiry gauge and prunes rows that can no longer matter:
// expired join tokens, certificates a day after expiry, and pending
// intermediate keys after a week.
func (a *Authority) maintain(ctx context.Context) error {
	if err := a.renewDevIntermediate(ctx); err != nil {
		return fmt.Errorf("renew dev intermediate: %w", err)
	}
	now := a.now().UnixMilli()
	if _, err := a.db.ExecContext(ctx, "DELETE FROM ca_join_tokens WHERE expires_at < ?", now-int64(time.Hour/time.Millisecond)); err != nil {
		return fmt.Errorf("prune join tokens: %w", err)
	}
	if _, err := a.db.ExecContext(ctx, "DELETE FROM ca_certificates WHERE not_after < ?", now-int64(inventoryRetention/time.Millisecond)); err != nil {
		return fmt.Errorf("prune certificates: %w", err)
	}
	if _, err := a.db.ExecContext(ctx, "DELETE FROM ca_pending_intermediates WHERE created_at < ?", now-int64(pendingIntermediateTTL/time.Millisecond)); err != nil {
		return fmt.Errorf("prune pending intermediates: %w", err)
	}
	return a.refreshSoonest(ctx)
}
