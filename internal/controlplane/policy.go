package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/directory"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/keys"
	"github.com/bulwarksec/bulwark/internal/policy"
)

// maxExtAuthzMessage bounds one ext_authz CheckRequest.
const maxExtAuthzMessage = 1 << 20

// buildPolicy builds the policy repository and the decision service and
// registers their HTTP APIs, and the ext_authz gRPC server when
// policy.ext_authz_listen is set.
func (s *Server) buildPolicy(ctx context.Context, mux *http.ServeMux, ks *keys.Sealed, reg prometheus.Registerer,
	admin func(http.Handler) http.Handler, serving *tls.Config) error {
	cfg := s.cfg.Policy
	repo, err := policy.NewRepository(ctx, policy.RepositoryConfig{
		Issuer:    s.cfg.Audit.Origin,
		BundleTTL: time.Duration(cfg.BundleTTL),
	}, policy.RepositoryDeps{DB: s.db, Audit: s.audit, Keys: ks, Logger: s.log, Metrics: reg})
	if err != nil {
		return fmt.Errorf("policy repository: %w", err)
	}
	s.policyRepo = repo
	pep := s.requireEnforcementPoint(admin)
	repo.Register(mux, admin, pep)

	// The service directory: agents and gateways resolve destinations in it.
	dir, err := directory.New(directory.Config{TrustDomain: s.cfg.CA.TrustDomain},
		directory.Deps{DB: s.db, Audit: s.audit, Logger: s.log})
	if err != nil {
		return fmt.Errorf("service directory: %w", err)
	}
	dir.Register(mux, admin, pep)
	s.directory = dir

	ds, err := policy.NewDecisionService(policy.DecisionConfig{
		BaseURL:             s.URL(),
		MaxRequestBytes:     int64(cfg.MaxRequestBytes),
		MaxBatchEvaluations: cfg.MaxBatchEvaluations,
		SpoolDir:            cfg.DecisionLog.SpoolDir,
		MaxSpoolBytes:       int64(cfg.DecisionLog.MaxSpoolBytes),
		BatchSize:           cfg.DecisionLog.BatchSize,
	}, policy.DecisionDeps{Source: repo, Audit: s.audit, Logger: s.log, Metrics: reg})
	if err != nil {
		return fmt.Errorf("decision service: %w", err)
	}
	s.decisions = ds
	ds.RegisterAuthZEN(mux, pep)

	if cfg.ExtAuthzListen == "" {
		return nil
	}
	tlsCfg := &tls.Config{
		MinVersion:   serving.MinVersion,
		Certificates: serving.Certificates,
		NextProtos:   []string{"h2"},
		// Every caller presents an X.509-SVID of this trust domain, checked
		// against the CA's current authorities and deny list.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			chain := make([]*x509.Certificate, 0, len(raw))
			for _, der := range raw {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					return fmt.Errorf("ext_authz client certificate: %w", err)
				}
				chain = append(chain, c)
			}
			if _, err := s.ca.VerifyWorkload(chain); err != nil {
				s.auditPEPRefusal(context.Background(), "ext_authz", err.Error(), chain)
				return err
			}
			return nil
		},
	}
	ln, err := net.Listen("tcp", cfg.ExtAuthzListen)
	if err != nil {
		return fmt.Errorf("listen on policy.ext_authz_listen %s: %w", cfg.ExtAuthzListen, err)
	}
	s.extAuthzListener = ln
	s.extAuthz = grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)), grpc.MaxRecvMsgSize(maxExtAuthzMessage))
	ds.RegisterExtAuthz(s.extAuthz)
	return nil
}

