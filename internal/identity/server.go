package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
)

// Config is the authorization server's configuration.
type Config struct {
	// Issuer is the issuer identifier (https URL, no trailing slash).
	Issuer string
	// SigningAlg is EdDSA, ES256 or PS256.
	SigningAlg          string
	KeyRotationInterval time.Duration
	KeyPublishAhead     time.Duration
	AccessTokenTTL      time.Duration
	IDTokenTTL          time.Duration
	RefreshTokenTTL     time.Duration
	CodeTTL             time.Duration
	PARTTL              time.Duration
	LoginTTL            time.Duration
	// ProofWindow bounds |iat - now| of DPoP proofs and client assertions.
	ProofWindow time.Duration
	// DPoPNonce requires server nonces in DPoP proofs at the token and PAR
	// endpoints.
	DPoPNonce bool
	// ClientCAs verify tls_client_auth certificates; nil disables that
	// method.
	ClientCAs *x509.CertPool
	// MaxFailures, LockoutDuration and BackoffBase drive login lockout.
	MaxFailures     int
	LockoutDuration time.Duration
	BackoffBase     time.Duration
	// Argon2 parameters for new password hashes.
	Argon2MemoryKiB   uint32
	Argon2Iterations  uint32
	Argon2Parallelism uint8
}

// ConfigFrom converts the identity section of the process configuration.
// issuer is used when the section leaves it empty (the listener's URL).
func ConfigFrom(c config.Identity, issuer string) (Config, error) {
	if c.Issuer != "" {
		issuer = c.Issuer
	}
	cfg := Config{
		Issuer:              strings.TrimSuffix(issuer, "/"),
		SigningAlg:          c.SigningAlg,
		KeyRotationInterval: time.Duration(c.KeyRotationInterval),
		KeyPublishAhead:     time.Duration(c.KeyPublishAhead),
		AccessTokenTTL:      time.Duration(c.AccessTokenTTL),
		IDTokenTTL:          time.Duration(c.IDTokenTTL),
		RefreshTokenTTL:     time.Duration(c.RefreshTokenTTL),
		CodeTTL:             time.Duration(c.CodeTTL),
		PARTTL:              time.Duration(c.PARTTL),
		LoginTTL:            time.Duration(c.LoginTTL),
		ProofWindow:         time.Duration(c.DPoPProofWindow),
		DPoPNonce:           c.DPoPNonce,
		MaxFailures:         c.Lockout.MaxFailures,
		LockoutDuration:     time.Duration(c.Lockout.Duration),
		BackoffBase:         time.Duration(c.Lockout.BackoffBase),
		Argon2MemoryKiB:     uint32(c.PasswordHash.MemoryKiB),
		Argon2Iterations:    uint32(c.PasswordHash.Iterations),
		Argon2Parallelism:   uint8(c.PasswordHash.Parallelism),
	}
	if c.MTLSClientCAFile != "" {
		pem, err := os.ReadFile(c.MTLSClientCAFile)
		if err != nil {
			return Config{}, fmt.Errorf("identity.mtls_client_ca_file: %w", err)
		}
		cfg.ClientCAs = x509.NewCertPool()
		if !cfg.ClientCAs.AppendCertsFromPEM(pem) {
			return Config{}, fmt.Errorf("identity.mtls_client_ca_file %q: no PEM certificate found", c.MTLSClientCAFile)
		}
	}
	return cfg, nil
}

// DefaultConfig returns the configuration of an empty config file with the
// given issuer; tests adjust it.
func DefaultConfig(issuer string) Config {
	cfg, err := ConfigFrom(config.Default().Identity, issuer)
	if err != nil {
		panic(err) // the default has no CA file to read
	}
	return cfg
}

// Sealer encrypts data at rest under the process's key-encryption key
// (keys.Sealed).
type Sealer interface {
	Seal(plaintext []byte, context string) ([]byte, error)
	Open(blob []byte, context string) ([]byte, error)
}

// Auditor appends events to the audit log (audit.Log).
type Auditor interface {
	Append(ctx context.Context, events []*audit.Event) (audit.AppendResult, error)
}

