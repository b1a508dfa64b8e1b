package bank

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/bulwarksec/bulwark/internal/gateway"
	"github.com/bulwarksec/bulwark/internal/gateway/validate"
)

func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false
	doc, err := loader.LoadFromData(OpenAPI())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validate: %v", err)
	}
	return doc
}

// TestOpenAPIStrictSchemas: every object schema of the document refuses
// unknown properties, and every string and integer is bounded.
func TestOpenAPIStrictSchemas(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	var check func(where string, s *openapi3.Schema)
	check = func(where string, s *openapi3.Schema) {
		switch {
		case s.Type.Is("object"):
			if s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has {
				t.Errorf("%s: object without additionalProperties: false", where)
			}
			for name, p := range s.Properties {
				check(where+"."+name, p.Value)
			}
		case s.Type.Is("array"):
			if s.MaxItems == nil {
				t.Errorf("%s: array without maxItems", where)
			}
			check(where+"[]", s.Items.Value)
		case s.Type.Is("string"):
			if s.MaxLength == nil && len(s.Enum) == 0 && s.Format != "date-time" {
				t.Errorf("%s: string without maxLength", where)
			}
		}
	}
	for name, s := range doc.Components.Schemas {
		check(name, s.Value)
	}
	req := doc.Components.Schemas["PaymentRequest"].Value
	if amount := req.Properties["amount"].Value; amount.Min == nil || *amount.Min != 1 || amount.Max == nil || *amount.Max != MaxPaymentAmount {
		t.Errorf("amount bounds %v..%v, want 1..%d", amount.Min, amount.Max, MaxPaymentAmount)
	}
}

// TestOpenAPIValidatesRequests checks sample requests against the document,
// both with kin-openapi directly and through the gateway's validator.
func TestOpenAPIValidatesRequests(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := validate.New(validate.Config{Spec: OpenAPI()})
	if err != nil {
		t.Fatalf("the gateway's validator refuses the document: %v", err)
	}
	good := `{"from_account":"` + AccountID("alice") + `","to_iban":"` + bobIBAN + `","amount":2550,"currency":"EUR","reference":"rent"}`
	tests := []struct {
		name, method, target, body string
		headers                    map[string]string
		ok                         bool
	}{
		{"list accounts", http.MethodGet, "/v1/accounts", "", nil, true},
		{"get an account", http.MethodGet, "/v1/accounts/" + AccountID("alice"), "", nil, true},
		{"get a malformed account id", http.MethodGet, "/v1/accounts/acc_'%20OR%201=1", "", nil, false},
		{"a payment", http.MethodPost, "/v1/payments", good, nil, true},
		{"a payment with an idempotency key", http.MethodPost, "/v1/payments", good, map[string]string{"Idempotency-Key": "order-42"}, true},
		{"a payment with a bad idempotency key", http.MethodPost, "/v1/payments", good, map[string]string{"Idempotency-Key": "a b"}, false},
		{"a payment with an unknown field", http.MethodPost, "/v1/payments", strings.Replace(good, `"rent"`, `"rent","admin":true`, 1), nil, false},
		{"a payment of zero", http.MethodPost, "/v1/payments", strings.Replace(good, "2550", "0", 1), nil, false},
		{"a payment over the limit", http.MethodPost, "/v1/payments", strings.Replace(good, "2550", "10000001", 1), nil, false},
		{"a payment in dollars", http.MethodPost, "/v1/payments", strings.Replace(good, "EUR", "USD", 1), nil, false},
		{"a payment to a lower-case IBAN", http.MethodPost, "/v1/payments", strings.Replace(good, bobIBAN, strings.ToLower(bobIBAN), 1), nil, false},
		{"a payment without an amount", http.MethodPost, "/v1/payments", strings.Replace(good, `"amount":2550,`, "", 1), nil, false},
		{"a payment with a long reference", http.MethodPost, "/v1/payments", strings.Replace(good, `"rent"`, `"`+strings.Repeat("r", 141)+`"`, 1), nil, false},
		{"get a payment", http.MethodGet, "/v1/payments/pay_" + strings.Repeat("0a", 16), "", nil, true},
		{"get a malformed payment id", http.MethodGet, "/v1/payments/1", "", nil, false},
		{"ledger entries", http.MethodGet, "/v1/ledger/entries", "", nil, true},
		{"ledger entries of an account", http.MethodGet, "/v1/ledger/entries?account=" + AccountID("alice"), "", nil, true},
		{"ledger entries with an injected account", http.MethodGet, "/v1/ledger/entries?account=x'%20OR%20'1'='1", "", nil, false},
		{"notifications", http.MethodGet, "/v1/notifications", "", nil, true},
		{"a statement", http.MethodPost, "/v1/statements", "", nil, true},
		{"deleting a payment", http.MethodDelete, "/v1/payments/pay_" + strings.Repeat("0a", 16), "", nil, false},
		{"an undocumented path", http.MethodGet, "/v1/admin", "", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			newReq := func() *http.Request {
				r := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
				if tt.body != "" {
					r.Header.Set("Content-Type", "application/json")
				}
				for k, v := range tt.headers {
					r.Header.Set(k, v)
				}
				return r
			}
			// kin-openapi directly.
			r := newReq()
			kinErr := func() error {
				route, params, err := router.FindRoute(r)
				if err != nil {
					return err
				}
				return openapi3filter.ValidateRequest(context.Background(), &openapi3filter.RequestValidationInput{
					Request: r, PathParams: params, Route: route,
					Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
				})
			}()
			if (kinErr == nil) != tt.ok {
				t.Errorf("kin-openapi: err = %v, want ok = %v", kinErr, tt.ok)
			}
			// The gateway's validator.
			if _, err := gw.Check(newReq()); (err == nil) != tt.ok {
				t.Errorf("gateway validator: err = %v, want ok = %v", err, tt.ok)
			}
		})
	}
}

