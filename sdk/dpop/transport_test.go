package dpop

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// nonceServer is a server that requires DPoP proofs carrying its current
// nonce, answering like a resource server (401) on GET and like a token
// endpoint (400) on POST.
type nonceServer struct {
	*httptest.Server
	nonce    atomic.Value // string
	requests atomic.Int64
	lastBody atomic.Value // string
}

func newNonceServer(t *testing.T) *nonceServer {
	ns := &nonceServer{}
	ns.nonce.Store("nonce-1")
	ns.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns.requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		ns.lastBody.Store(string(body))
		opts := VerifyOptions{Method: r.Method, URL: "https://" + r.Host + r.URL.Path}
		if scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && scheme == "DPoP" {
			opts.AccessToken = tok
		}
		p, err := Verify(r.Header.Get("DPoP"), opts)
		if err != nil {
			http.Error(w, "bad proof", http.StatusBadRequest)
			return
		}
		nonce := ns.nonce.Load().(string)
		if p.Nonce != nonce {
			w.Header().Set("DPoP-Nonce", nonce)
			if r.Method == http.MethodGet {
				w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"use_dpop_nonce"}`)
			return
		}
		_, _ = io.WriteString(w, "ok "+p.Thumbprint)
	}))
	t.Cleanup(ns.Close)
	return ns
}

func TestTransportRetriesWithNonce(t *testing.T) {
	t.Parallel()
	signer, err := NewSigner(testKeys()["ES256"])
	if err != nil {
		t.Fatal(err)
	}
	ns := newNonceServer(t)
	tr := &Transport{Base: ns.Client().Transport, Signer: signer}
	client := &http.Client{Transport: tr}
	for _, tc := range []struct {
		name         string
		method, body string
		token        string
		rotate       bool // the server changes its nonce first
		wantRequests int64
	}{
		{name: "first GET learns the nonce", method: "GET", wantRequests: 2},
		{name: "second GET reuses it", method: "GET", wantRequests: 1},
		{name: "POST with body after rotation", method: "POST", body: "grant_type=x", rotate: true, wantRequests: 2},
		{name: "GET with a DPoP token", method: "GET", token: "tok-123", wantRequests: 1},
	} {
		if tc.rotate {
			ns.nonce.Store("nonce-" + tc.name)
		}
		before := ns.requests.Load()
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		req, err := http.NewRequestWithContext(context.Background(), tc.method, ns.URL+"/resource?q=1", body)
		if err != nil {
			t.Fatal(err)
		}
		if tc.token != "" {
			req.Header.Set("Authorization", "DPoP "+tc.token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(got) != "ok "+signer.Thumbprint() {
			t.Fatalf("%s: %d %q", tc.name, resp.StatusCode, got)
		}
		if n := ns.requests.Load() - before; n != tc.wantRequests {
			t.Errorf("%s: %d requests, want %d", tc.name, n, tc.wantRequests)
		}
		if tc.body != "" && ns.lastBody.Load() != tc.body {
			t.Errorf("%s: retried body %q", tc.name, ns.lastBody.Load())
		}
		if req.Header.Get("DPoP") != "" {
			t.Errorf("%s: the caller's request was modified", tc.name)
		}
	}
}

func TestTransportRetriesOnlyOnce(t *testing.T) {
	t.Parallel()
	signer, err := NewSigner(testKeys()["EdDSA"])
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := calls.Add(1)
		w.Header().Set("DPoP-Nonce", "n"+strings.Repeat("x", int(n)))
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"use_dpop_nonce"}`)
	}))
	defer srv.Close()
	client := &http.Client{Transport: &Transport{Base: srv.Client().Transport, Signer: signer}}
	resp, err := client.Post(srv.URL+"/token", "application/x-www-form-urlencoded", strings.NewReader("a=b"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if calls.Load() != 2 {
		t.Errorf("%d calls, want 2", calls.Load())
	}
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "use_dpop_nonce") {
		t.Errorf("final answer %d %q, want the server's second error with its body intact", resp.StatusCode, body)
	}
}

func TestTransportAccessTokenSource(t *testing.T) {
	t.Parallel()
	signer, err := NewSigner(testKeys()["EdDSA"])
	if err != nil {
		t.Fatal(err)
	}
	ns := newNonceServer(t)
	ns.nonce.Store("")
	var sawAuth atomic.Value
	tr := &Transport{Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sawAuth.Store(r.Header.Get("Authorization"))
		return ns.Client().Transport.RoundTrip(r)
	}), Signer: signer, AccessToken: func(context.Context) (string, error) { return "tok-9", nil }}
	resp, err := (&http.Client{Transport: tr}).Get(ns.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || sawAuth.Load() != "DPoP tok-9" {
		t.Fatalf("status %d, Authorization %q", resp.StatusCode, sawAuth.Load())
	}

	failing := &Transport{Base: ns.Client().Transport, Signer: signer, AccessToken: func(context.Context) (string, error) {
		return "", errors.New("no token")
	}}
	if _, err := (&http.Client{Transport: failing}).Get(ns.URL + "/x"); err == nil {
		t.Fatal("request sent without a token")
	}
	if _, err := (&http.Client{Transport: &Transport{}}).Get(ns.URL + "/x"); err == nil {
		t.Fatal("transport without a signer sent a request")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
