package cli

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/forward"
	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/demo/bank"
	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/internal/directory"
	"github.com/bulwarksec/bulwark/internal/gateway"
	"github.com/bulwarksec/bulwark/internal/identity"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/internal/mesh/node"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

// Files of the dev data plane, under <data_dir>/gateway.
const (
	devGatewayDir        = "gateway"
	devGatewayClientKey  = "client.key"
	devGatewayTLSCert    = "tls.crt"
	devGatewayTLSKey     = "tls.key"
	devGatewayRoutes     = "routes.yaml"
	devGatewayOpenAPI    = "openapi.yaml"
	devGatewayBundle     = "policy-bundle.json"
	devGatewayAudience   = "bank-api"
	devDataPlaneActor    = "bulwark dev"
	devGatewayCertExpiry = 365 * 24 * time.Hour
)

// devDataPlane is the demo bank behind its agent's mTLS proxy and the
// edge gateway, all in the `bulwark dev` process.
type devDataPlane struct {
	gatewayURL    string
	gatewayCAFile string
	paths         []string
	// done receives the first component's failure (or nil at a clean
	// stop); stop stops everything and waits.
	done chan error
	stop func() error
}

// startDevDataPlane starts the demo bank's four services on loopback, the
// agent's mTLS proxy in front of them (Cedar service-to-service policy,
// sdk/peer-signed identity headers), registers them in the service
// directory, registers the gateway's OAuth client and starts the gateway on
// gatewayListen.
func startDevDataPlane(ctx context.Context, srv *controlplane.Server, cfg *config.Config, wl *devWorkload,
	gatewayListen string, logger *slog.Logger) (_ *devDataPlane, err error) {
	ctx, cancel := context.WithCancel(ctx)
	var running []<-chan error
	dp := &devDataPlane{done: make(chan error, 8)}
	dp.stop = func() error {
		cancel()
		var errs []error
		for _, c := range running {
			errs = append(errs, <-c)
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, dp.stop())
		}
	}()
	goRun := func(name string, run func() error) {
		c := make(chan error, 1)
		running = append(running, c)
		go func() {
			err := run()
			if err != nil && ctx.Err() == nil {
				err = fmt.Errorf("%s: %w", name, err)
				dp.done <- err
			} else {
				err = nil
			}
			c <- err
		}()
	}

	td := srv.CA().TrustDomain()
	ids := map[string]spiffeid.ID{}
	for _, name := range append(slices.Clone(bank.Services), "gateway") {
		if ids[name], err = spiffeid.FromSegments(td, "ns", "bank", "sa", name); err != nil {
			return nil, fmt.Errorf("demo bank id %s: %w", name, err)
		}
	}

	// The services listen on loopback only; their agent's inbound is what
	// other services reach.
	services := make([]node.Service, 0, len(bank.Services))
	keys := map[string][]byte{}
	bankLn := map[string]net.Listener{}
	defer func() {
		for _, ln := range bankLn {
			ln.Close()
		}
	}()
	for _, name := range bank.Services {
		if keys[name], err = peer.NewKey(); err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("demo bank %s: %w", name, err)
		}
		bankLn[name] = ln
		services = append(services, node.Service{Name: name, ID: ids[name], Listen: "127.0.0.1:0",
			Upstream: "http://" + ln.Addr().String(), PeerKey: keys[name], OutboundListen: "127.0.0.1:0"})
	}
	proxy, err := node.New(node.Config{
		ServerURL:          srv.URL(),
		Issuer:             srv.Issuer(),
		AuditAllowed:       true,
		SpoolDir:           cfg.Agent.SpoolDir,
		CacheDir:           filepath.Join(cfg.DataDir, "agent", "proxy"),
		PolicyMaxStaleness: time.Duration(cfg.Agent.PolicyMaxStaleness),
		Services:           services,
	}, node.Deps{
		Sources:    func(id spiffeid.ID) mesh.SVIDSource { return wl.agent.SVIDSource(id) },
		HTTPClient: wl.agent.ControlPlaneClient(),
		Denied:     wl.agent.IsDenied,
		Logger:     logger.With("component", "mesh"),
		Metrics:    prometheus.WrapRegistererWith(prometheus.Labels{"component": "mesh"}, srv.Metrics()),
	})
	if err != nil {
		return nil, fmt.Errorf("mesh proxy: %w", err)
	}
	goRun("mesh proxy", func() error { return proxy.Run(ctx) })

	outbound := map[string]string{}
	for _, name := range bank.Services {
		outbound[name] = "http://" + proxy.OutboundAddr(name).String()
	}
	b, err := bank.New(bank.Config{DataDir: cfg.DataDir, TrustDomain: td.Name(), OutboundURLs: outbound, PeerKeys: keys},
		bank.Deps{Events: auditLogSink{srv.AuditLog()}, Logger: logger.With("component", "bank")})
	if err != nil {
		return nil, fmt.Errorf("demo bank: %w", err)
	}
	running = append(running, closeOnDone(ctx, b.Close))
	for name, ln := range bankLn {
		goRun("demo bank "+name, func() error { return b.Serve(ctx, name, ln) })
		delete(bankLn, name)
	}

	// The directory tells agents and the gateway where each service's
	// agent listens.
	for _, name := range bank.Services {
		svc := directory.Service{ID: ids[name].String(), Name: name, Endpoints: []string{proxy.InboundAddr(name).String()},
			Owner: "demo-bank", DataClasses: demoDataClasses[name], Region: "eu"}
		if _, err := srv.Directory().Put(ctx, svc, devDataPlaneActor); err != nil {
			return nil, fmt.Errorf("register %s in the service directory: %w", name, err)
		}
	}

	gw, err := startDevGateway(ctx, srv, cfg, wl, ids, gatewayListen, logger.With("component", "gateway"), goRun)
	if err != nil {
		return nil, err
	}
	dp.gatewayURL, dp.gatewayCAFile, dp.paths = gw.url, gw.caFile, bank.PublicPaths()
	return dp, nil
}

