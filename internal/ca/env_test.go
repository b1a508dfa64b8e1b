package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"github.com/bulwarksec/bulwark/internal/clocktest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/keys"
	"github.com/bulwarksec/bulwark/internal/store"
)

// caEnv is an Authority on a real store with a real audit log, a real
// sealed keystore and a settable clock.
type caEnv struct {
	t      testing.TB
	a      *Authority
	db     *store.DB
	audit  *audit.Log
	sealer *keys.Sealed
	clock  *clocktest.Clock
	td     spiffeid.TrustDomain
	cfg    Config
}

func testConfig() Config {
	return Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.test"),
		SVIDTTL:     time.Hour, JWTSVIDTTL: 5 * time.Minute, IntermediateTTL: 720 * time.Hour,
		RotationOverlap: 2 * time.Hour, JoinTokenTTL: 10 * time.Minute,
	}
}

// newCAEnv starts an Authority (with a dev root) on db.
func newCAEnv(t testing.TB, db *store.DB, opts ...func(*Config)) *caEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	env := &caEnv{t: t, db: db, clock: &clocktest.Clock{}, cfg: testConfig()}
	for _, o := range opts {
		o(&env.cfg)
	}
	env.td = env.cfg.TrustDomain
	env.audit = audittest.Start(t, db)
	t.Cleanup(cancel) // before the log stops (cleanups run last-in first-out)
	var err error
	if env.sealer, err = keys.OpenSealed(filepath.Join(t.TempDir(), "keys")); err != nil {
		t.Fatal(err)
	}
	env.a, err = New(ctx, env.cfg, Deps{DB: db, Sealer: env.sealer, RootStore: env.sealer, Audit: env.audit, Now: env.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// events returns every audit event, decoded.
func (env *caEnv) events() []audit.Event {
	env.t.Helper()
	return audittest.Events(env.t, env.audit)
}

// countEvents counts audit events of class and activity with the status.
func (env *caEnv) countEvents(class, activity, status int) int {
	n := 0
	for _, e := range env.events() {
		if e.ClassUID == class && e.ActivityID == activity && e.StatusID == status {
			n++
		}
	}
	return n
}

func (env *caEnv) id(path string) spiffeid.ID {
	env.t.Helper()
	id, err := spiffeid.FromPath(env.td, path)
	if err != nil {
		env.t.Fatal(err)
	}
	return id
}

func newP256(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrFor makes a CSR from tmpl (nil: empty) signed by key.
func csrFor(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// csrWithURI is a CSR of key naming uri.
func csrWithURI(t testing.TB, key crypto.Signer, uri string) []byte {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	return csrFor(t, key, &x509.CertificateRequest{URIs: []*url.URL{u}})
}