// requireEnforcementPoint authenticates a policy enforcement point: a
// request without an Authorization header must carry a valid X.509-SVID
// of this CA as its TLS client certificate; any other request must carry
// the admin credential. The caller is stored with policy.WithCaller.
// Refused SVIDs are audited.
func (s *Server) requireEnforcementPoint(admin func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		asAdmin := admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := policy.WithCaller(r.Context(), policy.Caller{Kind: "admin", ID: adminauth.CredentialID(r.Context())})
			next.ServeHTTP(w, r.WithContext(ctx))
		}))
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "" || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
				asAdmin.ServeHTTP(w, r)
				return
			}
			id, err := s.ca.VerifyWorkload(r.TLS.PeerCertificates)
			if err != nil {
				s.auditPEPRefusal(r.Context(), r.URL.Path, err.Error(), r.TLS.PeerCertificates)
				httpapi.WriteError(w, r, s.log, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthenticated,
					"enforcement points present a valid X.509-SVID of this trust domain, or the admin credential"))
				return
			}
			ctx := policy.WithCaller(r.Context(), policy.Caller{Kind: "workload", ID: id.String()})
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// auditPEPRefusal records a refused enforcement-point certificate. The
// refusal stands whether or not it could be recorded.
func (s *Server) auditPEPRefusal(ctx context.Context, endpoint, detail string, chain []*x509.Certificate) {
	e := &audit.Event{ClassUID: 3002, ActivityID: 1, StatusID: audit.StatusFailure, SeverityID: 3,
		StatusDetail: "enforcement point refused: " + detail,
		Actor:        &audit.Actor{AppName: "policy enforcement point"},
		Resources:    []audit.Resource{{Type: "endpoint", Name: endpoint}},
	}
	if len(chain) > 0 {
		e.Resources = append(e.Resources, audit.Resource{Type: "certificate", UID: chain[0].SerialNumber.Text(16)})
	}
	e.Metadata.Product = "bulwark policy"
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.audit.Append(ctx, []*audit.Event{e}); err != nil {
		s.log.Error("policy: audit refusal", slog.Any("error", err))
	}
}

// runPolicy starts the repository's and the decision service's loops and
// the ext_authz server; the returned stop function ends them in order:
// the gRPC server first (finishing in-flight checks), then the decision
// log shipper and the repository.
func (s *Server) runPolicy() (done <-chan error, stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 3)
	n := 2
	go func() { errs <- wrapErr("policy repository", s.policyRepo.Run(ctx)) }()
	go func() { errs <- wrapErr("decision service", s.decisions.Run(ctx)) }()
	if s.extAuthz != nil {
		n++
		s.log.Info("ext_authz listening", slog.String("addr", s.extAuthzListener.Addr().String()))
		go func() { errs <- wrapErr("ext_authz", s.extAuthz.Serve(s.extAuthzListener)) }()
	}
	first := make(chan error, 1)
	results := make(chan error, n)
	go func() {
		for range n {
			err := <-errs
			select {
			case first <- err:
			default:
			}
			results <- err
		}
	}()
	stop = func() error {
		if s.extAuthz != nil {
			t := time.AfterFunc(10*time.Second, s.extAuthz.Stop)
			s.extAuthz.GracefulStop()
			t.Stop()
		}
		cancel()
		var all error
		for range n {
			if err := <-results; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				all = errors.Join(all, err)
			}
		}
		return all
	}
	return first, stop
}

func wrapErr(what string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// PolicyRepository returns the policy store.
func (s *Server) PolicyRepository() *policy.Repository { return s.policyRepo }

// Metrics returns the registry served at /metrics, for components that run
// in the control plane's process (bulwark dev's gateway and mesh proxy).
func (s *Server) Metrics() prometheus.Registerer { return s.metrics }

// Directory returns the service directory.
func (s *Server) Directory() *directory.Directory { return s.directory }

// DecisionService returns the AuthZEN / ext_authz decision service.
func (s *Server) DecisionService() *policy.DecisionService { return s.decisions }

// ExtAuthzAddr returns the bound address of the ext_authz gRPC service,
// or nil when it is off.
func (s *Server) ExtAuthzAddr() net.Addr {
	if s.extAuthzListener == nil {
		return nil
	}
	return s.extAuthzListener.Addr()
}

// AuthZENURL returns the base URL of the AuthZEN API: its metadata is at
// <url>/.well-known/authzen-configuration.
func (s *Server) AuthZENURL() string { return s.URL() }
