package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/httpapi"
)

const testPEPToken = "Bearer test-pep-credential"

// testPEP authenticates the enforcement point by a fixed bearer token.
func testPEP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != testPEPToken {
			httpapi.WriteError(w, r, nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "unknown enforcement point"))
			return
		}
		next.ServeHTTP(w, r.WithContext(WithCaller(r.Context(), Caller{Kind: "admin", ID: "cred-pep-1"})))
	})
}

// authzenServer is a decision service served over HTTPS.
type authzenServer struct {
	*testService
	srv    *httptest.Server
	client *http.Client
}

// businessHours is a fixed clock at 10:00 UTC (in the past: the audit log
// refuses events from the future).
func businessHours() time.Time { return time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC) }

func startAuthZEN(t *testing.T, cfg DecisionConfig) *authzenServer {
	t.Helper()
	ts := startService(t, nil, cfg, businessHours)
	mux := http.NewServeMux()
	ts.svc.RegisterAuthZEN(mux, testPEP)
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return &authzenServer{testService: ts, srv: srv, client: srv.Client()}
}

type azCall struct {
	status int
	header http.Header
	body   []byte
}

func (s *authzenServer) post(t *testing.T, path, body string, hdr map[string]string) azCall {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", testPEPToken)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return azCall{status: resp.StatusCode, header: resp.Header, body: b}
}

// azDecision is an evaluation response as a client reads it.
type azDecision struct {
	Decision *bool `json:"decision"`
	Context  struct {
		ID            string            `json:"id"`
		Reasons       []string          `json:"reasons"`
		ReasonAdmin   map[string]string `json:"reason_admin"`
		BundleVersion int64             `json:"bundle_version"`
		Error         *azItemError      `json:"error"`
	} `json:"context"`
}

func decodeDecision(t *testing.T, c azCall) azDecision {
	t.Helper()
	if c.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", c.status, c.body)
	}
	var d azDecision
	if err := json.Unmarshal(c.body, &d); err != nil {
		t.Fatalf("decode %s: %v", c.body, err)
	}
	if d.Decision == nil || d.Context.ID == "" || d.Context.ReasonAdmin["en"] == "" || d.Context.Reasons == nil {
		t.Fatalf("incomplete evaluation response: %s", c.body)
	}
	return d
}

const inHours = `"time": {"epoch": 1795428000, "hour": 10}`

