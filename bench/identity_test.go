package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/identity"
	"github.com/bulwarksec/bulwark/internal/keys"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// tokenClients is the number of concurrent HTTP/1.1 keep-alive clients of
// BenchmarkClientCredentialsPrivateKeyJWT.
const tokenClients = 128

// BenchmarkClientCredentialsPrivateKeyJWT measures client-credentials
// token issuance with private_key_jwt over HTTPS: the identity server on a
// real TLS listener on 127.0.0.1, SQLite in a temporary directory
// (synchronous=FULL), a durable audit log (one event per token), and
// tokenClients keep-alive clients in the same process POSTing assertions
// made before the timer starts (each single-use: the server records every
// jti). One op is one token. Target: at least 5,000 tokens/s on 2 cores.
func BenchmarkClientCredentialsPrivateKeyJWT(b *testing.B) {
	ctx := context.Background()
	db := storetest.Open(b, store.SQLite)
	l := startLog(b, db, audit.Config{}, nil)

	var handler http.Handler = http.NotFoundHandler()
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	b.Cleanup(ts.Close)

	sealer, err := keys.OpenSealed(filepath.Join(b.TempDir(), "keys"))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := identity.New(ctx, identity.DefaultConfig(ts.URL), identity.Deps{DB: db, Sealer: sealer, Audit: l, Metrics: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux, func(next http.Handler) http.Handler { return next })
	handler = httpapi.WithRequestID(mux)

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	const clientID = "bench-service"
	if err := srv.CreateClient(ctx, &identity.Client{
		ID: clientID, Profile: identity.ProfileOAuth2, TokenEndpointAuthMethod: identity.AuthPrivateKeyJWT,
		JWKS:       &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: "k1", Algorithm: "EdDSA", Use: "sig"}}},
		GrantTypes: []string{identity.GrantClientCredentials}, Scopes: []string{"read", "write"}, Audiences: []string{"https://api.bench.test"},
	}); err != nil {
		b.Fatal(err)
	}

	bodies := assertionBodies(b, ts.URL, clientID, priv, b.N)
	tr := ts.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = tokenClients, tokenClients, tokenClients
	hc := &http.Client{Transport: tr}
	tokenURL := ts.URL + identity.PathToken
	// Warm up: one connection per client, the client cache, the signer.
	warm := assertionBodies(b, ts.URL, clientID, priv, tokenClients)
	if _, err := runTokenRequests(hc, tokenURL, warm); err != nil {
		b.Fatal(err)
	}

	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	lat, err := runTokenRequests(hc, tokenURL, bodies)
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := cpuTime() - cpu0
	if err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tokens/s")
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/token")
}

// assertionBodies returns n token-request bodies, each with a fresh client
// assertion valid for a few minutes.
func assertionBodies(tb testing.TB, issuer, clientID string, key ed25519.PrivateKey, n int) []string {
	tb.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	out := make([]string, n)
	for i := range out {
		payload, err := json.Marshal(map[string]any{"iss": clientID, "sub": clientID, "aud": issuer,
			"jti": fmt.Sprintf("bench-%d-%d", now.UnixNano(), i), "iat": now.Unix(), "exp": now.Add(4 * time.Minute).Unix()})
		if err != nil {
			tb.Fatal(err)
		}
		jws, err := signer.Sign(payload)
		if err != nil {
			tb.Fatal(err)
		}
		a, err := jws.CompactSerialize()
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = url.Values{"grant_type": {identity.GrantClientCredentials}, "scope": {"read"},
			"client_assertion_type": {identity.ClientAssertionTypeJWT}, "client_assertion": {a}}.Encode()
	}
	return out
}

// runTokenRequests POSTs every body to tokenURL from tokenClients
// goroutines and returns each request's latency; every response must be a
// token.
func runTokenRequests(hc *http.Client, tokenURL string, bodies []string) ([]time.Duration, error) {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		lat   = make([]time.Duration, 0, len(bodies))
		first error
	)
	for range tokenClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := make([]time.Duration, 0, len(bodies)/tokenClients+1)
			for {
				i := next.Add(1) - 1
				if i >= int64(len(bodies)) {
					break
				}
				t0 := time.Now()
				err := postToken(hc, tokenURL, bodies[i])
				own = append(own, time.Since(t0))
				if err != nil {
					mu.Lock()
					first = cmpOr(first, err)
					mu.Unlock()
					return
				}
			}
			mu.Lock()
			lat = append(lat, own...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lat, first
}

func postToken(hc *http.Client, tokenURL, body string) error {
	resp, err := hc.Post(tokenURL, "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), `"access_token"`) {
		return fmt.Errorf("token request: %d %s", resp.StatusCode, raw)
	}
	return nil
}
