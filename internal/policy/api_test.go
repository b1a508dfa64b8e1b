package policy

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

const testBearer = "bwk_test_credential"

// TestBearerAuth is the admin and pep middleware of the API tests: a fixed
// bearer credential, the caller recorded as the admin "cred_test".
func testBearerAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testBearer {
			httpapi.WriteError(w, r, nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "bad credential"))
			return
		}
		next.ServeHTTP(w, r.WithContext(WithCaller(r.Context(), testAdmin)))
	})
}

// apiEnv is a repository behind a real TLS server.
type apiEnv struct {
	*testRepo
	srv *httptest.Server
}

func startAPI(t *testing.T, db *store.DB) *apiEnv {
	t.Helper()
	r := startRepo(t, db, repoOpts{})
	mux := http.NewServeMux()
	r.Register(mux, testBearerAuth, testBearerAuth)
	srv := httptest.NewTLSServer(httpapi.WithRequestID(mux))
	t.Cleanup(srv.Close)
	return &apiEnv{testRepo: r, srv: srv}
}

// call sends a request and returns the status, headers and body.
func (e *apiEnv) call(t *testing.T, method, path, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testBearer)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
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
	return resp.StatusCode, resp.Header, b
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAPIPolicyVersions(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		e := startAPI(t, db)
		code, hdr, body := e.call(t, "POST", PathVersions, mustJSON(t, PushRequest{Files: map[string]string{"p.cedar": adminsReadRoutes}, Comment: "hi"}))
		var info VersionInfo
		if code != http.StatusCreated || json.Unmarshal(body, &info) != nil || info.Version != 1 || info.Author != "admin:cred_test" ||
			hdr.Get("Location") != PathVersions+"/1" {
			t.Fatalf("push: %d %s", code, body)
		}
		// Invalid: every problem with its position, nothing changes.
		code, _, body = e.call(t, "POST", PathVersions, mustJSON(t, PushRequest{Files: map[string]string{"a.cedar": syntaxError, "b.cedar": typeError}}))
		var eb ErrorBody
		if code != http.StatusBadRequest || json.Unmarshal(body, &eb) != nil || eb.Error.Code != CodeInvalidPolicy || len(eb.Error.Problems) != 2 ||
			eb.Error.RequestID == "" {
			t.Fatalf("invalid push: %d %s", code, body)
		}
		for i, want := range []ProblemJSON{{File: "a.cedar", Line: 2}, {File: "b.cedar", Line: 3, Column: 1}} {
			p := eb.Error.Problems[i]
			if p.File != want.File || p.Line != want.Line || p.Column == 0 || p.Message == "" {
				t.Fatalf("problem %d: %+v", i, p)
			}
		}
		refused := []struct {
			name, method, path, body string
			code                     int
			errCode                  string
			hdr                      []string
		}{
			{"no files", "POST", PathVersions, `{"comment":"x"}`, 400, httpapi.CodeInvalidRequest, nil},
			{"unknown field", "POST", PathVersions, `{"files":{},"admin":true}`, 400, httpapi.CodeInvalidJSON, nil},
			{"not json", "POST", PathVersions, `files=1`, 400, httpapi.CodeInvalidJSON, nil},
			{"too large", "POST", PathVersions, `{"files":{"a.cedar":"` + strings.Repeat("x", MaxPushBytes) + `"}}`, 413, httpapi.CodeTooLarge, nil},
			{"long comment", "POST", PathVersions, `{"files":{},"comment":"` + strings.Repeat("x", MaxCommentLen+1) + `"}`, 400, httpapi.CodeInvalidRequest, nil},
			{"no credential", "POST", PathVersions, `{"files":{}}`, 401, httpapi.CodeUnauthenticated, []string{"Authorization", ""}},
			{"bad version", "GET", "/v1/policy/versions/abc", "", 400, httpapi.CodeInvalidRequest, nil},
			{"missing version", "GET", "/v1/policy/versions/99", "", 404, httpapi.CodeNotFound, nil},
			{"rollback to nothing", "POST", PathRollback, "", 400, httpapi.CodeInvalidRequest, nil},
			{"rollback negative", "POST", PathRollback, `{"to":-1}`, 400, httpapi.CodeInvalidRequest, nil},
		}
		for _, tt := range refused {
			code, _, body := e.call(t, tt.method, tt.path, tt.body, tt.hdr...)
			var eb httpapi.ErrorBody
			if code != tt.code || json.Unmarshal(body, &eb) != nil || eb.Error.Code != tt.errCode {
				t.Errorf("%s: %d %.300s", tt.name, code, body)
			}
		}
		if list, _ := e.Versions(context.Background()); len(list) != 1 {
			t.Fatalf("a refused request made a version: %+v", list)
		}
		if code, _, _ := e.call(t, "POST", PathVersions, mustJSON(t, PushRequest{Files: map[string]string{"p.cedar": usersWriteRoutes}})); code != 201 {
			t.Fatal(code)
		}
		code, _, body = e.call(t, "POST", PathRollback, "")
		if code != http.StatusCreated || json.Unmarshal(body, &info) != nil || info.Version != 3 || info.RollbackOf != 1 {
			t.Fatalf("rollback: %d %s", code, body)
		}
		code, _, body = e.call(t, "POST", PathRollback, `{"to":2}`)
		if code != http.StatusCreated || json.Unmarshal(body, &info) != nil || info.Version != 4 || info.RollbackOf != 2 {
			t.Fatalf("rollback to 2: %d %s", code, body)
		}
		var list VersionList
		if code, _, body := e.call(t, "GET", PathVersions, ""); code != 200 || json.Unmarshal(body, &list) != nil || len(list.Versions) != 4 || !list.Versions[3].Active {
			t.Fatalf("versions: %d %s", code, body)
		}
		var det VersionDetail
		if code, _, body := e.call(t, "GET", "/v1/policy/versions/1", ""); code != 200 || json.Unmarshal(body, &det) != nil || det.Files["p.cedar"] != adminsReadRoutes || det.Active {
			t.Fatalf("version 1: %d %s", code, body)
		}
		if code, _, body := e.call(t, "GET", PathActive, ""); code != 200 || json.Unmarshal(body, &det) != nil || det.Version != 4 || det.Files["p.cedar"] != usersWriteRoutes {
			t.Fatalf("active: %d %s", code, body)
		}
	})
}

