package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"github.com/bulwarksec/bulwark/internal/clocktest"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/ca/caclient"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/keys"
	"github.com/bulwarksec/bulwark/internal/store"
)

// apiEnv is an Authority with its HTTP API on a real TLS listener on
// 127.0.0.1 that requests (but does not require) client certificates,
// like the control plane's, with a real audit log on the test's database.
type apiEnv struct {
	t     *testing.T
	a     *ca.Authority
	ts    *httptest.Server
	audit *audit.Log
	clock *clocktest.Clock
	td    spiffeid.TrustDomain
	pool  *x509.CertPool
}

func newAPIEnv(t *testing.T, db *store.DB) *apiEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	env := &apiEnv{t: t, clock: &clocktest.Clock{}, td: spiffeid.RequireTrustDomainFromString("example.test")}
	env.audit = audittest.Start(t, db)
	t.Cleanup(cancel) // before the log stops (cleanups run last-in first-out)
	var err error
	sealer, err := keys.OpenSealed(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := ca.Config{TrustDomain: env.td, SVIDTTL: time.Hour, JWTSVIDTTL: 5 * time.Minute, IntermediateTTL: 720 * time.Hour,
		RotationOverlap: 2 * time.Hour, JoinTokenTTL: 10 * time.Minute}
	env.a, err = ca.New(ctx, cfg, ca.Deps{DB: db, Sealer: sealer, RootStore: sealer, Audit: env.audit, Now: env.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	ca.NewAPI(env.a, nil).Register(mux, func(next http.Handler) http.Handler { return next })
	env.ts = httptest.NewUnstartedServer(httpapi.WithRequestID(mux))
	env.ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	env.ts.StartTLS()
	t.Cleanup(env.ts.Close)
	env.pool = x509.NewCertPool()
	env.pool.AddCert(env.ts.Certificate())
	return env
}

// client is a CA API client without a client certificate.
func (env *apiEnv) client() *caclient.Client { return caclient.New(env.ts.URL, env.pool) }

// admin calls an admin endpoint and decodes the answer into out; it
// returns the status.
func (env *apiEnv) admin(method, path string, in, out any) int {
	env.t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			env.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, env.ts.URL+path, body)
	if err != nil {
		env.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := env.ts.Client().Do(req)
	if err != nil {
		env.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			env.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	if eb, ok := out.(*httpapi.ErrorBody); ok && resp.StatusCode >= 300 {
		_ = json.Unmarshal(raw, eb)
	}
	return resp.StatusCode
}

// joinToken creates a join token for agent name.
func (env *apiEnv) joinToken(name string) string {
	env.t.Helper()
	var ans ca.JoinTokenAnswer
	if st := env.admin(http.MethodPost, ca.PathJoinTokens, ca.JoinTokenRequest{Agent: name}, &ans); st != http.StatusCreated {
		env.t.Fatalf("create join token: %d", st)
	}
	return ans.Token
}

// agent joins as name and returns a client presenting the agent's SVID.
func (env *apiEnv) agent(name string) (*caclient.Client, spiffeid.ID, tls.Certificate) {
	env.t.Helper()
	key := newKey(env.t)
	res, err := env.client().Join(context.Background(), env.joinToken(name), newCSR(env.t, key, nil))
	if err != nil {
		env.t.Fatalf("join %s: %v", name, err)
	}
	cert := tlsCert(res.SVID, key)
	return env.client().WithCertificate(cert), res.ID, cert
}

// createEntry registers an entry and returns it.
func (env *apiEnv) createEntry(id, parent string, selectors ...string) ca.EntryJSON {
	env.t.Helper()
	var e ca.EntryJSON
	if st := env.admin(http.MethodPost, ca.PathEntries, ca.CreateEntryRequest{SPIFFEID: id, ParentID: parent, Selectors: selectors}, &e); st != http.StatusCreated {
		env.t.Fatalf("create entry %s: %d", id, st)
	}
	return e
}

// lastEvent returns the last event of the audit log.
func (env *apiEnv) lastEvent() audit.Event {
	env.t.Helper()
	events := env.events()
	if len(events) == 0 {
		env.t.Fatal("the audit log is empty")
	}
	return events[len(events)-1]
}

// countEvents counts audit events of class with the outcome.
func (env *apiEnv) countEvents(class, status int) int {
	env.t.Helper()
	n := 0
	for _, ev := range env.events() {
		if ev.ClassUID == class && ev.StatusID == status {
			n++
		}
	}
	return n
}

// events returns every event of the audit log, decoded.
func (env *apiEnv) events() []audit.Event {
	env.t.Helper()
	return audittest.Events(env.t, env.audit)
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newCSR returns a CSR for key, with uri as its URI SAN when not nil.
func newCSR(t testing.TB, key crypto.Signer, uri *url.URL) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	if uri != nil {
		tmpl.URIs = []*url.URL{uri}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func tlsCert(chain []*x509.Certificate, key crypto.Signer) tls.Certificate {
	c := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}
