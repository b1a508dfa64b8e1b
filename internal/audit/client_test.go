package audit_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// testServer is a log served over HTTPS on 127.0.0.1:0 with the real
// admin authenticator, and a client holding the real credential.
type testServer struct {
	db     *store.DB
	keys   testKeys
	log    *audit.Log
	auth   *adminauth.Authenticator
	srv    *httptest.Server
	cred   string
	client *audit.Client
}

func newTestServer(t testing.TB, db *store.DB, keys testKeys, apiCfg audit.APIConfig) *testServer {
	t.Helper()
	ctx := context.Background()
	l := startLog(t, db, keys, audit.Config{})
	auth, err := adminauth.New(db, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := auth.EnsureCredential(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cred == "" {
		t.Fatal("the store already has an admin credential")
	}
	ts := &testServer{db: db, keys: keys, log: l, auth: auth, cred: cred}
	ts.srv = serveLog(t, l, auth, apiCfg)
	ts.client = newClient(t, ts.srv, cred)
	return ts
}

// serveLog serves l's API over TLS until the test ends.
func serveLog(t testing.TB, l *audit.Log, auth *adminauth.Authenticator, apiCfg audit.APIConfig) *httptest.Server {
	t.Helper()
	api, err := audit.NewAPI(l, apiCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux, auth.Require)
	srv := httptest.NewTLSServer(httpapi.WithRequestID(mux))
	t.Cleanup(srv.Close)
	return srv
}

func newClient(t testing.TB, srv *httptest.Server, cred string) *audit.Client {
	t.Helper()
	c, err := audit.NewClient(srv.URL, srv.Client(), cred)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// appendHTTP appends n events through the API in batches, numbering them
// from first.
// appendAndCheckpoint appends n events over HTTP, from event number first,
// then has the server sign a checkpoint of the result.
func appendAndCheckpoint(t testing.TB, c *audit.Client, first, n int) {
	t.Helper()
	appendHTTP(t, c, first, n)
	if _, err := c.IssueCheckpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func appendHTTP(t testing.TB, c *audit.Client, first, n int) []audit.AppendedEntry {
	t.Helper()
	var out []audit.AppendedEntry
	for done := 0; done < n; {
		k := min(100, n-done)
		evs := make([]*audit.Event, k)
		for i := range evs {
			evs[i] = event(first + done + i)
		}
		resp, err := c.Append(context.Background(), evs)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.Entries...)
		done += k
	}
	return out
}

// logState is what a bad request must not change.
type logState struct {
	size       int64
	root       tlog.Hash
	checkpoint string
}

func snapshot(t testing.TB, l *audit.Log) logState {
	t.Helper()
	ctx := context.Background()
	size, err := l.Size(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root, err := l.TreeHash(ctx, size)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := l.LatestCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return logState{size, root, string(ck.Note)}
}

func TestAPIRejectsBadInput(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		const maxBytes = 16 << 10
		ts := newTestServer(t, db, newKeys(t), audit.APIConfig{MaxBatchEvents: 10, MaxRequestBytes: maxBytes})
		appendHTTP(t, ts.client, 0, 5)
		if _, err := ts.client.IssueCheckpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
		good, err := json.Marshal(event(1))
		if err != nil {
			t.Fatal(err)
		}
		batch := func(events ...string) string { return `{"events":[` + strings.Join(events, ",") + `]}` }
		many := make([]string, 11)
		for i := range many {
			many[i] = string(good)
		}
		// A credential of the right shape whose secret is wrong.
		id, _, _ := strings.Cut(strings.TrimPrefix(ts.cred, adminauth.Prefix), "_")
		wrongSecret := adminauth.Prefix + id + "_" + strings.Repeat("A", 43)
		const (
			credValid = iota
			credNone
			credGarbage
			credWrongSecret
		)
		tests := []struct {
			name     string
			method   string
			path     string
			body     string
			chunked  bool // send without Content-Length
			cred     int
			ctype    string
			wantCode int
			wantErr  string // stable error code; "" for a non-JSON answer
		}{
			{"malformed JSON", "POST", "/v1/audit/events", `{"events":[{`, false, credValid, "", 400, httpapi.CodeInvalidJSON},
			{"not JSON at all", "POST", "/v1/audit/events", `hello`, false, credValid, "", 400, httpapi.CodeInvalidJSON},
			{"empty body", "POST", "/v1/audit/events", ``, false, credValid, "", 400, httpapi.CodeInvalidJSON},
			{"unknown top-level field", "POST", "/v1/audit/events", `{"events":[` + string(good) + `],"x":1}`, false, credValid, "", 400, httpapi.CodeInvalidJSON},
			{"unknown event field", "POST", "/v1/audit/events", batch(strings.Replace(string(good), `{`, `{"colour":"red",`, 1)), false, credValid, "", 400, httpapi.CodeInvalidJSON},
			{"trailing data", "POST", "/v1/audit/events", batch(string(good)) + `{}`, false, credValid, "", 400, httpapi.CodeInvalidJSON},
			{"wrong content type", "POST", "/v1/audit/events", batch(string(good)), false, credValid, "text/plain", 415, httpapi.CodeUnsupportedType},
			{"oversized body", "POST", "/v1/audit/events", batch(string(good)) + strings.Repeat(" ", maxBytes), false, credValid, "", 413, httpapi.CodeTooLarge},
			{"oversized chunked body", "POST", "/v1/audit/events", `{"events":[` + strings.Repeat(string(good)+",", 100) + string(good) + `]}`, true, credValid, "", 413, httpapi.CodeTooLarge},
			{"too many events", "POST", "/v1/audit/events", batch(many...), false, credValid, "", 413, audit.CodeTooManyEvents},
			{"empty batch", "POST", "/v1/audit/events", `{"events":[]}`, false, credValid, "", 400, audit.CodeEmptyBatch},
			{"unknown event class", "POST", "/v1/audit/events", batch(`{"class_uid":9999,"activity_id":1}`, string(good)), false, credValid, "", 400, audit.CodeUnknownClass},
			{"unknown class name", "POST", "/v1/audit/events", batch(`{"class_name":"Coffee Break","activity_id":1}`), false, credValid, "", 400, audit.CodeUnknownClass},
			{"unknown activity", "POST", "/v1/audit/events", batch(string(good), `{"class_name":"Authentication","activity_name":"Dance"}`), false, credValid, "", 400, audit.CodeUnknownActivity},
			{"invalid status", "POST", "/v1/audit/events", batch(`{"class_uid":3002,"activity_id":1,"status_id":7}`), false, credValid, "", 400, audit.CodeInvalidEvent},
			{"client-set payload_ref", "POST", "/v1/audit/events", batch(`{"class_uid":3002,"activity_id":1,"payload_ref":{"sha256":"00","size":1}}`), false, credValid, "", 400, audit.CodeInvalidEvent},
			{"missing credential", "POST", "/v1/audit/events", batch(string(good)), false, credNone, "", 401, httpapi.CodeUnauthenticated},
			{"malformed credential", "POST", "/v1/audit/events", batch(string(good)), false, credGarbage, "", 401, httpapi.CodeUnauthenticated},
			{"wrong secret", "POST", "/v1/audit/events", batch(string(good)), false, credWrongSecret, "", 401, httpapi.CodeUnauthenticated},
			{"entries without credential", "GET", "/v1/audit/entries", "", false, credNone, "", 401, httpapi.CodeUnauthenticated},
			{"checkpoint issue without credential", "POST", "/v1/audit/checkpoint", "", false, credNone, "", 401, httpapi.CodeUnauthenticated},
			{"entry bundle without credential", "GET", "/v1/audit/tile/entries/000.p/5", "", false, credNone, "", 401, httpapi.CodeUnauthenticated},
			{"entries bad limit", "GET", "/v1/audit/entries?start=0&limit=1001", "", false, credValid, "", 400, audit.CodeOutOfRange},
			{"entries negative start", "GET", "/v1/audit/entries?start=-1", "", false, credValid, "", 400, audit.CodeOutOfRange},
			{"entries non-integer", "GET", "/v1/audit/entries?start=abc", "", false, credValid, "", 400, httpapi.CodeInvalidRequest},
			{"inclusion without index", "GET", "/v1/audit/proofs/inclusion", "", false, credNone, "", 400, httpapi.CodeInvalidRequest},
			{"inclusion non-integer", "GET", "/v1/audit/proofs/inclusion?index=1e3", "", false, credNone, "", 400, httpapi.CodeInvalidRequest},
			{"inclusion beyond the tree", "GET", "/v1/audit/proofs/inclusion?index=5", "", false, credNone, "", 400, audit.CodeOutOfRange},
			{"inclusion tree too large", "GET", "/v1/audit/proofs/inclusion?index=0&tree_size=99", "", false, credNone, "", 400, audit.CodeOutOfRange},
			{"inclusion overflow", "GET", "/v1/audit/proofs/inclusion?index=99999999999999999999", "", false, credNone, "", 400, httpapi.CodeInvalidRequest},
			{"consistency missing to", "GET", "/v1/audit/proofs/consistency?from=1", "", false, credNone, "", 400, httpapi.CodeInvalidRequest},
			{"consistency from zero", "GET", "/v1/audit/proofs/consistency?from=0&to=5", "", false, credNone, "", 400, audit.CodeOutOfRange},
			{"consistency backwards", "GET", "/v1/audit/proofs/consistency?from=5&to=2", "", false, credNone, "", 400, audit.CodeOutOfRange},
			{"blob bad hash", "GET", "/v1/audit/blobs/zz", "", false, credValid, "", 404, httpapi.CodeNotFound},
			{"blob unknown", "GET", "/v1/audit/blobs/" + strings.Repeat("ab", 32), "", false, credValid, "", 404, httpapi.CodeNotFound},
			{"tile traversal", "GET", "/v1/audit/tile/..%2f..%2fetc%2fpasswd", "", false, credNone, "", 404, httpapi.CodeNotFound},
			{"tile traversal in path", "GET", "/v1/audit/tile/0/..%2F..%2F..%2Fcheckpoint", "", false, credNone, "", 404, httpapi.CodeNotFound},
			{"tile traversal dot segments", "GET", "/v1/audit/tile/%2e%2e/%2e%2e/etc/passwd", "", false, credNone, "", 404, httpapi.CodeNotFound},
			{"entry bundle traversal", "GET", "/v1/audit/tile/entries/..%2f..%2f000", "", false, credValid, "", 404, httpapi.CodeNotFound},
			{"tile beyond the tree", "GET", "/v1/audit/tile/0/001", "", false, credNone, "", 404, httpapi.CodeNotFound},
			{"tile of another height", "GET", "/v1/audit/tile/9/000", "", false, credNone, "", 404, httpapi.CodeNotFound},
			// ServeMux cleans a raw ../ path with a redirect; following it
			// must not reach anything either.
			{"raw dot-dot path", "GET", "/v1/audit/tile/../../../etc/passwd", "", false, credNone, "", 404, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := snapshot(t, ts.log)
				var body io.Reader
				if tt.body != "" {
					body = strings.NewReader(tt.body)
					if tt.chunked {
						body = io.MultiReader(body) // hides the length: sent chunked
					}
				}
				req, err := http.NewRequest(tt.method, ts.srv.URL+tt.path, body)
				if err != nil {
					t.Fatal(err)
				}
				if tt.body != "" {
					ct := "application/json"
					if tt.ctype != "" {
						ct = tt.ctype
					}
					req.Header.Set("Content-Type", ct)
				}
				switch tt.cred {
				case credValid:
					req.Header.Set("Authorization", "Bearer "+ts.cred)
				case credGarbage:
					req.Header.Set("Authorization", "Bearer hunter2")
				case credWrongSecret:
					req.Header.Set("Authorization", "Bearer "+wrongSecret)
				}
				resp, err := ts.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != tt.wantCode {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantCode, raw)
				}
				if tt.wantErr != "" {
					var eb httpapi.ErrorBody
					if err := json.Unmarshal(raw, &eb); err != nil {
						t.Fatalf("error body %q: %v", raw, err)
					}
					if eb.Error.Code != tt.wantErr {
						t.Fatalf("error code %q, want %q (%s)", eb.Error.Code, tt.wantErr, eb.Error.Message)
					}
					if eb.Error.RequestID == "" || eb.Error.Message == "" {
						t.Fatalf("error body without message or request ID: %s", raw)
					}
				}
				if bytes.Contains(raw, []byte(ts.cred)) || bytes.Contains(raw, []byte(wrongSecret)) {
					t.Fatal("the answer echoes a credential")
				}
				if after := snapshot(t, ts.log); after != before {
					t.Fatalf("the log changed: size %d -> %d", before.size, after.size)
				}
			})
		}
	})
}