// demoDataClasses are the data classes each demo service holds.
var demoDataClasses = map[string][]string{
	"accounts":      {"confidential"},
	"payments":      {"confidential"},
	"ledger":        {"confidential"},
	"notifications": {"internal"},
}

// closeOnDone runs closeFn once ctx ends and reports its error.
func closeOnDone(ctx context.Context, closeFn func() error) <-chan error {
	c := make(chan error, 1)
	go func() {
		<-ctx.Done()
		c <- closeFn()
	}()
	return c
}

// auditLogSink sends the in-process demo bank's business events straight
// to the control plane's audit log (a separate service would send them
// through its own forwarder).
type auditLogSink struct{ log *audit.Log }

func (s auditLogSink) Send(ctx context.Context, events ...*audit.Event) error {
	_, err := s.log.Append(ctx, events)
	return err
}

// devGateway is the running dev gateway.
type devGateway struct {
	url, caFile string
}

// startDevGateway registers the gateway's OAuth client, writes the demo
// bank's routes and OpenAPI document beside a self-signed serving
// certificate (kept if present, so the developer may edit them), and starts
// the gateway with its own SVID.
func startDevGateway(ctx context.Context, srv *controlplane.Server, cfg *config.Config, wl *devWorkload,
	ids map[string]spiffeid.ID, listen string, logger *slog.Logger, goRun func(string, func() error)) (*devGateway, error) {
	dir := filepath.Join(cfg.DataDir, devGatewayDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	key, kid, err := ensureGatewayClient(ctx, srv.Identity(), filepath.Join(dir, devGatewayClientKey), ids)
	if err != nil {
		return nil, fmt.Errorf("gateway client: %w", err)
	}
	certFile, keyFile := filepath.Join(dir, devGatewayTLSCert), filepath.Join(dir, devGatewayTLSKey)
	if err := ensureServingCert(certFile, keyFile, time.Now()); err != nil {
		return nil, fmt.Errorf("gateway certificate: %w", err)
	}
	for name, content := range map[string][]byte{devGatewayRoutes: bank.RoutesYAML(), devGatewayOpenAPI: bank.OpenAPI()} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if err := devinfo.WriteFileAtomic(p, content, 0o644); err != nil {
				return nil, err
			}
		}
	}
	routes, err := gateway.LoadRoutes(filepath.Join(dir, devGatewayRoutes))
	if err != nil {
		return nil, err
	}

	roots, err := certPool(srv.CAFile())
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	source := wl.agent.SVIDSource(ids["gateway"])
	svidClient := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return svidCertificate(source) },
	}}}
	issuerClient := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: roots}}}

	verifier, err := authn.New(ctx, authn.Config{Issuer: srv.Issuer(), Audience: devGatewayAudience, HTTPClient: issuerClient,
		Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("gateway token verifier: %w", err)
	}
	decider, err := authz.New(authz.Config{URL: srv.URL(), HTTPClient: svidClient, TrustedKeys: srv.PolicyRepository().PublicKeys(),
		CacheFile: filepath.Join(dir, devGatewayBundle), MaxStaleness: time.Duration(cfg.Gateway.PolicyMaxStaleness), Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("gateway policy client: %w", err)
	}
	goRun("gateway policy client", func() error { return decider.Run(ctx) })
	exchanger, err := gateway.NewExchanger(gateway.ExchangerConfig{TokenURL: srv.Issuer() + identity.PathToken,
		ClientID: devGatewayAudience, Key: key, KeyID: kid, HTTPClient: issuerClient})
	if err != nil {
		return nil, fmt.Errorf("gateway token exchange: %w", err)
	}
	appender, err := audit.NewClient(srv.URL(), svidClient, "")
	if err != nil {
		return nil, err
	}
	// The gateway's metrics are served with the control plane's, at /metrics.
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"component": "gateway"}, srv.Metrics())
	fwd, err := forward.New(forward.Config{SpoolDir: cfg.Gateway.SpoolDir}, forward.Deps{Client: appender, Logger: logger, Metrics: reg})
	if err != nil {
		return nil, fmt.Errorf("gateway audit spool: %w", err)
	}
	goRun("gateway audit forwarder", func() error {
		err := fwd.Run(ctx)
		return errors.Join(err, fwd.Close())
	})
	gw, addr, err := gateway.Start(ctx, gateway.Config{Routes: routes, CertFile: certFile, KeyFile: keyFile}, gateway.Deps{
		Verifier:   verifier,
		Decider:    decider,
		Resolver:   directory.NewResolver(srv.URL(), svidClient, 0),
		Source:     source,
		Exchanger:  exchanger,
		Events:     fwd,
		Logger:     logger,
		Registerer: reg,
		Denied:     wl.agent.IsDenied,
	}, listen)
	if err != nil {
		return nil, err
	}
	goRun("gateway", func() error {
		<-gw.Done()
		return gw.Err()
	})
	return &devGateway{url: "https://" + addr.String(), caFile: certFile}, nil
}

