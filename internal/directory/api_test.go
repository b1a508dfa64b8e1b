package directory

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/clocktest"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// apiEnv is a directory behind a real TLS server: changes require the
// real admin credential, reads are open (pep: allow).
type apiEnv struct {
	srv    *httptest.Server
	cred   string
	credID string
	log    *audit.Log
}

func newAPIEnv(t *testing.T, db *store.DB) *apiEnv {
	t.Helper()
	ctx := context.Background()
	d, l := newTestDirectory(t, db, &clocktest.Clock{})
	auth, err := adminauth.New(db, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := auth.EnsureCredential(ctx)
	if err != nil || cred == "" {
		t.Fatalf("admin credential: %q, %v", cred, err)
	}
	credID, err := auth.Check(ctx, cred)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	d.Register(mux, auth.Require, func(h http.Handler) http.Handler { return h })
	srv := httptest.NewTLSServer(httpapi.WithRequestID(mux))
	t.Cleanup(srv.Close)
	return &apiEnv{srv: srv, cred: cred, credID: credID, log: l}
}

// call sends a request and returns the status and body.
func (e *apiEnv) call(t *testing.T, method, path, cred, contentType string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func servicePath(id string) string { return PathServices + "/" + url.PathEscape(id) }

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAPI(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		e := newAPIEnv(t, db)
		p := payments()
		const js = "application/json"

		// Create, then replace.
		code, body := e.call(t, http.MethodPut, servicePath(p.ID), e.cred, js, mustJSON(t, p))
		if code != http.StatusCreated {
			t.Fatalf("create: %d %s", code, body)
		}
		p.Owner = "team-core"
		code, body = e.call(t, http.MethodPut, servicePath(p.ID), e.cred, js, mustJSON(t, p))
		if code != http.StatusOK {
			t.Fatalf("replace: %d %s", code, body)
		}
		var got Service
		if err := json.Unmarshal(body, &got); err != nil || got.Owner != "team-core" || got.CreatedAt.IsZero() {
			t.Fatalf("replace answer %s (%v)", body, err)
		}

		// Reads through the pep side, with the escaped ID.
		code, body = e.call(t, http.MethodGet, servicePath(p.ID), "", "", nil)
		if code != http.StatusOK || json.Unmarshal(body, &got) != nil || got.ID != p.ID {
			t.Fatalf("get: %d %s", code, body)
		}
		var list ServiceList
		code, body = e.call(t, http.MethodGet, PathServices, "", "", nil)
		if code != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Services) != 1 {
			t.Fatalf("list: %d %s", code, body)
		}
		code, body = e.call(t, http.MethodGet, PathServices+"?name=payments", "", "", nil)
		if code != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Services) != 1 || list.Services[0].ID != p.ID {
			t.Fatalf("by name: %d %s", code, body)
		}
		code, body = e.call(t, http.MethodGet, PathServices+"?name=nobody", "", "", nil)
		if code != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Services) != 0 {
			t.Fatalf("by unknown name: %d %s", code, body)
		}

		// Refusals.
		big := p
		big.Owner = strings.Repeat("a", MaxServiceBytes)
		other := payments()
		other.ID = "spiffe://bulwark.test/other"
		for _, tc := range []struct {
			name, method, path, cred, ct string
			body                         []byte
			status                       int
			want                         string
		}{
			{"no credential", http.MethodPut, servicePath(p.ID), "", js, mustJSON(t, p), 401, "unauthenticated"},
			{"wrong credential", http.MethodDelete, servicePath(p.ID), e.cred[:len(e.cred)-1] + "B", "", nil, 401, "unauthenticated"},
			{"get unknown", http.MethodGet, servicePath("spiffe://bulwark.test/nobody"), "", "", nil, 404, "not_found"},
			{"delete unknown", http.MethodDelete, servicePath("spiffe://bulwark.test/nobody"), e.cred, "", nil, 404, "not_found"},
			{"bad path id", http.MethodGet, PathServices + "/payments", "", "", nil, 400, `id: must be a SPIFFE ID`},
			{"unescaped id", http.MethodGet, PathServices + "/spiffe://bulwark.test/ns/bank/sa/payments", "", "", nil, 400, "percent-escaped"},
			{"escaped traversal", http.MethodDelete, PathServices + "/spiffe:%2F%2Fbulwark.test%2F..%2Fns", e.cred, "", nil, 400, "id: path must not"},
			{"other trust domain in path", http.MethodGet, servicePath("spiffe://evil.test/payments"), "", "", nil, 400, "id: trust domain"},
			{"path and body differ", http.MethodPut, servicePath(other.ID), e.cred, js, mustJSON(t, p), 400, "id: must equal"},
			{"bad endpoint", http.MethodPut, servicePath(p.ID), e.cred, js,
				[]byte(`{"id":"` + p.ID + `","name":"payments","endpoints":["127.0.0.1:99999"],"owner":"o"}`), 400, "endpoints[0]"},
			{"duplicate name", http.MethodPut, servicePath(other.ID), e.cred, js, mustJSON(t, other), 409, "name:"},
			{"unknown field", http.MethodPut, servicePath(p.ID), e.cred, js, []byte(`{"id":"` + p.ID + `","admin":true}`), 400, "unknown field"},
			{"trailing data", http.MethodPut, servicePath(p.ID), e.cred, js, append(mustJSON(t, p), []byte(" {}")...), 400, "after"},
			{"not JSON", http.MethodPut, servicePath(p.ID), e.cred, "text/plain", mustJSON(t, p), 415, "unsupported_media_type"},
			{"too large", http.MethodPut, servicePath(p.ID), e.cred, js, mustJSON(t, big), 413, "request_too_large"},
			{"unknown query", http.MethodGet, PathServices + "?owner=x", "", "", nil, 400, "unknown query parameter"},
			{"bad name query", http.MethodGet, PathServices + "?name=" + url.QueryEscape("a'b"), "", "", nil, 400, "name:"},
		} {
			code, body := e.call(t, tc.method, tc.path, tc.cred, tc.ct, tc.body)
			if code != tc.status || !strings.Contains(string(body), tc.want) {
				t.Errorf("%s: %d %s, want %d with %q", tc.name, code, body, tc.status, tc.want)
			}
			if strings.Contains(string(body), "sql") || strings.Contains(string(body), "directory_services") {
				t.Errorf("%s: answer leaks internals: %s", tc.name, body)
			}
		}

		// A body over the limit without a Content-Length is cut off too.
		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write([]byte(`{"owner":"`))
			_, _ = pw.Write(bytes.Repeat([]byte("a"), MaxServiceBytes+10))
			_ = pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPut, e.srv.URL+servicePath(p.ID), pr)
		req.Header.Set("Authorization", "Bearer "+e.cred)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("chunked oversized body: %d", resp.StatusCode)
		}

		code, body = e.call(t, http.MethodDelete, servicePath(p.ID), e.cred, "", nil)
		if code != http.StatusNoContent {
			t.Fatalf("delete: %d %s", code, body)
		}

		// Three changes, three events, each by the admin credential.
		evs := serviceEvents(t, e.log)
		acts := []int{actCreate, actUpdate, actDelete}
		if len(evs) != len(acts) {
			t.Fatalf("%d service events, want %d: %+v", len(evs), len(acts), evs)
		}
		for i, ev := range evs {
			if ev.ActivityID != acts[i] || ev.Actor == nil || ev.Actor.User == nil || ev.Actor.User.UID != e.credID ||
				ev.Actor.User.Type != "admin" || ev.Resources[0].UID != p.ID {
				t.Errorf("event %d: %+v actor %+v", i, ev, ev.Actor)
			}
		}
	})
}
