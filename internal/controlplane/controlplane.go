// Package controlplane assembles the Bulwark control plane from its
// components — store, keys, TLS, admin authentication, the audit log and
// its API, the OAuth 2.0 / OpenID Connect authorization server, the SPIFFE
// workload CA and its API, health and metrics — and serves it over HTTPS
// until its context ends. `bulwark server` and `bulwark dev` both run it.
package controlplane

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/internal/directory"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/identity"
	"github.com/bulwarksec/bulwark/internal/keys"
	"github.com/bulwarksec/bulwark/internal/policy"
	"github.com/bulwarksec/bulwark/internal/store"
)

// Files in the data directory.
const (
	AdminCredentialFile = "admin.credential"
	CACertFile          = "tls/ca.pem"
	keysDir             = "keys"
	auditKeyName        = "audit-checkpoint"
)

// Server is a running control plane.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	db       *store.DB
	audit    *audit.Log
	identity *identity.Server
	ca       *ca.Authority
	http     *http.Server

	policyRepo       *policy.Repository
	directory        *directory.Directory
	metrics          *prometheus.Registry
	decisions        *policy.DecisionService
	extAuthz         *grpc.Server // nil when policy.ext_authz_listen is empty
	extAuthzListener net.Listener
	// longPolls is canceled when shutdown begins, ending the long polls
	// of the revocation feed and the CA's deny list, which would
	// otherwise hold Shutdown for up to their wait time.
	longPolls    context.Context
	endLongPolls context.CancelFunc
	listener     net.Listener
	caFile       string

	// The audit log runs from New on, because building the CA may audit
	// (its first intermediate); logDone is closed when its Run returns,
	// with logErr.
	stopLogRun context.CancelFunc
	logDone    chan struct{}
	logErr     error

	// NewAdminCredential is the admin credential created at this start, or
	// "" if one existed already. It is shown once and never again.
	NewAdminCredential string

	closeOnce sync.Once
}