// svidCertificate turns the source's current SVID into a TLS certificate.
func svidCertificate(src mesh.SVIDSource) (*tls.Certificate, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, cert := range svid.Certificates {
		c.Certificate = append(c.Certificate, cert.Raw)
	}
	return c, nil
}

// certPool reads a PEM bundle; "" means the system roots (nil).
func certPool(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	b, err := readBounded(file, 1<<20)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	return pool, nil
}

// ensureGatewayClient makes sure the gateway's OAuth client exists: a
// confidential client authenticating with private_key_jwt (an Ed25519 key
// kept in keyFile), allowed only the token exchange grant, for the demo
// bank's services as audiences. External tokens name it in aud
// ("bank-api"), which is what lets it exchange them.
func ensureGatewayClient(ctx context.Context, id *identity.Server, keyFile string, ids map[string]spiffeid.ID) (crypto.Signer, string, error) {
	key, err := ensureSigningKey(keyFile)
	if err != nil {
		return nil, "", err
	}
	jwk, err := identity.NewClientKey(key.Public(), nil)
	if err != nil {
		return nil, "", err
	}
	var auds []string
	for _, name := range bank.Services {
		auds = append(auds, ids[name].String())
	}
	want := &identity.Client{
		ID:                      devGatewayAudience,
		Name:                    "Bulwark gateway (token exchange)",
		Profile:                 identity.ProfileOAuth2,
		TokenEndpointAuthMethod: identity.AuthPrivateKeyJWT,
		JWKS:                    &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}},
		GrantTypes:              []string{identity.GrantTokenExchange},
		Scopes:                  []string{"openid", "profile", "accounts:read", "payments:write"},
		Audiences:               auds,
	}
	existing, err := id.GetClient(ctx, want.ID)
	switch {
	case errors.Is(err, identity.ErrClientNotFound):
		if err := id.CreateClient(ctx, want); err != nil && !errors.Is(err, identity.ErrClientExists) {
			return nil, "", err
		}
		return key, jwk.KeyID, nil
	case err != nil:
		return nil, "", err
	}
	if existing.JWKS != nil && len(existing.JWKS.Keys) == 1 && existing.JWKS.Keys[0].KeyID == jwk.KeyID &&
		slices.Equal(existing.Audiences, auds) {
		return key, jwk.KeyID, nil
	}
	existing.JWKS, existing.Audiences = want.JWKS, auds
	return key, jwk.KeyID, id.UpdateClient(ctx, existing)
}