func TestClientErrorsAreTyped(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, storetest.Open(t, store.SQLite), newKeys(t), audit.APIConfig{})
	ctx := context.Background()
	wrong := adminauth.Prefix + strings.Repeat("0", 16) + "_" + strings.Repeat("B", 43)
	c := newClient(t, ts.srv, wrong)
	_, err := c.Append(ctx, []*audit.Event{event(1)})
	var apiErr *audit.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("append with a wrong credential: %v", err)
	}
	if apiErr.Status != 401 || apiErr.Code != httpapi.CodeUnauthenticated || apiErr.RequestID == "" || apiErr.Message == "" {
		t.Fatalf("error %+v", apiErr)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(fmt.Sprintf("%+v", apiErr), wrong) {
		t.Fatal("the error holds the credential")
	}
	// Validation errors carry their stable code.
	_, err = ts.client.Append(ctx, []*audit.Event{{ClassUID: 42, ActivityID: 1}})
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || apiErr.Code != audit.CodeUnknownClass {
		t.Fatalf("unknown class: %v", err)
	}
	// A 404 matches ErrNotFound.
	if _, err := ts.client.Blob(ctx, strings.Repeat("cd", 32)); !errors.Is(err, audit.ErrNotFound) {
		t.Fatalf("unknown blob: %v", err)
	}
	if _, err := ts.client.Blob(ctx, "../../checkpoint"); err == nil {
		t.Fatal("a malformed payload hash was requested")
	}
	if _, err := ts.client.Entries(ctx, 0, 1001); err == nil {
		t.Fatal("entries limit beyond the API's was requested")
	}
}