func TestAPIEntities(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		e := startAPI(t, db)
		svc := `[{"uid":{"type":"Bulwark::Service","id":"spiffe://bulwark.local/ns/bank/sa/payments"},"parents":[],"attrs":{"namespace":"bank","trustDomain":"bulwark.local"}}]`
		var res EntitiesResult
		if code, _, body := e.call(t, "POST", PathEntities, aliceAdmin); code != 200 || json.Unmarshal(body, &res) != nil || res.EntitiesVersion != 1 || res.BundleVersion != 2 {
			t.Fatalf("post: %d %s", code, body)
		}
		if code, _, body := e.call(t, "POST", PathEntities, svc); code != 200 || json.Unmarshal(body, &res) != nil || res.EntitiesVersion != 2 {
			t.Fatalf("post service: %d %s", code, body)
		}
		code, _, body := e.call(t, "POST", PathEntities, `[{"uid":{"type":"Bulwark::Route","id":"r"},"parents":[],"attrs":{"method":5,"path":"/"}}]`)
		var eb ErrorBody
		if code != 400 || json.Unmarshal(body, &eb) != nil || eb.Error.Code != CodeInvalidEntities || len(eb.Error.Problems) != 1 ||
			!strings.Contains(eb.Error.Problems[0].Message, "Bulwark::Route") {
			t.Fatalf("invalid entities: %d %s", code, body)
		}
		var ents []json.RawMessage
		if code, _, body := e.call(t, "GET", PathEntities, ""); code != 200 || json.Unmarshal(body, &ents) != nil || len(ents) != 3 {
			t.Fatalf("list: %d %s", code, body)
		}
		if code, _, body := e.call(t, "GET", PathEntities+"?type=Role", ""); code != 200 || json.Unmarshal(body, &ents) != nil || len(ents) != 1 {
			t.Fatalf("list roles: %d %s", code, body)
		}
		if code, _, _ := e.call(t, "GET", PathEntities+"?type=%27drop", ""); code != 400 {
			t.Fatalf("bad type filter: %d", code)
		}
		svcPath := PathEntities + "/Service/" + url.PathEscape("spiffe://bulwark.local/ns/bank/sa/payments")
		if code, _, body := e.call(t, "GET", svcPath, ""); code != 200 || !strings.Contains(string(body), `"trustDomain":"bulwark.local"`) {
			t.Fatalf("get service: %d %s", code, body)
		}
		if code, _, body := e.call(t, "GET", PathEntities+"/Bulwark::User/alice", ""); code != 200 || !strings.Contains(string(body), `"alice"`) {
			t.Fatalf("get alice: %d %s", code, body)
		}
		if code, _, _ := e.call(t, "DELETE", svcPath, ""); code != 200 {
			t.Fatalf("delete: %d", code)
		}
		if code, _, _ := e.call(t, "GET", svcPath, ""); code != 404 {
			t.Fatalf("get deleted: %d", code)
		}
		if code, _, _ := e.call(t, "DELETE", svcPath, ""); code != 404 {
			t.Fatalf("delete again: %d", code)
		}
		if code, _, body := e.call(t, "PUT", PathEntities, svc); code != 200 || json.Unmarshal(body, &res) != nil || res.EntitiesVersion != 4 {
			t.Fatalf("replace: %d %s", code, body)
		}
		if code, _, body := e.call(t, "GET", PathEntities, ""); code != 200 || json.Unmarshal(body, &ents) != nil || len(ents) != 1 {
			t.Fatalf("list after replace: %d %s", code, body)
		}
		if code, _, _ := e.call(t, "PUT", PathEntities, svc, "Content-Type", "text/plain"); code != 415 {
			t.Fatalf("text body: %d", code)
		}
		if code, _, _ := e.call(t, "PUT", PathEntities, "["+strings.Repeat(" ", MaxEntitiesBytes)+"]"); code != 413 {
			t.Fatalf("oversized body: %d", code)
		}
	})
}