func TestAuthZENEvaluation(t *testing.T) {
	t.Parallel()
	s := startAuthZEN(t, DecisionConfig{})
	tests := []struct {
		name        string
		body        string
		allow       bool
		reasons     []string
		adminReason string // substring of reason_admin.en
	}{
		{"teller reads an account of her region in business hours",
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"},
			  "context":{` + inHours + `,"region":"eu"}}`,
			true, []string{"teller-read-accounts"}, "permitted by policy teller-read-accounts"},
		{"qualified entity types",
			`{"subject":{"type":"Bulwark::User","id":"alice"},"action":{"name":"read"},"resource":{"type":"Bulwark::Account","id":"acc-eu-1"},
			  "context":{` + inHours + `,"region":"eu"}}`,
			true, []string{"teller-read-accounts"}, "permitted"},
		{"after hours: no permit",
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"},
			  "context":{"time":{"epoch":1795464000,"hour":20},"region":"eu"}}`,
			false, []string{}, "no policy permits"},
		{"user without a role",
			`{"subject":{"type":"user","id":"carol"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"},"context":{"region":"eu"}}`,
			false, []string{}, "no policy permits"},
		{"forbid wins over the teller's permit",
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"transfer"},"resource":{"type":"payment","id":"pay-large"},"context":{"region":"eu"}}`,
			false, []string{"large-transfer-needs-mfa"}, "forbidden by policy large-transfer-needs-mfa"},
		{"large transfer with mfa and low risk",
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"transfer"},"resource":{"type":"payment","id":"pay-large"},
			  "context":{"region":"eu","mfa":true,"riskScore":5}}`,
			true, []string{"teller-transfer"}, "permitted"},
		{"defaults are least privileged: risk score 100 without a context value",
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"transfer"},"resource":{"type":"payment","id":"pay-large"},
			  "context":{"region":"eu","mfa":true}}`,
			false, []string{"large-transfer-needs-mfa"}, "forbidden"},
		{"defaults are least privileged: no region",
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"}}`,
			false, []string{"account-residency"}, "forbidden by policy account-residency"},
		{"unknown action is a denial, not an error",
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"launch-missiles"},"resource":{"type":"account","id":"acc-eu-1"}}`,
			false, []string{}, "unknown action"},
		{"unknown resource type is a denial, not an error",
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"spaceship","id":"x"}}`,
			false, []string{}, "Bulwark::Spaceship is not a resource type"},
		{"unknown subject type is a denial, not an error",
			`{"subject":{"type":"robot","id":"r2"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"}}`,
			false, []string{}, "Bulwark::Robot is not a principal type"},
		{"resource properties describe the payment being made (small)",
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"transfer"},
			  "resource":{"type":"payment","id":"pay-new","properties":{"account":{"__entity":{"type":"Bulwark::Account","id":"acc-eu-1"}},"amount":2500,"currency":"EUR"}},
			  "context":{"region":"eu"}}`,
			true, []string{"teller-transfer"}, "permitted"},
		{"resource properties describe the payment being made (large)",
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"transfer"},
			  "resource":{"type":"payment","id":"pay-new","properties":{"account":{"__entity":{"type":"Bulwark::Account","id":"acc-eu-1"}},"amount":5000777,"currency":"EUR"}},
			  "context":{"region":"eu"}}`,
			false, []string{"large-transfer-needs-mfa"}, "forbidden"},
		{"subject properties cannot promote a user",
			`{"subject":{"type":"user","id":"carol","properties":{"roles":["teller"],"parents":[{"type":"Bulwark::Role","id":"teller"}]}},
			  "action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"},"context":{` + inHours + `,"region":"eu"}}`,
			false, []string{}, "no policy permits"},
		{"unknown top-level members are ignored and grant nothing",
			`{"subject":{"type":"user","id":"carol"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"},
			  "context":{"region":"eu"},"principal_override":{"type":"user","id":"alice"}}`,
			false, []string{}, "no policy permits"},
		{"service calls",
			`{"subject":{"type":"service","id":"spiffe://bulwark.local/ns/bank/sa/payments"},"action":{"name":"call"},
			  "resource":{"type":"service","id":"spiffe://bulwark.local/ns/bank/sa/ledger"}}`,
			true, []string{"payments-call-ledger"}, "permitted"},
	}
	type sent struct {
		id      string
		allow   bool
		reasons []string
	}
	var all []sent
	for _, tc := range tests {
		c := s.post(t, AuthZENEvaluationPath, tc.body, nil)
		d := decodeDecision(t, c)
		if *d.Decision != tc.allow || !slices.Equal(d.Context.Reasons, tc.reasons) {
			t.Errorf("%s: decision %v reasons %v, want %v %v (%s)", tc.name, *d.Decision, d.Context.Reasons, tc.allow, tc.reasons, c.body)
		}
		if !strings.Contains(d.Context.ReasonAdmin["en"], tc.adminReason) {
			t.Errorf("%s: reason_admin %q does not contain %q", tc.name, d.Context.ReasonAdmin["en"], tc.adminReason)
		}
		if d.Context.BundleVersion != 7 {
			t.Errorf("%s: bundle_version %d, want 7", tc.name, d.Context.BundleVersion)
		}
		all = append(all, sent{d.Context.ID, *d.Decision, d.Context.Reasons})
	}

	// Every decision is in the audit trail, with its reasons, the caller,
	// and no context values.
	waitFor(t, "every decision in the audit trail", func() bool { return len(decisionEvents(t, s.audit)) >= len(all) })
	if n := len(decisionEvents(t, s.audit)); n != len(all) {
		t.Fatalf("%d decisions audited, want %d", n, len(all))
	}
	events := decisionEvents(t, s.audit)
	for _, d := range all {
		ev, ok := events[d.id]
		if !ok {
			t.Errorf("decision %s not audited", d.id)
			continue
		}
		wantStatus := audit.StatusFailure
		if d.allow {
			wantStatus = audit.StatusSuccess
		}
		if ev.ClassUID != 6003 || ev.ActivityID != 99 || ev.StatusID != wantStatus || ev.Metadata.UID != d.id {
			t.Errorf("decision %s: event class %d activity %d status %d uid %s", d.id, ev.ClassUID, ev.ActivityID, ev.StatusID, ev.Metadata.UID)
		}
		if ev.Actor == nil || ev.Actor.User == nil || ev.Actor.User.UID != "cred-pep-1" {
			t.Errorf("decision %s: actor %+v, want the PEP's credential", d.id, ev.Actor)
		}
		if got := anyStrings(ev.Unmapped["reasons"]); !slices.Equal(got, d.reasons) {
			t.Errorf("decision %s: audited reasons %v, want %v", d.id, got, d.reasons)
		}
		if ev.Unmapped["api"] != APIAuthZEN || ev.Unmapped["policy_version"] != float64(3) || ev.Unmapped["bundle_version"] != float64(7) {
			t.Errorf("decision %s: unmapped %v", d.id, ev.Unmapped)
		}
		raw, _ := json.Marshal(ev)
		for _, secret := range []string{"riskScore", "5000777", "1795428000", "EUR"} {
			if bytes.Contains(raw, []byte(secret)) {
				t.Errorf("decision %s: audit event carries a context or property value %q: %s", d.id, secret, raw)
			}
		}
	}
}

