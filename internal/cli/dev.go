package cli

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/internal/identity"
	"github.com/bulwarksec/bulwark/internal/workload"
)

func newDevCommand() *cobra.Command {
	var (
		dataDir        string
		listen         string
		extAuthzListen string
		gatewayListen  string
		configPath     string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform in one process on loopback, for development",
		Long: `Run the Bulwark platform in one process on 127.0.0.1 with an embedded SQLite
store in the data directory. Keys are generated on first start and sealed on
disk; the admin credential and the demo user's password are printed once. A
demo user ("demo") and a demo confidential client ("demo-client", mTLS with a
self-signed certificate) are created for trying the authorization server. A
workload agent runs in-process and serves the SPIFFE Workload API on
<data-dir>/agent/workload.sock; the demo services (accounts, payments, ledger,
notifications, gateway) are registered for every process of the current user.
<data-dir>/dev.json tells scripts and tests where everything is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			abs, err := filepath.Abs(dataDir)
			if err != nil {
				return fmt.Errorf("data directory: %w", err)
			}
			if cmd.Flags().Changed("data-dir") || configPath == "" {
				cfg.DataDir = abs
				if cfg.Store.Driver == config.DriverSQLite {
					cfg.Store.Path = ""
				}
			}
			if cmd.Flags().Changed("listen") || configPath == "" {
				cfg.Listen = listen
			}
			if cmd.Flags().Changed("ext-authz-listen") || cfg.Policy.ExtAuthzListen == "" {
				cfg.Policy.ExtAuthzListen = extAuthzListen
				if !cmd.Flags().Changed("ext-authz-listen") && strings.HasSuffix(cfg.Listen, ":0") {
					cfg.Policy.ExtAuthzListen = "127.0.0.1:0"
				}
			}
			if cmd.Flags().Changed("gateway-listen") || configPath == "" {
				cfg.Gateway.Listen = gatewayListen
				if !cmd.Flags().Changed("gateway-listen") && strings.HasSuffix(cfg.Listen, ":0") {
					cfg.Gateway.Listen = "127.0.0.1:0"
				}
			}
			cfg.ResolvePaths()
			if err := cfg.Validate(); err != nil {
				return err
			}
			logger := newLogger(cmd.ErrOrStderr(), cfg.Log)
			srv, err := controlplane.New(cmd.Context(), &cfg, logger)
			if err != nil {
				return err
			}
			// The demo user and client are audited changes: the audit log
			// must be running, so they are provisioned once Run has started.
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			runDone := make(chan error, 1)
			go func() { runDone <- srv.Run(ctx) }()
			stop := func(err error) error {
				cancel()
				runErr := <-runDone
				if cmd.Context().Err() != nil {
					return runErr // interrupted while starting
				}
				return errors.Join(err, runErr)
			}

			demo, err := provisionDemo(ctx, srv.Identity(), cfg.DataDir, time.Now())
			if err != nil {
				return stop(err)
			}
			if err := provisionDevPolicies(ctx, srv.PolicyRepository(), cfg.CA.TrustDomain); err != nil {
				return stop(err)
			}
			// The in-process agent serves the demo services' SVIDs.
			wl, err := startDevWorkload(ctx, srv, &cfg, logger)
			if err != nil {
				return stop(err)
			}
			stop = func(err error) error {
				agentErr := wl.stop()
				cancel()
				runErr := <-runDone
				if cmd.Context().Err() != nil {
					return errors.Join(agentErr, runErr) // interrupted while starting
				}
				return errors.Join(err, agentErr, runErr)
			}
			// The demo bank, its agent's mTLS proxy and the gateway.
			dp, err := startDevDataPlane(ctx, srv, &cfg, wl, cfg.Gateway.Listen, logger)
			if err != nil {
				return stop(err)
			}
			stopAgent := stop
			stop = func(err error) error { return stopAgent(errors.Join(err, dp.stop())) }
			info := devinfo.Info{
				ControlPlaneURL:     srv.URL(),
				AdminCredentialFile: srv.AdminCredentialPath(),
				CACertFile:          srv.CAFile(),
				DataDir:             cfg.DataDir,
				AuditOrigin:         srv.AuditLog().Origin(),
				AuditPublicKey:      srv.AuditLog().VerifierKey(),
				MetricsURL:          srv.URL() + "/metrics",
				Issuer:              srv.Issuer(),
				DemoUser:            &demo.user,
				DemoClient:          &demo.client,
				TrustDomain:         wl.trustDomain,
				WorkloadAPISocket:   wl.socket,
				AuthZENURL:          srv.AuthZENURL(),
				GatewayURL:          dp.gatewayURL,
				GatewayCACertFile:   dp.gatewayCAFile,
				DemoAPIPaths:        dp.paths,
			}
			if addr := srv.ExtAuthzAddr(); addr != nil {
				info.ExtAuthzAddr = addr.String()
			}
			if err := devinfo.Write(cfg.DataDir, info); err != nil {
				return stop(err)
			}
			printDevBanner(cmd.OutOrStdout(), info, srv.NewAdminCredential, demo.newPassword)
			printWorkloadBanner(cmd.OutOrStdout(), info, wl)
			printWalkthrough(cmd.OutOrStdout(), info)
			select {
			case err := <-runDone:
				return errors.Join(err, dp.stop(), wl.stop())
			case err := <-dp.done:
				// A dead gateway or proxy is not what dev promises either.
				return stop(err)
			case err := <-wl.done:
				// The platform without its agent is not what dev promises.
				if err == nil && cmd.Context().Err() == nil {
					err = errors.New("workload agent stopped")
				}
				dpErr := dp.stop()
				cancel()
				return errors.Join(err, dpErr, <-runDone)
			}
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", ".bulwark", "directory for the database, sealed keys and dev.json")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8443", "control plane listen address (port 0 picks a free port)")
	cmd.Flags().StringVar(&extAuthzListen, "ext-authz-listen", "127.0.0.1:9191",
		"Envoy ext_authz gRPC listen address (port 0 when --listen has port 0)")
	cmd.Flags().StringVar(&gatewayListen, "gateway-listen", "127.0.0.1:8444",
		"the demo bank gateway's listen address (port 0 when --listen has port 0)")
	cmd.Flags().StringVar(&configPath, "config", "", "optional YAML configuration file; --data-dir and --listen override it")
	return cmd
}

// Names and files of the demo identities, in the data directory.
const (
	demoUsername     = "demo"
	demoClientID     = "demo-client"
	demoPasswordFile = "demo-user.password"
	demoKeyFile      = "demo-client.key"
	demoCertFile     = "demo-client.crt"
)

// demo is what provisionDemo created or found.
type demo struct {
	user   devinfo.DemoUser
	client devinfo.DemoClient
	// newPassword is the demo user's password when it was set at this
	// start, "" otherwise: it is shown once.
	newPassword string
}

// provisionDemo makes sure the demo user and the demo client exist. It is
// idempotent: what exists is kept, and only what is missing (the user,
// its password file, the client's key pair, the client) is created.
func provisionDemo(ctx context.Context, id *identity.Server, dataDir string, now time.Time) (*demo, error) {
	d := &demo{
		user: devinfo.DemoUser{Username: demoUsername, PasswordFile: filepath.Join(dataDir, demoPasswordFile)},
		client: devinfo.DemoClient{ClientID: demoClientID, PrivateKeyFile: filepath.Join(dataDir, demoKeyFile),
			CertificateFile: filepath.Join(dataDir, demoCertFile)},
	}
	var err error
	if d.newPassword, err = ensureDemoUser(ctx, id, d.user.PasswordFile); err != nil {
		return nil, fmt.Errorf("demo user: %w", err)
	}
	if err := ensureDemoClient(ctx, id, d.client, now); err != nil {
		return nil, fmt.Errorf("demo client: %w", err)
	}
	return d, nil
}

// ensureDemoUser creates the demo user with a random password saved in
// pwFile, or gives it a new one when pwFile was lost. It returns the
// password it set, or "".
func ensureDemoUser(ctx context.Context, id *identity.Server, pwFile string) (string, error) {
	u, err := id.GetUser(ctx, demoUsername)
	if err != nil && !errors.Is(err, identity.ErrUserNotFound) {
		return "", err
	}
	if u != nil {
		if _, err := os.Stat(pwFile); err == nil {
			return "", nil
		}
	}
	pw, err := randomPassword()
	if err != nil {
		return "", err
	}
	// The file is written first: a user whose password nobody has is
	// worse than a file whose user does not exist yet.
	if err := devinfo.WriteFileAtomic(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		return "", err
	}
	if u != nil {
		return pw, id.SetPassword(ctx, u.ID, pw)
	}
	_, err = id.CreateUser(ctx, identity.NewUser{Username: demoUsername, Password: pw, Name: "Demo User", Email: "demo@bulwark.local"})
	return pw, err
}

// randomPassword returns 128 random bits, base64url-encoded.
func randomPassword() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ensureDemoClient makes sure the demo client's key pair exists and is
// registered: a FAPI 2.0 confidential client authenticating with its
// self-signed certificate, its tokens bound to it.
func ensureDemoClient(ctx context.Context, id *identity.Server, dc devinfo.DemoClient, now time.Time) error {
	cert, err := ensureDemoKeyPair(dc.PrivateKeyFile, dc.CertificateFile, now)
	if err != nil {
		return err
	}
	jwk, err := identity.NewClientKey(cert.PublicKey, cert)
	if err != nil {
		return err
	}
	existing, err := id.GetClient(ctx, dc.ClientID)
	switch {
	case errors.Is(err, identity.ErrClientNotFound):
		err = id.CreateClient(ctx, &identity.Client{
			ID:                                    dc.ClientID,
			Name:                                  "Bulwark demo client",
			Profile:                               identity.ProfileFAPI2,
			TokenEndpointAuthMethod:               identity.AuthSelfSignedTLSClient,
			JWKS:                                  &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}},
			RedirectURIs:                          []string{"http://127.0.0.1:8080/callback"},
			GrantTypes:                            []string{identity.GrantClientCredentials, identity.GrantAuthorizationCode, identity.GrantRefreshToken, identity.GrantTokenExchange},
			Scopes:                                []string{"openid", "profile", "accounts:read", "payments:write"},
			Audiences:                             []string{"bank-api"},
			TLSClientCertificateBoundAccessTokens: true,
		})
		if errors.Is(err, identity.ErrClientExists) {
			return nil // registered by a concurrent start
		}
		return err
	case err != nil:
		return err
	}
	if existing.JWKS != nil {
		for _, k := range existing.JWKS.Keys {
			if k.KeyID == jwk.KeyID {
				return nil
			}
		}
	}
	// The key pair was replaced (lost or expiring): register the new one,
	// keeping whatever else was changed in the registration.
	existing.JWKS = &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}}
	return id.UpdateClient(ctx, existing)
}

// ensureDemoKeyPair returns the demo client's certificate, creating a new
// ECDSA P-256 key and self-signed certificate when the files are missing,
// do not match, or the certificate expires within a day.
func ensureDemoKeyPair(keyFile, certFile string, now time.Time) (*x509.Certificate, error) {
	if cert, err := loadKeyPair(keyFile, certFile); err == nil && now.Add(24*time.Hour).Before(cert.NotAfter) {
		return cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	keyPEM, err := privateKeyPEM(key)
	if err != nil {
		return nil, err
	}
	cert, certPEM, err := selfSignedClientCert(key, demoClientID, now)
	if err != nil {
		return nil, err
	}
	if err := devinfo.WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := devinfo.WriteFileAtomic(certFile, certPEM, 0o644); err != nil {
		return nil, err
	}
	return cert, nil
}

// loadKeyPair reads a PEM private key and certificate and checks that they
// belong together.
func loadKeyPair(keyFile, certFile string) (*x509.Certificate, error) {
	cert, err := readCertificatePEM(certFile)
	if err != nil {
		return nil, err
	}
	b, err := readBounded(keyFile, 1<<20)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM private key", keyFile)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if pub, isPub := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !isPub || !pub.Equal(signer.Public()) {
		return nil, fmt.Errorf("%s and %s do not belong together", keyFile, certFile)
	}
	return cert, nil
}

func printDevBanner(w io.Writer, info devinfo.Info, newCredential, newPassword string) {
	fmt.Fprintf(w, `
Bulwark dev platform is running.

  control plane   %s
  health          %s/healthz   readiness %s/readyz
  metrics         %s
  audit log       %s/v1/audit/checkpoint  (origin %s)
  audit key       %s
  TLS CA          %s
  dev.json        %s
`, info.ControlPlaneURL, info.ControlPlaneURL, info.ControlPlaneURL, info.MetricsURL,
		info.ControlPlaneURL, info.AuditOrigin, info.AuditPublicKey, info.CACertFile,
		filepath.Join(info.DataDir, devinfo.FileName))
	if newCredential != "" {
		fmt.Fprintf(w, `
  admin credential (shown once; saved 0600 in %s):
    %s
`, info.AdminCredentialFile, newCredential)
	} else {
		fmt.Fprintf(w, "\n  admin credential  in %s\n", info.AdminCredentialFile)
	}
	fmt.Fprintf(w, `
Identity (OAuth 2.0 / OpenID Connect, FAPI 2.0):
  issuer          %s
  discovery       %s/.well-known/openid-configuration
  demo client     %s  (self_signed_tls_client_auth, certificate-bound tokens)
                  key %s  certificate %s
`, info.Issuer, info.Issuer, info.DemoClient.ClientID, info.DemoClient.PrivateKeyFile, info.DemoClient.CertificateFile)
	if newPassword != "" {
		fmt.Fprintf(w, `  demo user       %s, password (shown once; saved 0600 in %s):
    %s
`, info.DemoUser.Username, info.DemoUser.PasswordFile, newPassword)
	} else {
		fmt.Fprintf(w, "  demo user       %s, password in %s\n", info.DemoUser.Username, info.DemoUser.PasswordFile)
	}
	fmt.Fprintf(w, `
Policy (Cedar, reference bank policies loaded; bulwark policy versions):
  AuthZEN         %s/.well-known/authzen-configuration
  ext_authz       %s  (Envoy ext_authz v3 gRPC, mTLS with an X.509-SVID)
  bundle          %s/v1/policy/bundle  (signed; keys at /v1/policy/bundle/keys)
  ask             %s
`, info.AuthZENURL, info.ExtAuthzAddr, info.ControlPlaneURL, authzenCurl(info))
	fmt.Fprintf(w, `
Try it:
  curl --cacert %s -H "Authorization: Bearer $(cat %s)" \
       -H 'Content-Type: application/json' \
       -d '{"events":[{"class_name":"Authentication","activity_name":"Logon","status_id":1,"actor":{"user":{"name":"alice"}}}]}' \
       %s/v1/audit/events
  curl --cacert %s %s/v1/audit/checkpoint
  go run ./cmd/bulwark audit verify
  go run ./cmd/bulwark clients list

Get an access token for the demo client (client credentials over mTLS):
  %s

`, shellQuote(info.CACertFile), shellQuote(info.AdminCredentialFile), info.ControlPlaneURL,
		shellQuote(info.CACertFile), info.ControlPlaneURL, tokenCurl(info))
}

// tokenCurl is a curl command line that gets a client-credentials token
// for the demo client, authenticating with its certificate.
func tokenCurl(info devinfo.Info) string {
	var b strings.Builder
	b.WriteString("curl")
	if info.CACertFile != "" {
		b.WriteString(" --cacert " + shellQuote(info.CACertFile))
	}
	fmt.Fprintf(&b, " --cert %s --key %s -d grant_type=client_credentials -d client_id=%s -d scope=accounts:read %s",
		shellQuote(info.DemoClient.CertificateFile), shellQuote(info.DemoClient.PrivateKeyFile), info.DemoClient.ClientID,
		shellQuote(info.Issuer+identity.PathToken))
	return b.String()
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:@%+=,-]+$`)

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Names of the dev agent and the demo services it serves.
const (
	devAgentName         = "dev"
	devAgentReadyTimeout = 10 * time.Second
)

// demoServices are the demo bank's services, registered in dev as
// spiffe://<trust domain>/ns/bank/sa/<service>.
var demoServices = []string{"accounts", "payments", "ledger", "notifications", "gateway"}

// devWorkload is the agent `bulwark dev` runs in-process.
type devWorkload struct {
	trustDomain string
	socket      string
	selector    string        // the demo entries' selector, e.g. "unix:uid:1000"
	services    []spiffeid.ID // the demo services' SPIFFE IDs
	done        <-chan error  // the agent's Run result
	cancel      context.CancelFunc
	agent       *workload.Agent
}

// stop stops the agent and returns its Run result.
func (wl *devWorkload) stop() error {
	wl.cancel()
	return <-wl.done
}

// startDevWorkload registers the demo services and runs the workload agent
// until ctx ends, joining with a new join token when it has not joined yet
// (or its saved state no longer lets it start). It returns once the agent
// serves the Workload API.
func startDevWorkload(ctx context.Context, srv *controlplane.Server, cfg *config.Config, logger *slog.Logger) (*devWorkload, error) {
	authority := srv.CA()
	td := authority.TrustDomain()
	agentID, err := spiffeid.FromSegments(td, "agent", devAgentName)
	if err != nil {
		return nil, fmt.Errorf("dev agent ID: %w", err)
	}
	wl := &devWorkload{trustDomain: td.Name(), selector: fmt.Sprintf("unix:uid:%d", os.Getuid())}
	if wl.services, err = ensureDemoEntries(ctx, authority, agentID, wl.selector); err != nil {
		return nil, err
	}
	var pool *x509.CertPool
	if f := srv.CAFile(); f != "" {
		b, err := readBounded(f, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("dev agent: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("dev agent: no certificate in %s", f)
		}
	}
	wcfg := workload.Config{ServerURL: srv.URL(), ServerCAs: pool, DataDir: cfg.DataDir, SocketPath: cfg.Agent.SocketPath}
	deps := workload.Deps{Logger: logger}
	err = wl.run(ctx, wcfg, deps)
	if err == nil {
		return wl, nil
	}
	// First start, or the saved identity is unusable: join again. The
	// token is handed over in memory and never logged or shown.
	token, _, _, terr := authority.CreateJoinToken(ctx, devAgentName, 0)
	if terr != nil {
		return nil, fmt.Errorf("dev agent join token: %w", errors.Join(terr, err))
	}
	wcfg.JoinToken = token
	if err := wl.run(ctx, wcfg, deps); err != nil {
		return nil, err
	}
	return wl, nil
}

// run starts an agent and waits until it serves the Workload API; on an
// error the agent is stopped.
func (wl *devWorkload) run(ctx context.Context, cfg workload.Config, deps workload.Deps) error {
	agent, err := workload.New(cfg, deps)
	if err != nil {
		return fmt.Errorf("dev agent: %w", err)
	}
	agentCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- agent.Run(agentCtx) }()
	fail := func(err error) error {
		cancel()
		return errors.Join(err, <-done)
	}
	timeout := time.NewTimer(devAgentReadyTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !agent.Ready() {
		select {
		case err := <-done:
			cancel()
			if err == nil {
				err = errors.New("stopped before serving")
			}
			return fmt.Errorf("dev agent: %w", err)
		case <-timeout.C:
			return fail(fmt.Errorf("dev agent: not serving within %s", devAgentReadyTimeout))
		case <-tick.C:
		}
	}
	wl.socket, wl.done, wl.cancel, wl.agent = agent.SocketPath(), done, cancel, agent
	return nil
}

// ensureDemoEntries registers each demo service for the dev agent with
// selector (unix:uid of the current user), unless that entry exists: a
// restart creates nothing.
func ensureDemoEntries(ctx context.Context, authority *ca.Authority, agentID spiffeid.ID, selector string) ([]spiffeid.ID, error) {
	sel, err := ca.ParseSelector(selector)
	if err != nil {
		return nil, fmt.Errorf("demo entries: %w", err)
	}
	existing, err := authority.ListEntries(ctx)
	if err != nil {
		return nil, fmt.Errorf("demo entries: %w", err)
	}
	ids := make([]spiffeid.ID, 0, len(demoServices))
	for _, name := range demoServices {
		id, err := spiffeid.FromSegments(authority.TrustDomain(), "ns", "bank", "sa", name)
		if err != nil {
			return nil, fmt.Errorf("demo entry %s: %w", name, err)
		}
		ids = append(ids, id)
		if slices.ContainsFunc(existing, func(e ca.Entry) bool {
			return e.SPIFFEID == id && e.ParentID == agentID && len(e.Selectors) == 1 && e.Selectors[0] == sel
		}) {
			continue
		}
		if err := authority.CreateEntry(ctx, &ca.Entry{SPIFFEID: id, ParentID: agentID, Selectors: []ca.Selector{sel}}); err != nil {
			return nil, fmt.Errorf("demo entry %s: %w", id, err)
		}
	}
	return ids, nil
}

// printWorkloadBanner tells where the Workload API is, what it serves and
// to whom, and ends the banner.
func printWorkloadBanner(w io.Writer, info devinfo.Info, wl *devWorkload) {
	names := make([]string, len(wl.services))
	for i, id := range wl.services {
		names[i] = id.String()
	}
	fmt.Fprintf(w, `Workload identity (SPIFFE, trust domain %s):
  Workload API    unix://%s  (served by the in-process agent)
  demo services   %s
  selector        %s: in dev EVERY process of this user gets all of these
                  identities; register real services with their binary path or
                  SHA-256 (bulwark ca entry create --selector unix:path:...)
  go-spiffe       export SPIFFE_ENDPOINT_SOCKET=unix://%s
                  then workloadapi.NewX509Source(ctx) finds the agent
`, info.TrustDomain, info.WorkloadAPISocket, strings.Join(names, "\n                  "), wl.selector,
		shellQuote(info.WorkloadAPISocket))
}