func TestAPIBundle(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		e := startAPI(t, db)
		// The keys are public.
		code, _, body := e.call(t, "GET", PathBundleKeys, "", "Authorization", "")
		var keys BundleKeys
		if code != 200 || json.Unmarshal(body, &keys) != nil || len(keys.Keys) != 1 {
			t.Fatalf("keys: %d %s", code, body)
		}
		pub, err := base64.RawURLEncoding.DecodeString(keys.Keys[0].PublicKey)
		if err != nil || len(pub) != ed25519.PublicKeySize || authz.KeyID(pub) != keys.Keys[0].KeyID {
			t.Fatalf("key %+v", keys.Keys[0])
		}
		trusted := map[string]ed25519.PublicKey{keys.Keys[0].KeyID: pub}

		if code, _, _ := e.call(t, "GET", PathBundle, "", "Authorization", ""); code != 401 {
			t.Fatalf("bundle without a credential: %d", code)
		}
		code, hdr, body := e.call(t, "GET", PathBundle, "")
		vb, err := authz.VerifyBundle(body, trusted, time.Now(), 0)
		if code != 200 || err != nil || hdr.Get("ETag") != `"1"` || hdr.Get("Cache-Control") != "no-store" || vb.Manifest.Version != 1 {
			t.Fatalf("bundle: %d %v %v", code, hdr, err)
		}
		// A client that has the current bundle: 304 at once, or at the end of the wait.
		if code, hdr, _ := e.call(t, "GET", PathBundle, "", "If-None-Match", `"1"`); code != 304 || hdr.Get("ETag") != `"1"` {
			t.Fatalf("not modified: %d", code)
		}
		start := time.Now()
		if code, _, _ := e.call(t, "GET", PathBundle+"?wait=1s", "", "If-None-Match", `"1"`); code != 304 || time.Since(start) < time.Second {
			t.Fatalf("long poll without change: %d after %s", code, time.Since(start))
		}
		// An older version or an unparsable tag gets the bundle at once.
		for _, tag := range []string{`"0"`, `W/"1"`, `*`, `"x"`} {
			if code, _, _ := e.call(t, "GET", PathBundle+"?wait=30s", "", "If-None-Match", tag); code != 200 {
				t.Fatalf("If-None-Match %s: %d", tag, code)
			}
		}
		for _, w := range []string{"abc", "-1s", "1e9"} {
			if code, _, _ := e.call(t, "GET", PathBundle+"?wait="+w, ""); code != 400 {
				t.Fatalf("wait=%s: %d", w, code)
			}
		}
		// A long poll returns the pushed bundle as soon as it is signed.
		type answer struct {
			code int
			hdr  http.Header
			body []byte
		}
		got := make(chan answer, 1)
		go func() {
			req, _ := http.NewRequest("GET", e.srv.URL+PathBundle+"?wait=60", nil)
			req.Header.Set("Authorization", "Bearer "+testBearer)
			req.Header.Set("If-None-Match", `"1"`)
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				got <- answer{}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			got <- answer{resp.StatusCode, resp.Header, b}
		}()
		// Give the poll a chance to start waiting; it is correct either way.
		time.Sleep(100 * time.Millisecond)
		if _, err := e.Push(context.Background(), map[string]string{"p.cedar": adminsReadRoutes}, "", testAdmin); err != nil {
			t.Fatal(err)
		}
		pushed := time.Now()
		select {
		case a := <-got:
			vb, err := authz.VerifyBundle(a.body, trusted, time.Now(), 0)
			if a.code != 200 || err != nil || vb.Manifest.PolicyVersion != 1 || a.hdr.Get("ETag") != `"`+strconv.FormatInt(vb.Manifest.Version, 10)+`"` {
				t.Fatalf("long poll: %d %v %v", a.code, a.hdr, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the long poll did not return within 5s of the push (%s)", time.Since(pushed))
		}
	})
}

// TestAPITamperedBundleRefused: a byte changed in the served bundle fails
// verification.
func TestAPITamperedBundleRefused(t *testing.T) {
	t.Parallel()
	e := startAPI(t, storetest.Open(t, store.SQLite))
	if _, err := e.Push(context.Background(), map[string]string{"p.cedar": adminsReadRoutes}, "", testAdmin); err != nil {
		t.Fatal(err)
	}
	_, _, body := e.call(t, "GET", PathBundle, "")
	trusted := map[string]ed25519.PublicKey{}
	for _, k := range e.PublicKeys() {
		trusted[authz.KeyID(k)] = k
	}
	i := bytes.Index(body, []byte("Route"))
	tampered := bytes.Clone(body)
	tampered[i] = 'X'
	if _, err := authz.VerifyBundle(tampered, trusted, time.Now(), 0); err == nil {
		t.Fatal("a tampered bundle verified")
	}
}
