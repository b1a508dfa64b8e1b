package validate

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzCheck feeds random methods, targets, content types and bodies to
// Check: it must never panic, never answer 5xx, and only accept JSON that
// is valid.
func FuzzCheck(f *testing.F) {
	f.Add("POST", "/payments", "application/json", []byte(validPayment))
	f.Add("POST", "/payments?dry_run=true", "application/json", []byte(`{"amount":1,"currency":"EUR","to":"x","memo":{"a":[1,{"b":null}]}}`))
	f.Add("GET", "/accounts/acc_abcd", "", []byte(nil))
	f.Add("GET", "/accounts/%2e%2e", "", []byte(nil))
	f.Add("POST", "/payments", "application/json; charset=utf-16", []byte(`{"amount":1e400}`))
	f.Add("POST", "/payments", "application/problem+json", []byte(`[[[[[[`))
	f.Add("DELETE", "//payments/../x?;", "text/plain", []byte(`{"a":1,"a":2}`))
	v := newValidator(f, Config{MaxBodyBytes: 4096, MaxJSONDepth: 8})
	f.Fuzz(func(t *testing.T, method, target, contentType string, body []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil || method == "" || strings.ContainsAny(method, " \t\r\n") {
			t.Skip()
		}
		req := &http.Request{
			Method:        method,
			URL:           u,
			Header:        http.Header{"Content-Type": {contentType}},
			Body:          io.NopCloser(strings.NewReader(string(body))),
			ContentLength: -1,
		}
		out, err := v.Check(req)
		if err != nil {
			ve, ok := err.(*Error)
			if !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if ve.Status >= 500 || ve.Status < 400 {
				t.Fatalf("status %d: %v", ve.Status, ve)
			}
			return
		}
		got, _ := io.ReadAll(out.Body)
		if string(got) != string(body) {
			t.Fatalf("upstream body %q, want %q", got, body)
		}
		if len(body) > 0 && strings.Contains(contentType, "json") && !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
	})
}

// FuzzScanJSON checks the streaming scan against encoding/json: whatever it
// accepts is valid JSON.
func FuzzScanJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,{"b":2}]}`, `{"a":1,"a":2}`, `[[[`, `1 2`, `{"\u0041":1,"a":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if e := scanJSON(body, 16); e == nil && !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
	})
}

func BenchmarkCheckValidPayment(b *testing.B) {
	v := newValidator(b, Config{})
	body := []byte(validPayment)
	for b.Loop() {
		req := &http.Request{
			Method: "POST", URL: &url.URL{Path: "/payments"},
			Header:        http.Header{"Content-Type": {"application/json"}},
			Body:          io.NopCloser(strings.NewReader(string(body))),
			ContentLength: int64(len(body)),
		}
		if _, err := v.Check(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScanDeepJSON(b *testing.B) {
	body := []byte(strings.Repeat("[", 10000) + strings.Repeat("]", 10000))
	for b.Loop() {
		if e := scanJSON(body, DefaultMaxJSONDepth); e == nil {
			b.Fatal("accepted")
		}
	}
}