func anyStrings(v any) []string {
	out := []string{}
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestAuthZENEvaluations(t *testing.T) {
	t.Parallel()
	s := startAuthZEN(t, DecisionConfig{MaxBatchEvaluations: 5})
	// Defaults at the top; the items name the resource or the action.
	const items = `"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"context":{` + inHours + `,"region":"eu"},
		"evaluations":[
			{"resource":{"type":"account","id":"acc-eu-1"}},
			{"resource":{"type":"account","id":"acc-us-1"}},
			{"action":{"name":"transfer"},"resource":{"type":"payment","id":"pay-small"}}
		]`
	tests := []struct {
		name    string
		options string
		want    []bool
	}{
		{"default is execute_all", ``, []bool{true, false, true}},
		{"execute_all", `,"options":{"evaluations_semantic":"execute_all"}`, []bool{true, false, true}},
		{"deny_on_first_deny stops at the first deny", `,"options":{"evaluations_semantic":"deny_on_first_deny"}`, []bool{true, false}},
		{"permit_on_first_permit stops at the first permit", `,"options":{"evaluations_semantic":"permit_on_first_permit"}`, []bool{true}},
	}
	for _, tc := range tests {
		c := s.post(t, AuthZENEvaluationsPath, `{`+items+tc.options+`}`, nil)
		if c.status != http.StatusOK {
			t.Fatalf("%s: status %d: %s", tc.name, c.status, c.body)
		}
		var resp struct {
			Evaluations []azDecision `json:"evaluations"`
		}
		if err := json.Unmarshal(c.body, &resp); err != nil {
			t.Fatal(err)
		}
		var got []bool
		for _, e := range resp.Evaluations {
			if e.Decision == nil || e.Context.ID == "" {
				t.Fatalf("%s: incomplete item in %s", tc.name, c.body)
			}
			got = append(got, *e.Decision)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: decisions %v, want %v", tc.name, got, tc.want)
		}
	}

	t.Run("without evaluations it is a single evaluation", func(t *testing.T) {
		for _, body := range []string{
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"},"context":{` + inHours + `,"region":"eu"}}`,
			`{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"},"context":{` + inHours + `,"region":"eu"},"evaluations":[]}`,
		} {
			d := decodeDecision(t, s.post(t, AuthZENEvaluationsPath, body, nil))
			if !*d.Decision {
				t.Errorf("single evaluation through the batch endpoint denied: %+v", d)
			}
		}
	})
	t.Run("an item that cannot be mapped is denied with its error", func(t *testing.T) {
		c := s.post(t, AuthZENEvaluationsPath, `{"action":{"name":"read"},"evaluations":[
			{"subject":{"type":"user","id":"alice"},"resource":{"type":"account","id":"acc-eu-1"},"context":{`+inHours+`,"region":"eu"}},
			{"resource":{"type":"account","id":"acc-eu-1"}}]}`, nil)
		var resp struct {
			Evaluations []azDecision `json:"evaluations"`
		}
		if err := json.Unmarshal(c.body, &resp); err != nil || len(resp.Evaluations) != 2 {
			t.Fatalf("status %d body %s: %v", c.status, c.body, err)
		}
		second := resp.Evaluations[1]
		if *second.Decision || second.Context.Error == nil || !strings.Contains(second.Context.Error.Message, "subject is required") {
			t.Errorf("unmappable item: %s", c.body)
		}
		if !*resp.Evaluations[0].Decision {
			t.Errorf("the valid item was denied: %s", c.body)
		}
	})
	t.Run("refused batches", func(t *testing.T) {
		for _, tc := range []struct{ name, body, code string }{
			{"too many evaluations", `{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"evaluations":[` +
				strings.Repeat(`{"resource":{"type":"account","id":"acc-eu-1"}},`, 5) + `{"resource":{"type":"account","id":"acc-eu-1"}}]}`, "at most 5"},
			{"unknown semantic", `{"options":{"evaluations_semantic":"first_come"},"evaluations":[{}]}`, "evaluations_semantic"},
		} {
			c := s.post(t, AuthZENEvaluationsPath, tc.body, nil)
			if c.status != http.StatusBadRequest || !strings.Contains(string(c.body), tc.code) {
				t.Errorf("%s: status %d body %s", tc.name, c.status, c.body)
			}
		}
	})
}

func TestAuthZENMetadata(t *testing.T) {
	t.Parallel()
	s := startAuthZEN(t, DecisionConfig{BaseURL: "https://pdp.bank.example/"})
	resp, err := s.client.Get(s.srv.URL + AuthZENMetadataPath) // public: no credential
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var md map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"policy_decision_point":       "https://pdp.bank.example",
		"access_evaluation_endpoint":  "https://pdp.bank.example/access/v1/evaluation",
		"access_evaluations_endpoint": "https://pdp.bank.example/access/v1/evaluations",
	}
	for k, v := range want {
		if md[k] != v {
			t.Errorf("%s = %q, want %q", k, md[k], v)
		}
	}
}