// Deps are the authorization server's dependencies.
type Deps struct {
	DB     *store.DB
	Sealer Sealer
	Audit  Auditor
	Logger *slog.Logger
	// Metrics registers the server's metrics; nil registers none.
	Metrics prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// AdminID returns the identity of the administrator behind an admin
	// API request (the admin credential ID), recorded in audit events of
	// client and user changes; nil records "admin".
	AdminID func(ctx context.Context) string
}

// Server is the authorization server.
type Server struct {
	cfg     Config
	db      *store.DB
	sealer  Sealer
	auditor Auditor
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics

	clients *clientStore
	keys    *keyManager
	adminID func(ctx context.Context) string
	// mgmt is the replay store's batcher and the revocation feed's
	// notifier; its zero value is ready to use.
	mgmt mgmtState
	// nonces issues and checks DPoP server nonces.
	nonces *nonceSource
}

// New validates cfg and builds the server. Call Run to keep its signing
// keys rotated and its tables pruned, and Register to serve it.
func New(ctx context.Context, cfg Config, deps Deps) (*Server, error) {
	if deps.DB == nil || deps.Sealer == nil || deps.Audit == nil {
		return nil, errors.New("identity: DB, Sealer and Audit are required")
	}
	if msg := checkIssuer(cfg.Issuer); msg != "" {
		return nil, fmt.Errorf("identity: issuer %q %s", cfg.Issuer, msg)
	}
	switch cfg.SigningAlg {
	case config.AlgEdDSA, config.AlgES256, config.AlgPS256:
	default:
		return nil, fmt.Errorf("identity: signing algorithm %q is not EdDSA, ES256 or PS256", cfg.SigningAlg)
	}
	if cfg.KeyPublishAhead <= 0 || cfg.KeyPublishAhead >= cfg.KeyRotationInterval {
		return nil, errors.New("identity: key publish-ahead must be positive and less than the rotation interval")
	}
	for name, d := range map[string]time.Duration{"access token TTL": cfg.AccessTokenTTL, "ID token TTL": cfg.IDTokenTTL,
		"refresh token TTL": cfg.RefreshTokenTTL, "code TTL": cfg.CodeTTL, "PAR TTL": cfg.PARTTL, "login TTL": cfg.LoginTTL,
		"proof window": cfg.ProofWindow, "lockout duration": cfg.LockoutDuration} {
		if d <= 0 {
			return nil, fmt.Errorf("identity: %s must be positive", name)
		}
	}
	if cfg.CodeTTL > 60*time.Second {
		return nil, errors.New("identity: authorization codes live at most 60s")
	}
	if cfg.MaxFailures < 1 || cfg.Argon2MemoryKiB < 1024 || cfg.Argon2Iterations < 1 || cfg.Argon2Parallelism < 1 {
		return nil, errors.New("identity: lockout and argon2id parameters must be positive (argon2id memory at least 1024 KiB)")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Server{
		cfg:     cfg,
		db:      deps.DB,
		sealer:  deps.Sealer,
		auditor: deps.Audit,
		log:     deps.Logger,
		now:     deps.Now,
		clients: newClientStore(deps.DB, deps.Now),
		adminID: deps.AdminID,
		nonces:  newNonceSource(),
	}
	if s.adminID == nil {
		s.adminID = func(context.Context) string { return "admin" }
	}
	var err error
	if s.metrics, err = newMetrics(deps.Metrics); err != nil {
		return nil, err
	}
	if s.keys, err = newKeyManager(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Issuer returns the issuer identifier.
func (s *Server) Issuer() string { return s.cfg.Issuer }

// Run rotates signing keys and prunes expired flow state until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if err := s.keys.rotate(ctx); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "signing key rotation failed", "error", err)
		}
		if err := s.prune(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "pruning expired identity state failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// prune deletes flow state that can no longer be used.
func (s *Server) prune(ctx context.Context) error {
	now := s.now().UnixMilli()
	for _, q := range []string{
		"DELETE FROM identity_replay WHERE expires_at < ?",
		"DELETE FROM identity_par WHERE expires_at < ?",
		"DELETE FROM identity_login_sessions WHERE expires_at < ?",
		"DELETE FROM identity_codes WHERE expires_at < ?",
		"DELETE FROM identity_access_tokens WHERE expires_at < ?",
		"DELETE FROM identity_refresh_tokens WHERE expires_at < ?",
		"DELETE FROM identity_revocations WHERE expires_at < ?",
	} {
		if _, err := s.db.ExecContext(ctx, q, now); err != nil {
			return fmt.Errorf("prune: %w", err)
		}
	}
	return nil
}

// Register serves the authorization server on mux. admin wraps the admin
// API handlers (client and user management) with admin authentication.
func (s *Server) Register(mux *http.ServeMux, admin func(http.Handler) http.Handler) {
	s.registerDiscovery(mux)
	s.registerAuthorize(mux)
	s.registerToken(mux)
	s.registerTokenManagement(mux)
	s.registerClientAdmin(mux, admin)
	s.registerUserAdmin(mux, admin)
}

// Endpoint paths, relative to the issuer.
const (
	PathJWKS          = "/oauth2/jwks"
	PathAuthorize     = "/oauth2/authorize"
	PathPAR           = "/oauth2/par"
	PathToken         = "/oauth2/token"
	PathIntrospect    = "/oauth2/introspect"
	PathRevoke        = "/oauth2/revoke"
	PathRevocations   = "/oauth2/revocations"
	PathUserInfo      = "/oauth2/userinfo"
	PathAdminClients  = "/v1/identity/clients"
	PathAdminUsers    = "/v1/identity/users"
	PathOIDCDiscovery = "/.well-known/openid-configuration"
	PathASMetadata    = "/.well-known/oauth-authorization-server"
)

// endpoint returns the absolute URL of path.
func (s *Server) endpoint(path string) string { return s.cfg.Issuer + path }

// emit completes e with the request's context (source address, request ID,
// product) and appends it to the audit log. A failure to audit fails the
// operation: nothing security-relevant happens unrecorded.
func (s *Server) emit(ctx context.Context, r *http.Request, e *audit.Event) error {
	if r != nil {
		if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			ep := &audit.Endpoint{IP: host}
			fmt.Sscanf(port, "%d", &ep.Port)
			e.SrcEndpoint = ep
		}
		if e.Metadata.CorrelationUID == "" {
			e.Metadata.CorrelationUID = httpapi.RequestID(r.Context())
		}
	}
	e.Metadata.Product = "bulwark identity"
	if _, err := s.auditor.Append(ctx, []*audit.Event{e}); err != nil {
		return fmt.Errorf("audit %s/%s: %w", e.ClassName, e.ActivityName, err)
	}
	return nil
}

// OCSF classes and activities of identity events.
const (
	classAccountChange    = 3001 // users: create, password, lock, MFA
	classAuthentication   = 3002 // logins and token issuance
	classEntityManagement = 3004 // clients: create, update, delete
	classAPIActivity      = 6003 // introspection, revocation

	actLogon              = 1 // Authentication: Logon (user login)
	actAuthTicket         = 3 // Authentication: token issued
	actServiceTicket      = 4 // Authentication: token exchange
	actServiceTicketRenew = 5 // Authentication: refresh
	actPreauth            = 6 // Authentication: client authentication

	actCreate  = 1 // Account Change / Entity Management / API Activity
	actRead    = 2 // Entity Management / API Activity (introspection)
	actUpdate  = 3 // Entity Management / API Activity
	actDelete  = 4 // Entity Management / API Activity (revocation)
	actEnable  = 8 // Entity Management
	actDisable = 9 // Entity Management

	actPasswordChange = 3  // Account Change
	actLock           = 9  // Account Change
	actMFAEnable      = 10 // Account Change
	actMFADisable     = 11 // Account Change
)

// adminActor is the audit actor of an admin API request.
func (s *Server) adminActor(ctx context.Context) *audit.Actor {
	return &audit.Actor{User: &audit.User{UID: s.adminID(ctx), Type: "Admin"}, AppName: "admin API"}
}

// newEvent returns an event of class/activity with the outcome set. The
// class and activity names are filled in by the audit log.
func newEvent(class, activity int, ok bool, detail string) *audit.Event {
	e := &audit.Event{ClassUID: class, ActivityID: activity, StatusDetail: detail, StatusID: audit.StatusFailure, SeverityID: 3}
	if ok {
		e.StatusID, e.SeverityID = audit.StatusSuccess, 1
	}
	return e
}
