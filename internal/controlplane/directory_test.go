package controlplane_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/config"
)

// TestServiceDirectoryIsServed: the admin registers a service; an agent,
// authenticated by its X.509-SVID, resolves it by name; a forged SVID is
// refused.
func TestServiceDirectoryIsServed(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	srv, client := start(t, cfg)
	const ledger = "spiffe://bulwark.local/ns/bank/sa/ledger"
	admin := adminCaller(t, srv, client)
	if st, body := admin(http.MethodPut, "/v1/services/"+url.PathEscape(ledger), map[string]any{
		"id": ledger, "name": "ledger", "endpoints": []string{"127.0.0.1:9003"}, "owner": "team-ledger",
		"data_classes": []string{"confidential"}, "region": "eu",
	}); st != http.StatusCreated {
		t.Fatalf("register: %d %s", st, body)
	}
	get := func(cert tls.Certificate) (int, []byte) {
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: servingRoots(t, srv), Certificates: []tls.Certificate{cert}}}}
		resp, err := hc.Get(srv.URL() + "/v1/services?name=ledger")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	st, body := get(svidTLS(t, srv, "spiffe://bulwark.local/ns/bank/sa/payments"))
	if st != http.StatusOK || !strings.Contains(string(body), "127.0.0.1:9003") {
		t.Fatalf("agent lookup: %d %s", st, body)
	}
	var list map[string]any
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("lookup answer: %v", err)
	}
	if st, _ := get(forgedSVID(t, "spiffe://bulwark.local/ns/bank/sa/payments")); st != http.StatusUnauthorized {
		t.Fatalf("forged SVID: %d, want 401", st)
	}
}
