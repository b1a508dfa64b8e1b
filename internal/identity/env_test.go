package identity

import (
	"context"
	"crypto/tls"
	"github.com/bulwarksec/bulwark/internal/clocktest"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/keys"
	"github.com/bulwarksec/bulwark/internal/store"
)

// testEnv is an identity server on a real TLS listener on 127.0.0.1, with
// a real audit log on the test's database. Its TLS listener asks for (but
// does not require) client certificates, like the control plane's.
type testEnv struct {
	t      testing.TB
	srv    *Server
	ts     *httptest.Server
	url    string // the issuer
	db     *store.DB
	audit  *audit.Log
	sealer *keys.Sealed
	clock  *clocktest.Clock
}

// newTestEnv starts an identity server on db. Options adjust the
// configuration before New. Argon2 costs are lowered to keep tests fast.
func newTestEnv(t testing.TB, db *store.DB, opts ...func(*Config)) *testEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	env := &testEnv{t: t, db: db, clock: &clocktest.Clock{}}

	env.audit = audittest.Start(t, db)
	t.Cleanup(cancel) // before the log stops (cleanups run last-in first-out)
	var err error
	if env.sealer, err = keys.OpenSealed(filepath.Join(t.TempDir(), "keys")); err != nil {
		t.Fatal(err)
	}

	handler := http.NotFoundHandler()
	env.ts = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	env.ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	env.ts.StartTLS()
	t.Cleanup(env.ts.Close)
	env.url = env.ts.URL

	cfg := DefaultConfig(env.url)
	cfg.Argon2MemoryKiB, cfg.Argon2Iterations = 1024, 1
	cfg.BackoffBase = 0
	for _, o := range opts {
		o(&cfg)
	}
	env.srv, err = New(ctx, cfg, Deps{DB: db, Sealer: env.sealer, Audit: env.audit, Now: env.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	env.srv.Register(mux, func(next http.Handler) http.Handler { return next })
	handler = httpapi.WithRequestID(mux)
	return env
}

// client returns an HTTP client that trusts the server, optionally
// presenting a client certificate.
func (env *testEnv) client(certs ...tls.Certificate) *http.Client {
	c := env.ts.Client()
	tr := c.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = certs
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// auditEvents returns every event in the audit log, decoded.
func (env *testEnv) auditEvents() []audit.Event {
	env.t.Helper()
	return audittest.Events(env.t, env.audit)
}

// countEvents counts audit events of class and activity with the outcome.
func (env *testEnv) countEvents(class, activity, status int) int {
	n := 0
	for _, e := range env.auditEvents() {
		if e.ClassUID == class && e.ActivityID == activity && e.StatusID == status {
			n++
		}
	}
	return n
}
