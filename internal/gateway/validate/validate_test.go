package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

const validPayment = `{ "amount": 1250,
  "currency": "EUR", "to": "DE89370400440532013000" }`

func loadSpec(t testing.TB) []byte {
	t.Helper()
	spec, err := os.ReadFile("testdata/payments.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func newValidator(t testing.TB, cfg Config) *Validator {
	t.Helper()
	if cfg.Spec == nil {
		cfg.Spec = loadSpec(t)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

// upstream records what reached it.
type upstream struct {
	mu      sync.Mutex
	hits    int
	body    []byte
	header  http.Header
	refused []*Error
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.hits++
	u.body, u.header = b, r.Header.Clone()
	u.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (u *upstream) onRefused(_ *http.Request, err *Error) {
	u.mu.Lock()
	u.refused = append(u.refused, err)
	u.mu.Unlock()
}

// startGateway serves the middleware in front of a recording upstream on a
// real 127.0.0.1 listener.
func startGateway(t *testing.T, cfg Config) (*httptest.Server, *upstream) {
	t.Helper()
	up := &upstream{}
	srv := httptest.NewServer(Middleware(newValidator(t, cfg), up.onRefused)(up))
	t.Cleanup(srv.Close)
	return srv, up
}

type response struct {
	status int
	body   httpapi.ErrorBody
	raw    string
}

func do(t *testing.T, srv *httptest.Server, method, target, contentType, body string, hdr http.Header) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+target, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, raw: string(raw)}
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			t.Fatalf("error body is not JSON: %q", raw)
		}
	}
	return out
}