// New builds the control plane from cfg and binds its listener, but serves
// nothing until Run. The audit log starts here already (building the CA
// records its first intermediate); Run stops it, so a Server from New must
// be Run.
func New(ctx context.Context, cfg *config.Config, logger *slog.Logger) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	ks, err := keys.OpenSealed(filepath.Join(cfg.DataDir, keysDir))
	if err != nil {
		return nil, err
	}
	db, err := store.Open(ctx, store.Options{
		Driver: store.Driver(cfg.Store.Driver), Path: cfg.Store.Path, DSN: cfg.Store.DSN, MaxOpenConns: cfg.Store.MaxOpenConns,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: logger, db: db}
	s.longPolls, s.endLongPolls = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = reg

	auth, err := adminauth.New(db, logger, reg)
	if err != nil {
		return nil, err
	}
	if s.NewAdminCredential, err = auth.EnsureCredential(ctx); err != nil {
		return nil, err
	}
	if s.NewAdminCredential != "" {
		if err := devinfo.WriteFileAtomic(s.AdminCredentialPath(), []byte(s.NewAdminCredential+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("save admin credential: %w", err)
		}
	}

	skey, vkey, err := auditKeys(ks, cfg.Audit.Origin)
	if err != nil {
		return nil, err
	}
	s.audit, err = audit.New(audit.Config{
		Origin:             cfg.Audit.Origin,
		CheckpointInterval: time.Duration(cfg.Audit.CheckpointInterval),
		CommitBatch:        cfg.Audit.CommitBatch,
		MaxEventBytes:      int(cfg.Audit.MaxEventBytes),
	}, audit.Deps{DB: db, SignerKey: skey, VerifierKey: vkey, Logger: logger, Metrics: audit.NewMetrics(reg)})
	if err != nil {
		return nil, err
	}
	logCtx, stopLog := context.WithCancel(context.Background())
	s.stopLogRun, s.logDone = stopLog, make(chan struct{})
	go func() { s.logErr = s.audit.Run(logCtx); close(s.logDone) }()

	// Enforcement points (agents, gateways) append their security events
	// with their X.509-SVID; each event records which workload reported it.
	api, err := audit.NewAPI(s.audit, audit.APIConfig{
		MaxBatchEvents: cfg.Audit.MaxBatchEvents, MaxRequestBytes: int64(cfg.Audit.MaxRequestBytes),
		AppendAuth: s.requireEnforcementPoint(auth.Require),
		Reporter: func(ctx context.Context) string {
			if c, ok := policy.CallerFrom(ctx); ok && c.Kind == "workload" {
				return c.ID
			}
			return ""
		},
	}, logger)
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	api.Register(mux, auth.Require)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, r, logger, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})

	tlsCfg, err := s.tlsConfig(ks)
	if err != nil {
		return nil, err
	}
	// The listener is bound before the authorization server is built: its
	// default issuer is the bound address, so that port 0 works.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	s.listener = tls.NewListener(ln, tlsCfg)

	idCfg, err := identity.ConfigFrom(cfg.Identity, s.URL())
	if err != nil {
		return nil, err
	}
	s.identity, err = identity.New(ctx, idCfg, identity.Deps{DB: db, Sealer: ks, Audit: s.audit, Logger: logger, Metrics: reg, AdminID: adminauth.CredentialID})
	if err != nil {
		return nil, err
	}
	s.identity.Register(mux, auth.Require)

	caCfg, err := ca.ConfigFrom(cfg.CA)
	if err != nil {
		return nil, err
	}
	// Building the CA appends to the audit log: should the log stop, it
	// must not wait for it forever.
	caCtx, cancelCA := context.WithCancel(ctx)
	defer cancelCA()
	go func() {
		select {
		case <-s.logDone:
			cancelCA()
		case <-caCtx.Done():
		}
	}()
	s.ca, err = ca.New(caCtx, caCfg, ca.Deps{DB: db, Sealer: ks, RootStore: ks, Audit: s.audit, Logger: logger, Metrics: reg})
	if err != nil {
		return nil, fmt.Errorf("workload CA: %w", err)
	}
	ca.NewAPI(s.ca, logger).Register(mux, auth.Require)
	if err := s.buildPolicy(caCtx, mux, ks, reg, auth.Require, tlsCfg); err != nil {
		return nil, err
	}
	s.http = &http.Server{
		Handler:           httpapi.WithRequestID(securityHeaders(s.cancelLongPolls(mux))),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      120 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// auditKeys returns the checkpoint key pair for origin, generating and
// sealing it on first start.
func auditKeys(ks *keys.Sealed, origin string) (skey, vkey string, err error) {
	raw, err := ks.LoadOrCreate(auditKeyName, func() ([]byte, error) {
		skey, vkey, err := audit.GenerateSigningKey(origin)
		if err != nil {
			return nil, err
		}
		return json.Marshal(map[string]string{"signer": skey, "verifier": vkey})
	})
	if err != nil {
		return "", "", fmt.Errorf("audit checkpoint key: %w", err)
	}
	var pair map[string]string
	if err := json.Unmarshal(raw, &pair); err != nil {
		return "", "", fmt.Errorf("audit checkpoint key: %w", err)
	}
	skey, vkey = pair["signer"], pair["verifier"]
	if name, _, _ := strings.Cut(vkey, "+"); name != origin {
		return "", "", fmt.Errorf("audit checkpoint key is for origin %q but audit.origin is %q: a log keeps its origin for life", name, origin)
	}
	return skey, vkey, nil
}

func (s *Server) tlsConfig(ks *keys.Sealed) (*tls.Config, error) {
	minVersion := uint16(tls.VersionTLS12)
	if s.cfg.TLS.MinVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	// Client certificates are requested, never required nor verified here:
	// the authorization server checks them for mTLS client authentication
	// (RFC 8705) and binds tokens to them; every other route ignores them.
	cfg := &tls.Config{MinVersion: minVersion, NextProtos: []string{"h2", "http/1.1"}, ClientAuth: tls.RequestClientCert}
	if s.cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load tls.cert_file/tls.key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
		return cfg, nil
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, _, err := net.SplitHostPort(s.cfg.Listen); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	if name, err := os.Hostname(); err == nil {
		hosts = append(hosts, name)
	}
	s.caFile = filepath.Join(s.cfg.DataDir, CACertFile)
	sc, err := ca.LocalServing(ks, s.caFile, hosts, time.Now())
	if err != nil {
		return nil, err
	}
	cfg.Certificates = []tls.Certificate{sc.Certificate}
	return cfg, nil
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// cancelLongPolls gives long-poll requests a context that ends when
// shutdown begins. Other requests keep theirs: in-flight work finishes.
func (s *Server) cancelLongPolls(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == identity.PathRevocations || r.URL.Path == ca.PathDenyList || r.URL.Path == policy.PathBundle {
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			stop := context.AfterFunc(s.longPolls, cancel)
			defer stop()
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.db.Ping(ctx); err != nil {
		s.log.Warn("not ready: store unreachable", "error", err)
		httpapi.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "store unreachable"})
		return
	}
	if !s.audit.Ready() {
		httpapi.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "audit log starting"})
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// URL returns the HTTPS base URL the control plane listens on.
func (s *Server) URL() string {
	return "https://" + s.listener.Addr().String()
}

// Addr returns the bound listen address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.listener.Addr() }

// CAFile returns the PEM file of the CA that issued the serving
// certificate, or "" when certificate files are configured.
func (s *Server) CAFile() string { return s.caFile }

// AdminCredentialPath is where the first admin credential is saved.
func (s *Server) AdminCredentialPath() string {
	return filepath.Join(s.cfg.DataDir, AdminCredentialFile)
}

// AuditLog returns the audit log.
func (s *Server) AuditLog() *audit.Log { return s.audit }

// Identity returns the authorization server.
func (s *Server) Identity() *identity.Server { return s.identity }

// CA returns the workload certificate authority.
func (s *Server) CA() *ca.Authority { return s.ca }

// Issuer returns the authorization server's issuer identifier: identity.issuer,
// or the control plane's URL when that is empty.
func (s *Server) Issuer() string { return s.identity.Issuer() }

// Run serves until ctx ends, then shuts down in order: stop accepting,
// finish in-flight requests (whose appends the log still commits), stop
// the authorization server's key rotation and pruning and the CA's
// maintenance, then stop the log and close the store.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	logStopped := false
	idCtx, stopIdentity := context.WithCancel(context.Background())
	idDone := make(chan error, 1)
	go func() { idDone <- s.identity.Run(idCtx) }()

	caCtx, stopCA := context.WithCancel(context.Background())
	caDone := make(chan error, 1)
	go func() { caDone <- s.ca.Run(caCtx) }()

	policyDone, stopPolicy := s.runPolicy()

	httpDone := make(chan error, 1)
	go func() { httpDone <- s.http.Serve(s.listener) }()

	var runErr error
	select {
	case <-ctx.Done():
	case <-s.logDone:
		err := s.logErr
		if err == nil {
			err = errors.New("stopped before the control plane")
		}
		runErr = fmt.Errorf("audit log: %w", err)
		logStopped = true
	case err := <-idDone:
		if err == nil {
			err = errors.New("stopped before the control plane")
		}
		runErr = fmt.Errorf("authorization server: %w", err)
		idDone <- nil
	case err := <-caDone:
		if err == nil {
			err = errors.New("stopped before the control plane")
		}
		runErr = fmt.Errorf("workload CA: %w", err)
		caDone <- nil
	case err := <-httpDone:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("serve: %w", err)
		}
		httpDone <- nil
	case err := <-policyDone:
		if err == nil {
			err = errors.New("stopped before the control plane")
		}
		runErr = fmt.Errorf("policy: %w", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s.endLongPolls()
	if err := s.http.Shutdown(shutdownCtx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("shut down HTTP: %w", err))
	}
	if err := stopPolicy(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	stopIdentity()
	if err := <-idDone; err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("authorization server: %w", err))
	}
	stopCA()
	if err := <-caDone; err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("workload CA: %w", err))
	}
	if err := s.stopLog(); err != nil && !logStopped {
		runErr = errors.Join(runErr, fmt.Errorf("audit log: %w", err))
	}
	s.log.Info("control plane stopped")
	return runErr
}

// stopLog stops the audit log and returns the error its Run returned.
func (s *Server) stopLog() error {
	if s.logDone == nil {
		return nil
	}
	s.stopLogRun()
	<-s.logDone
	return s.logErr
}

func (s *Server) close() {
	s.closeOnce.Do(func() {
		s.endLongPolls()
		if s.listener != nil {
			s.listener.Close()
		}
		if s.extAuthzListener != nil {
			s.extAuthzListener.Close()
		}
		_ = s.stopLog()
		if s.db != nil {
			s.db.Close()
		}
	})
}