func TestAuthZENRequestErrors(t *testing.T) {
	t.Parallel()
	s := startAuthZEN(t, DecisionConfig{MaxRequestBytes: 2048})
	valid := `{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"}}`
	tests := []struct {
		name    string
		body    string
		hdr     map[string]string
		status  int
		message string
	}{
		{"malformed JSON", `{"subject":`, nil, http.StatusBadRequest, "JSON"},
		{"not an object", `[1,2]`, nil, http.StatusBadRequest, "invalid_json"},
		{"trailing data", valid + `{}`, nil, http.StatusBadRequest, "after the JSON value"},
		{"duplicate member (a parser differential)", `{"subject":{"type":"user","id":"carol"},"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"}}`,
			nil, http.StatusBadRequest, "duplicate"},
		{"duplicate context key", `{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"a"},"context":{"mfa":false,"mfa":true}}`,
			nil, http.StatusBadRequest, "duplicate"},
		{"invalid UTF-8", "{\"subject\":{\"type\":\"user\",\"id\":\"al\xffice\"},\"action\":{\"name\":\"read\"},\"resource\":{\"type\":\"account\",\"id\":\"a\"}}",
			nil, http.StatusBadRequest, "UTF-8"},
		{"empty body", ``, nil, http.StatusBadRequest, "empty request body"},
		{"oversized body", `{"subject":{"type":"user","id":"` + strings.Repeat("a", 4096) + `"}}`, nil, http.StatusRequestEntityTooLarge, "request_too_large"},
		{"missing subject", `{"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"}}`, nil, http.StatusBadRequest, "subject is required"},
		{"missing subject id", `{"subject":{"type":"user"},"action":{"name":"read"},"resource":{"type":"account","id":"a"}}`, nil, http.StatusBadRequest, "subject.id is required"},
		{"missing action name", `{"subject":{"type":"user","id":"alice"},"action":{},"resource":{"type":"account","id":"a"}}`, nil, http.StatusBadRequest, "action.name is required"},
		{"wrong JSON type", `{"subject":"alice","action":{"name":"read"},"resource":{"type":"account","id":"a"}}`, nil, http.StatusBadRequest, "subject"},
		{"context is not Cedar JSON", `{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"a"},"context":{"amount":1.5}}`, nil, http.StatusBadRequest, "context"},
		{"context is not an object", `{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"a"},"context":[1]}`, nil, http.StatusBadRequest, "context"},
		{"bad resource properties", `{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"a","properties":{"x":null}}}`, nil, http.StatusBadRequest, "resource.properties"},
		{"wrong content type", valid, map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType, "application/json"},
		{"unauthenticated enforcement point", valid, map[string]string{"Authorization": ""}, http.StatusUnauthorized, "unauthenticated"},
	}
	for _, tc := range tests {
		c := s.post(t, AuthZENEvaluationPath, tc.body, tc.hdr)
		if c.status != tc.status || !strings.Contains(string(c.body), tc.message) {
			t.Errorf("%s: status %d body %s; want %d containing %q", tc.name, c.status, c.body, tc.status, tc.message)
		}
		if strings.Contains(string(c.body), "goroutine") || strings.Contains(string(c.body), ".go:") {
			t.Errorf("%s: response leaks internals: %s", tc.name, c.body)
		}
	}
	// Refused requests make no decisions.
	if n := len(decisionEvents(t, s.audit)); n != 0 {
		t.Errorf("%d decisions audited for refused requests", n)
	}
}