func TestNewClientRefusesUnsafeURLs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url, cred string
		ok        bool
	}{
		{"https://audit.example:8443", "bwk_x", true},
		{"http://127.0.0.1:8080", "bwk_x", true},
		{"http://[::1]:8080", "bwk_x", true},
		{"http://localhost:8080", "bwk_x", true},
		{"http://audit.example", "", true},
		{"http://audit.example", "bwk_x", false},
		{"ftp://audit.example", "", false},
		{"https://user:pw@audit.example", "", false},
		{"https://audit.example/?q=1", "", false},
		{"audit.example", "", false},
		{"https://audit.example", "bwk x", false},
	}
	for _, tt := range tests {
		_, err := audit.NewClient(tt.url, nil, tt.cred)
		if (err == nil) != tt.ok {
			t.Errorf("NewClient(%q): %v, want ok=%v", tt.url, err, tt.ok)
		}
		if err != nil && tt.cred != "" && strings.Contains(err.Error(), tt.cred) {
			t.Errorf("NewClient(%q): the error holds the credential", tt.url)
		}
	}
}

// TestClientBoundsAnswers serves a hostile log: huge or malformed answers
// must be refused, not buffered or trusted.
func TestClientBoundsAnswers(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/audit/checkpoint", func(w http.ResponseWriter, _ *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		for range 4 {
			w.Write(chunk)
		}
	})
	mux.HandleFunc("GET /v1/audit/tile/", func(w http.ResponseWriter, _ *http.Request) {
		w.Write(make([]byte, 100)) // not W*32 bytes
	})
	mux.HandleFunc("GET /v1/audit/proofs/inclusion", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"index":0,"tree_size":2,"proof":["AAAA"]}`)) // a 3-byte hash
	})
	mux.HandleFunc("GET /v1/audit/key", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		w.Write([]byte("\x1b[31mred alert\x1b[0m"))
	})
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	c := newClient(t, srv, "")
	ctx := context.Background()
	if _, err := c.Checkpoint(ctx); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("4 MiB checkpoint: %v", err)
	}
	if _, err := c.Tile(ctx, tlog.Tile{H: 8, L: 0, N: 0, W: 256}); err == nil {
		t.Fatal("short tile accepted")
	}
	if _, err := c.InclusionProof(ctx, 0, 2); err == nil {
		t.Fatal("malformed proof accepted")
	}
	_, err := c.Key(ctx)
	var apiErr *audit.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusTeapot || strings.Contains(err.Error(), "\x1b") {
		t.Fatalf("non-JSON error answer: %q", err)
	}
}

func TestTail(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, storetest.Open(t, store.SQLite), newKeys(t), audit.APIConfig{})
	appendHTTP(t, ts.client, 0, 25)
	ctx := context.Background()

	var got []int64
	err := ts.client.Tail(ctx, 10, false, 0, func(e audit.EntryJSON) error {
		ev, err := audit.DecodeEvent(e.Event)
		if err != nil {
			return err
		}
		if ev.Metadata.UID != fmt.Sprintf("evt-%d", e.Index) {
			return fmt.Errorf("entry %d holds %s", e.Index, ev.Metadata.UID)
		}
		got = append(got, e.Index)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 || got[0] != 15 || got[9] != 24 {
		t.Fatalf("tail -n 10 gave %v", got)
	}

	// Follow: entries appended later arrive, in order, until ctx ends.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		followed []int64
	)
	done := make(chan error, 1)
	go func() {
		done <- ts.client.Tail(fctx, 2, true, 10*time.Millisecond, func(e audit.EntryJSON) error {
			mu.Lock()
			defer mu.Unlock()
			followed = append(followed, e.Index)
			return nil
		})
	}()
	waitFollowed := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(followed)
			mu.Unlock()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("followed %d entries, want %d", n, want)
			}
			select {
			case err := <-done:
				t.Fatalf("tail -f ended early: %v", err)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	waitFollowed(2)
	appendHTTP(t, ts.client, 25, 5)
	waitFollowed(7)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("tail -f: %v", err)
	}
	for i, idx := range followed {
		if idx != int64(23+i) {
			t.Fatalf("tail -f gave %v", followed)
		}
	}

	// A gap in the log is reported, not skipped.
	if _, err := ts.db.ExecContext(ctx, "DELETE FROM audit_entries WHERE idx = ?", 20); err != nil {
		t.Fatal(err)
	}
	err = ts.client.Tail(ctx, 12, false, 0, func(audit.EntryJSON) error { return nil })
	var ee *audit.EntryError
	if !errors.As(err, &ee) || ee.Index != 20 {
		t.Fatalf("tail over a gap: %v", err)
	}
}

func TestNewHTTPClientTrustsOnlyTheGivenCA(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok"))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	hc, err := audit.NewHTTPClient(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatalf("with the server's CA: %v", err)
	}
	resp.Body.Close()

	other, err := audit.NewHTTPClient(selfSignedPEM(t))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := other.Get(srv.URL); err == nil {
		resp.Body.Close()
		t.Fatal("a client trusting another CA connected")
	}
	if _, err := audit.NewHTTPClient([]byte("not a certificate")); err == nil {
		t.Fatal("garbage CA file accepted")
	}
}

func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