func TestCheckAttacks(t *testing.T) {
	srv, up := startGateway(t, Config{})
	deep := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)
	tests := []struct {
		name, method, target, ct, body string
		hdr                            http.Header
		status                         int
		code                           string
		msg                            string // must appear in the message
	}{
		{"valid payment", "POST", "/payments", "application/json", validPayment, nil, 200, "", ""},
		{"valid payment with charset", "POST", "/payments?dry_run=true", "application/json; charset=utf-8", validPayment, nil, 200, "", ""},
		{"valid account", "GET", "/accounts/acc_1234", "", "", nil, 200, "", ""},
		{"unknown path", "GET", "/admin/users", "", "", nil, 404, httpapi.CodeNotFound, ""},
		{"unknown sub path", "GET", "/accounts/acc_1234/secrets", "", "", nil, 404, httpapi.CodeNotFound, ""},
		{"wrong method", "DELETE", "/payments", "", "", nil, 405, CodeMethodNotAllowed, "DELETE"},
		{"method override header is no way around 405", "PUT", "/accounts/acc_1234", "", "", http.Header{"X-Http-Method-Override": {"GET"}}, 405, CodeMethodNotAllowed, ""},
		{"missing field", "POST", "/payments", "application/json", `{"amount":5,"currency":"EUR"}`, nil, 400, httpapi.CodeInvalidRequest, `"/to" is required`},
		{"extra field", "POST", "/payments", "application/json", `{"amount":5,"currency":"EUR","to":"x","admin":true}`, nil, 400, httpapi.CodeInvalidRequest, `"/admin" is not allowed`},
		{"amount zero", "POST", "/payments", "application/json", `{"amount":0,"currency":"EUR","to":"x"}`, nil, 400, httpapi.CodeInvalidRequest, `"/amount"`},
		{"amount negative", "POST", "/payments", "application/json", `{"amount":-100,"currency":"EUR","to":"x"}`, nil, 400, httpapi.CodeInvalidRequest, `"/amount"`},
		{"amount fraction", "POST", "/payments", "application/json", `{"amount":1.5,"currency":"EUR","to":"x"}`, nil, 400, httpapi.CodeInvalidRequest, `"/amount"`},
		{"amount as string", "POST", "/payments", "application/json", `{"amount":"100","currency":"EUR","to":"x"}`, nil, 400, httpapi.CodeInvalidRequest, `"/amount"`},
		{"currency pattern", "POST", "/payments", "application/json", `{"amount":5,"currency":"eur","to":"x"}`, nil, 400, httpapi.CodeInvalidRequest, `"/currency" is invalid (pattern)`},
		{"currency injection", "POST", "/payments", "application/json", `{"amount":5,"currency":"EUR' OR 1=1--","to":"x"}`, nil, 400, httpapi.CodeInvalidRequest, `"/currency"`},
		{"to too long", "POST", "/payments", "application/json", `{"amount":5,"currency":"EUR","to":"` + strings.Repeat("A", 35) + `"}`, nil, 400, httpapi.CodeInvalidRequest, `"/to"`},
		{"body not an object", "POST", "/payments", "application/json", `[1,2,3]`, nil, 400, httpapi.CodeInvalidRequest, ""},
		{"bad path parameter", "GET", "/accounts/..%3B", "", "", nil, 400, httpapi.CodeInvalidRequest, `"id"`},
		{"path parameter injection", "GET", "/accounts/acc_1234'--", "", "", nil, 400, httpapi.CodeInvalidRequest, `"id"`},
		{"dot segments", "GET", "/payments/../accounts/acc_1234", "", "", nil, 400, httpapi.CodeInvalidRequest, "canonical"},
		{"double slash", "GET", "//accounts/acc_1234", "", "", nil, 400, httpapi.CodeInvalidRequest, "canonical"},
		{"encoded slash", "GET", "/accounts/acc_1234%2F..%2Fadmin", "", "", nil, 400, httpapi.CodeInvalidRequest, "canonical"},
		{"unknown query parameter", "GET", "/accounts/acc_1234?debug=1", "", "", nil, 400, httpapi.CodeInvalidRequest, `"debug"`},
		{"parameter pollution", "POST", "/payments?dry_run=true&dry_run=false", "application/json", validPayment, nil, 400, httpapi.CodeInvalidRequest, `"dry_run"`},
		{"bad query type", "POST", "/payments?dry_run=maybe", "application/json", validPayment, nil, 400, httpapi.CodeInvalidRequest, `"dry_run"`},
		{"semicolon query", "GET", "/accounts/acc_1234?a=1;b=2", "", "", nil, 400, httpapi.CodeInvalidRequest, "query"},
		{"body on GET", "GET", "/accounts/acc_1234", "application/json", `{"a":1}`, nil, 400, httpapi.CodeInvalidRequest, "no request body"},
		{"missing body", "POST", "/payments", "application/json", "", nil, 400, httpapi.CodeInvalidRequest, "required"},
		{"wrong content type", "POST", "/payments", "text/plain", validPayment, nil, 415, httpapi.CodeUnsupportedType, ""},
		{"form content type", "POST", "/payments", "application/x-www-form-urlencoded", "amount=5", nil, 415, httpapi.CodeUnsupportedType, ""},
		{"YAML body refused even when declared", "POST", "/payments", "application/yaml", "a: &a [1,1]\nb: &b [*a,*a]\n", nil, 415, httpapi.CodeUnsupportedType, "YAML"},
		{"no content type", "POST", "/payments", "", validPayment, nil, 415, httpapi.CodeUnsupportedType, ""},
		{"two content types", "POST", "/payments", "application/json", validPayment, http.Header{"Content-Type": {"application/json", "text/plain"}}, 415, httpapi.CodeUnsupportedType, ""},
		{"duplicate key", "POST", "/payments", "application/json", `{"amount":5,"currency":"EUR","to":"x","amount":-5}`, nil, 400, CodeDuplicateKey, `"amount"`},
		{"duplicate key by case", "POST", "/payments", "application/json", `{"amount":5,"currency":"EUR","to":"x","AMOUNT":-5}`, nil, 400, CodeDuplicateKey, `"AMOUNT"`},
		{"duplicate key by escape", "POST", "/payments", "application/json", `{"amount":5,"currency":"EUR","to":"x","\u0061mount":-5}`, nil, 400, CodeDuplicateKey, `"amount"`},
		{"duplicate key nested", "POST", "/payments", "application/json", `{"amount":5,"currency":"EUR","to":"x","memo":{"k":1,"k":2}}`, nil, 400, CodeDuplicateKey, `"k"`},
		{"deep JSON", "POST", "/payments", "application/json", deep, nil, 400, CodeJSONTooDeep, "32"},
		{"trailing value", "POST", "/payments", "application/json", validPayment + `{"amount":-1}`, nil, 400, httpapi.CodeInvalidJSON, ""},
		{"invalid JSON", "POST", "/payments", "application/json", `{"amount":5,`, nil, 400, httpapi.CodeInvalidJSON, ""},
		{"too many headers", "GET", "/accounts/acc_1234", "", "", manyHeaders(101, 1), 431, CodeHeadersTooLarge, ""},
		{"too large headers", "GET", "/accounts/acc_1234", "", "", http.Header{"X-Junk": {strings.Repeat("a", 17<<10)}}, 431, CodeHeadersTooLarge, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up.mu.Lock()
			hitsBefore := up.hits
			up.mu.Unlock()
			got := do(t, srv, tc.method, tc.target, tc.ct, tc.body, tc.hdr)
			if got.status != tc.status {
				t.Fatalf("status = %d, want %d; body %s", got.status, tc.status, got.raw)
			}
			up.mu.Lock()
			reached := up.hits > hitsBefore
			upBody := string(up.body)
			up.mu.Unlock()
			if tc.status == http.StatusOK {
				if !reached {
					t.Fatal("valid request did not reach the upstream")
				}
				if upBody != tc.body {
					t.Fatalf("upstream body = %q, want the exact bytes %q", upBody, tc.body)
				}
				return
			}
			if reached {
				t.Fatal("refused request reached the upstream")
			}
			if got.body.Error.Code != tc.code {
				t.Errorf("code = %q, want %q", got.body.Error.Code, tc.code)
			}
			if !strings.Contains(got.body.Error.Message, tc.msg) {
				t.Errorf("message %q does not name %s", got.body.Error.Message, tc.msg)
			}
			assertNoLeak(t, got.raw)
		})
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if want := len(tests) - 3; len(up.refused) != want {
		t.Errorf("onRefused called %d times, want %d", len(up.refused), want)
	}
}