func TestPublicPaths(t *testing.T) {
	t.Parallel()
	want := []string{"/v1/accounts", "/v1/payments", "/v1/ledger/entries", "/v1/notifications", "/v1/statements"}
	got := PublicPaths()
	if !slices.Equal(got, want) {
		t.Fatalf("PublicPaths = %v, want %v", got, want)
	}
	// Every public path is described by the OpenAPI document.
	doc := loadOpenAPI(t)
	for _, p := range got {
		if doc.Paths.Find(p) == nil {
			t.Errorf("%s is not in the OpenAPI document", p)
		}
	}
	got[0] = "/changed"
	if PublicPaths()[0] != want[0] {
		t.Error("PublicPaths returns shared state")
	}
}

// TestRoutesFile checks the routes file as the gateway loads it (strict
// keys, the OpenAPI document beside it): each route with scopes, the WAF
// blocking, and the ledger's public path rewritten.
func TestRoutesFile(t *testing.T) {
	t.Parallel()
	p, err := WriteGatewayFiles(filepath.Join(t.TempDir(), "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	file, err := gateway.LoadRoutes(p)
	if err != nil {
		t.Fatalf("routes.yaml: %v", err)
	}
	if !file.AuditAllowed || file.PerIP.Rate <= 0 || file.PerUser.Rate <= 0 || file.PerClient.Rate <= 0 {
		t.Errorf("rate limits or audit: %+v", file)
	}
	for _, r := range file.Routes {
		if !slices.Contains(Services, r.Service) || len(r.Scopes) == 0 || r.WAF != gateway.WAFBlock || filepath.Base(r.OpenAPI) != RoutesFileOpenAPI {
			t.Errorf("route %+v", r)
		}
		for _, m := range r.Methods {
			wantScope := "accounts:read"
			if m == http.MethodPost && r.Path == "/v1/payments" {
				wantScope = "payments:write"
			}
			if !slices.Equal(r.Scopes, []string{wantScope}) {
				t.Errorf("route %s: scopes %v, want [%s]", r.Name, r.Scopes, wantScope)
			}
		}
		if r.Path == "/v1/ledger/entries" && (r.Service != "ledger" || r.UpstreamPath != "/v1/entries") {
			t.Errorf("ledger route %+v, want ledger /v1/entries", r)
		}
	}
}

func TestWriteGatewayFiles(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "gateway")
	p, err := WriteGatewayFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{RoutesFileName: RoutesYAML(), RoutesFileOpenAPI: OpenAPI()} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v, content differs", name, err)
		}
	}
	if p != filepath.Join(dir, RoutesFileName) {
		t.Errorf("routes path %s", p)
	}
}

// FuzzPaymentRequest: any body decodes and validates without panicking,
// and a request that validates is within the documented bounds.
func FuzzPaymentRequest(f *testing.F) {
	f.Add([]byte(`{"from_account":"` + AccountID("alice") + `","to_iban":"` + bobIBAN + `","amount":2550,"currency":"EUR","reference":"rent"}`))
	f.Add([]byte(`{"amount":-1}`))
	f.Add([]byte(`{"to_iban":"DE89 3704","reference":"\u0000"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req PaymentRequest
		if json.Unmarshal(body, &req) != nil {
			return
		}
		if req.validate("alice") != nil {
			return
		}
		if req.Amount < 1 || req.Amount > MaxPaymentAmount || !validIBAN(req.ToIBAN) || req.FromAccount != AccountID("alice") || len(req.Reference) > 140 {
			t.Fatalf("accepted %+v", req)
		}
	})
}
