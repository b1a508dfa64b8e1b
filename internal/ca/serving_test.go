package ca_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/keys"
)

func TestLocalServingCertIsTrustedOnlyThroughItsCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ks, err := keys.OpenSealed(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "tls", "ca.pem")
	sc, err := ca.LocalServing(ks, caFile, []string{"127.0.0.1", "localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{sc.Certificate}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()

	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	trusted := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := trusted.Get(srv.URL)
	if err != nil {
		t.Fatalf("client trusting the local CA: %v", err)
	}
	resp.Body.Close()

	// A client with another trust store refuses the certificate.
	untrusted := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}}
	if _, err := untrusted.Get(srv.URL); err == nil {
		t.Fatal("client without the local CA accepted the certificate")
	}

	// A restart reuses the CA: clients keep trusting the server.
	sc2, err := ca.LocalServing(ks, caFile, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !sc2.CA.Equal(sc.CA) {
		t.Fatal("local CA changed across restarts")
	}
	leaf, err := x509.ParseCertificate(sc2.Certificate.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.NotAfter.Sub(leaf.NotBefore) > 8*24*time.Hour || leaf.IsCA {
		t.Fatalf("serving certificate: CA=%v validity %s", leaf.IsCA, leaf.NotAfter.Sub(leaf.NotBefore))
	}
}