// assertNoLeak checks that a refusal carries none of the validator's
// internals and none of the attacker's values.
func assertNoLeak(t *testing.T, raw string) {
	t.Helper()
	for _, s := range []string{"kin", "openapi3", "Error at", "Schema:", "Value:", "doesn't match", "OR 1=1", "DE8937", "goroutine", ".go:"} {
		if strings.Contains(raw, s) {
			t.Errorf("refusal leaks %q: %s", s, raw)
		}
	}
}

func manyHeaders(n, size int) http.Header {
	h := http.Header{}
	for i := range n {
		h.Set("X-H"+strings.Repeat("a", i%7)+string(rune('a'+i%26))+string(rune('a'+i/26)), strings.Repeat("v", size))
	}
	return h
}

// countingReader serves n bytes of '{' and counts what was read.
type countingReader struct {
	left, read int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), c.left)
	for i := range n {
		p[i] = ' '
	}
	c.left -= n
	c.read += n
	return int(n), nil
}

func TestBodyLimit(t *testing.T) {
	const limit = 1024
	v := newValidator(t, Config{MaxBodyBytes: limit})
	tests := []struct {
		name          string
		size          int64
		contentLength int64
		status        int
	}{
		{"at limit is read", limit, -1, http.StatusBadRequest}, // spaces only: invalid JSON, not too large
		{"one over, length unknown", limit + 1, -1, http.StatusRequestEntityTooLarge},
		{"ten MiB, length unknown", 10 << 20, -1, http.StatusRequestEntityTooLarge},
		{"declared too large, nothing read", 10 << 20, 10 << 20, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := &countingReader{left: tc.size}
			req := httptest.NewRequest("POST", "/payments", io.NopCloser(body))
			req.ContentLength = tc.contentLength
			req.Header.Set("Content-Type", "application/json")
			_, err := v.Check(req)
			var ve *Error
			if !errors.As(err, &ve) || ve.Status != tc.status {
				t.Fatalf("err = %v, want status %d", err, tc.status)
			}
			if body.read > limit+1 {
				t.Errorf("read %d bytes, want at most %d", body.read, limit+1)
			}
			if tc.contentLength > limit && body.read != 0 {
				t.Errorf("read %d bytes of a body declared too large", body.read)
			}
		})
	}

	srv, up := startGateway(t, Config{MaxBodyBytes: limit})
	got := do(t, srv, "POST", "/payments", "application/json", `{"to":"`+strings.Repeat("x", 2*limit)+`"}`, nil)
	if got.status != http.StatusRequestEntityTooLarge || got.body.Error.Code != httpapi.CodeTooLarge {
		t.Fatalf("over the wire: %d %s", got.status, got.raw)
	}
	if up.hits != 0 {
		t.Fatal("oversized body reached the upstream")
	}
}

func TestDeepJSONIsIterative(t *testing.T) {
	// A million levels would exhaust a recursive parser's stack; the
	// tokenizer refuses at MaxJSONDepth+1 having looked at that many tokens.
	for _, depth := range []int{33, 10_000, 1_000_000} {
		body := []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
		e := scanJSON(body, DefaultMaxJSONDepth)
		if e == nil || e.Code != CodeJSONTooDeep {
			t.Fatalf("depth %d: %v, want %s", depth, e, CodeJSONTooDeep)
		}
	}
	if e := scanJSON([]byte(strings.Repeat("[", 32)+strings.Repeat("]", 32)), DefaultMaxJSONDepth); e != nil {
		t.Fatalf("depth 32 refused: %v", e)
	}
}