func TestAuthZENEchoesRequestID(t *testing.T) {
	t.Parallel()
	s := startAuthZEN(t, DecisionConfig{})
	valid := `{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"}}`
	for _, tc := range []struct{ name, body, id string }{
		{"decision", valid, "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"},
		{"error", `{`, "req 42/with spaces"},
	} {
		c := s.post(t, AuthZENEvaluationPath, tc.body, map[string]string{"X-Request-ID": tc.id})
		if got := c.header.Get("X-Request-ID"); got != tc.id {
			t.Errorf("%s: X-Request-ID %q, want %q echoed", tc.name, got, tc.id)
		}
	}
	c := s.post(t, AuthZENEvaluationPath, valid, nil)
	if c.header.Get("X-Request-ID") == "" {
		t.Error("no X-Request-ID generated for a request without one")
	}
}

// TestAuthZENAgreesWithPolicyTests runs the policy test cases written
// beside the bank policies (the package's and the reference examples')
// through the AuthZEN API, each test file with its own entities.
func TestAuthZENAgreesWithPolicyTests(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{decisionBankDir, exampleBankDir} {
		t.Run(filepath.Base(filepath.Dir(dir))+"/"+filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			src := &swapSource{}
			ts := startServiceWith(t, nil, src, DecisionConfig{}, businessHours)
			mux := http.NewServeMux()
			ts.svc.RegisterAuthZEN(mux, testPEP)
			srv := httptest.NewTLSServer(mux)
			t.Cleanup(srv.Close)
			s := &authzenServer{testService: ts, srv: srv, client: srv.Client()}
			n := 0
			for file, tf := range policyTestFiles(t, dir) {
				src.p.Store(policySnapshot(t, dir, tf.Entities))
				for _, tc := range tf.Cases {
					if len(tc.Entities) > 0 {
						continue // per-case entities are not an AuthZEN input
					}
					ctx := map[string]json.RawMessage{}
					for _, raw := range []json.RawMessage{tf.Context, tc.Context} {
						if len(raw) > 0 {
							if err := json.Unmarshal(raw, &ctx); err != nil {
								t.Fatal(err)
							}
						}
					}
					body, err := json.Marshal(map[string]any{
						"subject":  map[string]string{"type": tc.Principal.Type, "id": tc.Principal.ID},
						"action":   map[string]string{"name": tc.Action},
						"resource": map[string]string{"type": tc.Resource.Type, "id": tc.Resource.ID},
						"context":  ctx,
					})
					if err != nil {
						t.Fatal(err)
					}
					d := decodeDecision(t, s.post(t, AuthZENEvaluationPath, string(body), nil))
					if got := map[bool]string{true: "allow", false: "deny"}[*d.Decision]; got != tc.Expect {
						t.Errorf("%s %q: %s, want %s (%s)", file, tc.Name, got, tc.Expect, d.Context.ReasonAdmin["en"])
					}
					if tc.Reasons != nil && !slices.Equal(d.Context.Reasons, *tc.Reasons) {
						t.Errorf("%s %q: reasons %v, want %v", file, tc.Name, d.Context.Reasons, *tc.Reasons)
					}
					n++
				}
			}
			if n < 10 {
				t.Fatalf("only %d cases ran", n)
			}
			t.Logf("%d policy test cases agree", n)
		})
	}
}

// BenchmarkDecodeEvaluation measures decoding and mapping one AuthZEN
// request (no network, no logging).
func BenchmarkDecodeEvaluation(b *testing.B) {
	body := []byte(`{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"},` +
		`"context":{"time":{"epoch":1795000000,"hour":10},"zone":"internal","region":"eu","mfa":false,"riskScore":10}}`)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeEvaluation(body, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecideAndLog measures one decision with its record spooled (fsync
// shared by the concurrent callers), without HTTP.
func BenchmarkDecideAndLog(b *testing.B) {
	ts := startService(b, nil, DecisionConfig{}, businessHours)
	body := []byte(`{"subject":{"type":"user","id":"alice"},"action":{"name":"read"},"resource":{"type":"account","id":"acc-eu-1"},` +
		`"context":{"time":{"epoch":1795000000,"hour":10},"zone":"internal","region":"eu","mfa":false,"riskScore":10}}`)
	in, err := decodeEvaluation(body, businessHours())
	if err != nil {
		b.Fatal(err)
	}
	ctx := WithCaller(context.Background(), Caller{Kind: "workload", ID: "spiffe://bench/pep"})
	b.SetParallelism(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := ts.svc.decide(ctx, in); !res.Allowed {
				b.Errorf("denied: %+v", res)
				return
			}
		}
	})
}