// ensureSigningKey loads the PKCS #8 key in file, or creates an Ed25519 one.
func ensureSigningKey(file string) (crypto.Signer, error) {
	if b, err := readBounded(file, 1<<20); err == nil {
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM private key", file)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: not a signing key", file)
		}
		return s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	pemKey, err := privateKeyPEM(key)
	if err != nil {
		return nil, err
	}
	return key, devinfo.WriteFileAtomic(file, pemKey, 0o600)
}

// ensureServingCert keeps a self-signed serving certificate for 127.0.0.1
// and localhost in certFile/keyFile, replacing it when missing, unreadable
// or expiring within a day.
func ensureServingCert(certFile, keyFile string, now time.Time) error {
	if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && c.Leaf != nil && now.Add(24*time.Hour).Before(c.Leaf.NotAfter) {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "Bulwark dev gateway"},
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(devGatewayCertExpiry),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("create serving certificate: %w", err)
	}
	keyPEM, err := privateKeyPEM(key)
	if err != nil {
		return err
	}
	if err := devinfo.WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return devinfo.WriteFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// printWalkthrough ends the banner with the demo bank's walkthrough: log
// in, pay, see the payment in the ledger, and see a call the policy denies
// in the audit trail.
func printWalkthrough(w io.Writer, info devinfo.Info) {
	token := filepath.Join(info.DataDir, "demo-user.token")
	curl := "curl --cacert " + shellQuote(info.GatewayCACertFile) + " --cert " + shellQuote(info.DemoClient.CertificateFile) +
		" --key " + shellQuote(info.DemoClient.PrivateKeyFile) + ` -H "Authorization: Bearer $(cat ` + shellQuote(token) + `)"`
	fmt.Fprintf(w, `
Demo bank (accounts, payments, ledger, notifications behind their agent's mTLS proxy):
  gateway         %s  (certificate %s)
  public API      %s

Walkthrough:
  1. Log in as the demo user (open the URL it prints; the password is in %s):
       go run ./cmd/bulwark login
  2. List your accounts (the first call opens one):
       %s %s/v1/accounts
  3. Pay from it (put its id in ACCOUNT):
       %s -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \
         -d '{"from_account":"'$ACCOUNT'","to_iban":"DE89370400440532013000","amount":1250,"currency":"EUR","reference":"rent"}' \
         %s/v1/payments
  4. See it in the ledger (payments posted it over agent mTLS):
       %s "%s/v1/ledger/entries?account=$ACCOUNT"
  5. Ask for a statement: the notifications service calls the ledger, which the
     bank's policy does not allow, so it fails with 502:
       %s -d '' %s/v1/statements
     and the denied call is in the audit trail:
       go run ./cmd/bulwark audit tail -n 50 | grep 'denied by policy'

Press Ctrl-C to stop.
`, info.GatewayURL, info.GatewayCACertFile, strings.Join(info.DemoAPIPaths, " "), info.DemoUser.PasswordFile,
		curl, info.GatewayURL, curl, info.GatewayURL, curl, info.GatewayURL, curl, info.GatewayURL)
}