func TestScanJSON(t *testing.T) {
	tests := []struct {
		body string
		code string // "" = accepted
	}{
		{`{}`, ""},
		{`[]`, ""},
		{`"s"`, ""},
		{`1`, ""},
		{`{"a":[{"a":1},{"a":2}],"b":{"a":{"a":null}}}`, ""}, // same key in different objects
		{`[{"a":1,"b":2},{"a":1,"b":2}]`, ""},
		{`{"a":1,"a":1}`, CodeDuplicateKey},
		{`{"a":{"b":[1,{"c":1,"c":2}]}}`, CodeDuplicateKey},
		{`{"K":1,"\u212a":2}`, CodeDuplicateKey}, // Kelvin sign folds to k
		{``, httpapi.CodeInvalidJSON},
		{`{"a":1}}`, httpapi.CodeInvalidJSON},
		{`{"a":1} {"a":2}`, httpapi.CodeInvalidJSON},
		{`1 2`, httpapi.CodeInvalidJSON},
		{`{"a" 1}`, httpapi.CodeInvalidJSON},
		{`{1:1}`, httpapi.CodeInvalidJSON},
		{`[1,]`, httpapi.CodeInvalidJSON},
		{`{"a":1,}`, httpapi.CodeInvalidJSON},
		{`{"a":}`, httpapi.CodeInvalidJSON},
	}
	for _, tc := range tests {
		e := scanJSON([]byte(tc.body), 8)
		got := ""
		if e != nil {
			got = e.Code
		}
		if got != tc.code {
			t.Errorf("scanJSON(%s) = %q, want %q", tc.body, got, tc.code)
		}
	}
}

func TestNewConfig(t *testing.T) {
	// A $ref to a URL must never be fetched: the spec is loaded with
	// external references disabled.
	var fetched sync.Mutex
	fetchedCount := 0
	refSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetched.Lock()
		fetchedCount++
		fetched.Unlock()
		_, _ = w.Write([]byte(`{"type":"string"}`))
	}))
	defer refSrv.Close()
	externalRef := strings.Replace(string(loadSpec(t)), "type: boolean", "$ref: '"+refSrv.URL+"/schema.json'", 1)
	fileRef := strings.Replace(string(loadSpec(t)), "type: boolean", "$ref: 'payments.yaml#/info'", 1)

	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"valid", Config{Spec: loadSpec(t)}, true},
		{"empty spec", Config{}, false},
		{"negative limit", Config{Spec: loadSpec(t), MaxBodyBytes: -1}, false},
		{"not a document", Config{Spec: []byte("hello: [")}, false},
		{"invalid document", Config{Spec: []byte(`{"openapi":"3.0.3","paths":{}}`)}, false},
		{"external URL ref", Config{Spec: []byte(externalRef)}, false},
		{"external file ref", Config{Spec: []byte(fileRef)}, false},
		{"json 3.1", Config{Spec: []byte(`{"openapi":"3.1.0","info":{"title":"t","version":"1"},"paths":{"/x":{"get":{"responses":{"200":{"description":"ok"}}}}}}`)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(tc.cfg)
			if tc.ok != (err == nil) || tc.ok != (v != nil) {
				t.Fatalf("New = %v, %v; want ok=%v", v, err, tc.ok)
			}
		})
	}
	fetched.Lock()
	defer fetched.Unlock()
	if fetchedCount != 0 {
		t.Fatalf("loader fetched an external $ref %d times", fetchedCount)
	}
}

func TestConcurrentChecks(t *testing.T) {
	srv, up := startGateway(t, Config{})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := validPayment
			want := http.StatusOK
			if i%2 == 1 {
				body, want = `{"amount":-1,"currency":"EUR","to":"x"}`, http.StatusBadRequest
			}
			req, _ := http.NewRequest("POST", srv.URL+"/payments", bytes.NewReader([]byte(body)))
			req.Header.Set("Content-Type", "application/json")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			_ = resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("status %d, want %d", resp.StatusCode, want)
			}
		}()
	}
	wg.Wait()
	if up.hits != 8 {
		t.Fatalf("upstream hits = %d, want 8", up.hits)
	}
}
