package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/policy"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// fixedSource serves one policy snapshot.
type fixedSource struct{ snap *policy.Snapshot }

func (s fixedSource) Snapshot() *policy.Snapshot { return s.snap }

// authzenParallelism is goroutines per GOMAXPROCS driving the server: the
// enforcement points of a busy mesh, each with a request in flight.
const authzenParallelism = 64

// authzenRequest is an AuthZEN evaluation request of decisionMix case c,
// as a JSON object.
func authzenRequest(c decisionCase) map[string]any {
	ctx := map[string]any{"time": map[string]any{"epoch": 1795000000, "hour": 10}, "zone": "internal",
		"region": "eu", "mfa": c.mfa, "riskScore": 10}
	if c.amount != 0 {
		ctx["amount"] = c.amount
	}
	return map[string]any{
		"subject":  map[string]string{"type": c.principalType, "id": c.principal},
		"action":   map[string]string{"name": c.action},
		"resource": map[string]string{"type": c.resourceType, "id": c.resource},
		"context":  ctx,
	}
}

// authzenDecisions decodes a response into its decisions.
func authzenDecisions(raw []byte) ([]bool, error) {
	var out struct {
		Decision    *bool `json:"decision"`
		Evaluations []struct {
			Decision bool `json:"decision"`
		} `json:"evaluations"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	if out.Decision != nil {
		return []bool{*out.Decision}, nil
	}
	ds := make([]bool, len(out.Evaluations))
	for i, e := range out.Evaluations {
		ds[i] = e.Decision
	}
	return ds, nil
}

// BenchmarkAuthZENHTTP measures AuthZEN decisions per second over HTTPS
// (HTTP/1.1 keep-alive, one shared client, authzenParallelism concurrent
// enforcement points per CPU) with decision logging on: every decision is
// fsynced to the spool before it is answered, and shipped to a real audit
// log on SQLite while the benchmark runs. "single" sends one evaluation
// per request (the headline figure); "batch=10" sends ten per request to
// /access/v1/evaluations.
func BenchmarkAuthZENHTTP(b *testing.B) {
	b.Run("single", func(b *testing.B) {
		var bodies [][]byte
		var want [][]bool
		for _, c := range decisionMix {
			body, err := json.Marshal(authzenRequest(c))
			if err != nil {
				b.Fatal(err)
			}
			bodies, want = append(bodies, body), append(want, []bool{c.want})
		}
		benchAuthZEN(b, policy.AuthZENEvaluationPath, bodies, want)
	})
	b.Run("batch=10", func(b *testing.B) {
		var evals []map[string]any
		var w []bool
		for i := range 10 {
			c := decisionMix[i%len(decisionMix)]
			evals, w = append(evals, authzenRequest(c)), append(w, c.want)
		}
		body, err := json.Marshal(map[string]any{"evaluations": evals})
		if err != nil {
			b.Fatal(err)
		}
		benchAuthZEN(b, policy.AuthZENEvaluationsPath, [][]byte{body}, [][]bool{w})
	})
}

func benchAuthZEN(b *testing.B, path string, bodies [][]byte, want [][]bool) {
	ev := loadBankEvaluator(b)
	al := audittest.Start(b, storetest.Open(b, store.SQLite))
	reg := prometheus.NewRegistry()
	svc, err := policy.NewDecisionService(policy.DecisionConfig{SpoolDir: b.TempDir()},
		policy.DecisionDeps{Source: fixedSource{snap: &policy.Snapshot{BundleVersion: 1, PolicyVersion: 1, Evaluator: ev}},
			Audit: al, Metrics: reg})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	pep := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r.WithContext(policy.WithCaller(r.Context(),
				policy.Caller{Kind: "workload", ID: "spiffe://bulwark.local/ns/bank/sa/gateway"})))
		})
	}
	mux := http.NewServeMux()
	svc.RegisterAuthZEN(mux, pep)
	srv := httptest.NewUnstartedServer(mux)
	// An ECDSA P-256 certificate, as Bulwark's own are, so that opening
	// the connections is cheap (httptest's default is RSA).
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ecdsaCert(b)}, MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.TLS.Certificates[0].Leaf)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13},
		MaxIdleConnsPerHost: 4096,
	}}
	defer client.CloseIdleConnections()
	url := srv.URL + path

	post := func(body []byte) ([]bool, error) {
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("status %d: %s", resp.StatusCode, raw)
		}
		return authzenDecisions(raw)
	}
	// Check the answers, then open every connection before the clock starts.
	for i, body := range bodies {
		got, err := post(body)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want[i]) {
			b.Fatalf("request %d: decisions %v (%v), want %v", i, got, err, want[i])
		}
	}
	warm := make(chan error, runtime.GOMAXPROCS(0)*authzenParallelism)
	for range cap(warm) {
		go func() { _, err := post(bodies[0]); warm <- err }()
	}
	for range cap(warm) {
		if err := <-warm; err != nil {
			b.Fatal(err)
		}
	}
	commits0, records0 := spoolCommits(b, reg)

	b.SetParallelism(authzenParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := post(bodies[i%len(bodies)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	commits, records := spoolCommits(b, reg)
	b.ReportMetric(float64(b.N*len(want[0]))/elapsed.Seconds(), "decisions/s")
	if commits > commits0 {
		b.ReportMetric((records-records0)/(commits-commits0), "decisions/fsync")
	}
}

// spoolCommits reads the decision log's group-commit histogram: commits
// and the records they held.
func spoolCommits(b *testing.B, reg *prometheus.Registry) (commits, records float64) {
	b.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "bulwark_policy_decision_log_commit_records" {
			h := mf.GetMetric()[0].GetHistogram()
			return float64(h.GetSampleCount()), h.GetSampleSum()
		}
	}
	return 0, 0
}

// ecdsaCert is a self-signed P-256 certificate for 127.0.0.1.
func ecdsaCert(b *testing.B) tls.Certificate {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "authzen bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
