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
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/internal/identity"
)

func newDevCommand() *cobra.Command {
	var (
		dataDir    string
		listen     string
		configPath string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform in one process on loopback, for development",
		Long: `Run the Bulwark platform in one process on 127.0.0.1 with an embedded SQLite
store in the data directory. Keys are generated on first start and sealed on
disk; the admin credential and the demo user's password are printed once. A
demo user ("demo") and a demo confidential client ("demo-client", mTLS with a
self-signed certificate) are created for trying the authorization server.
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
			}
			if err := devinfo.Write(cfg.DataDir, info); err != nil {
				return stop(err)
			}
			printDevBanner(cmd.OutOrStdout(), info, srv.NewAdminCredential, demo.newPassword)
			return <-runDone
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", ".bulwark", "directory for the database, sealed keys and dev.json")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8443", "control plane listen address (port 0 picks a free port)")
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

Press Ctrl-C to stop.
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
