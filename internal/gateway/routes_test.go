package gateway

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/gateway/ratelimit"
)

func TestLoadRoutesDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(p, []byte("routes:\n  - {name: a, methods: [GET, GET], path: /v1/a, service: svc}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := LoadRoutes(p)
	if err != nil {
		t.Fatal(err)
	}
	r := rs.Routes[0]
	if r.WAF != WAFBlock || r.Timeout != DefaultRouteTimeout || r.Retries != DefaultRouteRetries || r.MaxBodyBytes != DefaultRouteMaxBodyBytes ||
		len(r.Methods) != 1 || rs.PerIP != DefaultPerIP || rs.PerUser != DefaultPerUser || rs.AuditAllowed {
		t.Fatalf("defaults: %+v %+v", rs, r)
	}
	if r.ActionFor("GET") != "read" || r.ActionFor("HEAD") != "read" || r.ActionFor("POST") != "write" {
		t.Fatal("default actions")
	}
}

func TestParseRoutesFull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "api.yaml"), []byte(testOpenAPI), 0o600); err != nil {
		t.Fatal(err)
	}
	src := `rate_limits:
  per_ip: {rate: 50, burst: 100}
  per_client: {rate: 10.5, burst: 20}
  per_user: {rate: 1, burst: 2}
audit_allowed: true
routes:
  - name: payments-create
    methods: [POST]
    path: /v1/payments
    service: payments
    upstream_path: /internal/payments
    scopes: [payments:write]
    action: transfer
    openapi: api.yaml
    waf: detect
    timeout: 2s
    retries: 0
    max_body_bytes: 2KiB
  - {name: root, methods: [GET], path: /, service: web, waf: "off"}
`
	rs, err := ParseRoutes([]byte(src), "routes.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	r := rs.Routes[0]
	if rs.PerClient != (ratelimit.Limit{Rate: 10.5, Burst: 20}) || !rs.AuditAllowed || r.Action != "transfer" || r.WAF != WAFDetect ||
		r.Timeout != 2*time.Second || r.Retries != 0 || r.MaxBodyBytes != 2048 || r.validator == nil || r.OpenAPI != filepath.Join(dir, "api.yaml") {
		t.Fatalf("%+v %+v", rs, r)
	}
	for _, tc := range []struct{ in, want string }{
		{"/v1/payments", "/internal/payments"},
		{"/v1/payments/p1/refunds", "/internal/payments/p1/refunds"},
	} {
		if got := r.rewrite(tc.in); got != tc.want {
			t.Errorf("rewrite(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		method, path, route string
		allowed             string
	}{
		{"POST", "/v1/payments", "payments-create", ""},
		{"POST", "/v1/payments/p1", "payments-create", ""},
		{"GET", "/v1/payments", "", "POST"},
		{"GET", "/v1/paymentsX", "root", ""},
		{"GET", "/", "root", ""},
		{"DELETE", "/x", "", "GET"},
	} {
		r, allowed := rs.Match(tc.method, tc.path)
		name := ""
		if r != nil {
			name = r.Name
		}
		if name != tc.route || strings.Join(allowed, ",") != tc.allowed {
			t.Errorf("Match(%s %s) = %q %v, want %q %q", tc.method, tc.path, name, allowed, tc.route, tc.allowed)
		}
	}
}

func TestParseRoutesErrorsNameTheLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"unknown key", "routes:\n  - name: a\n    methods: [GET]\n    path: /a\n    service: s\n    colour: red\n", []string{`r.yaml:6: unknown key "colour"`}},
		{"unknown top key", "route:\n  - {}\n", []string{`r.yaml:1: unknown key "route"`}},
		{"no routes", "audit_allowed: true\n", []string{"r.yaml:1: routes: at least one route is required"}},
		{"bad fields", "routes:\n  - name: Bad_Name\n    methods: [FETCH]\n    path: v1/../a/\n    service: ''\n    waf: maybe\n    timeout: 10\n    retries: 9\n    max_body_bytes: 1PB\n    scopes: ['a b']\n    action: 'x y'\n",
			[]string{"r.yaml:2: routes[0].name", "r.yaml:3: routes[0].methods", "r.yaml:4: routes[0].path", "r.yaml:5: routes[0].service",
				"r.yaml:6: routes[0].waf", "r.yaml:7: routes[0].timeout", "r.yaml:8: routes[0].retries", "r.yaml:9: routes[0].max_body_bytes",
				"r.yaml:10: routes[0].scopes", "r.yaml:11: routes[0].action"}},
		{"duplicates", "routes:\n  - {name: a, methods: [GET], path: /a, service: s}\n  - {name: a, methods: [GET], path: /a, service: s}\n",
			[]string{`r.yaml:3: routes[1].name: "a" is used by another route`, `r.yaml:3: routes[1]: GET /a is already routed by "a"`}},
		{"bad limit", "rate_limits:\n  per_ip: {rate: 0, burst: 1}\nroutes:\n  - {name: a, methods: [GET], path: /a, service: s}\n", []string{"r.yaml:2: rate_limits.per_ip"}},
		{"alias", "x: &a {name: a}\nroutes:\n  - *a\n", []string{"r.yaml:3: YAML aliases are not allowed"}},
		{"missing openapi", "routes:\n  - {name: a, methods: [GET], path: /a, service: s, openapi: nope.yaml}\n", []string{"r.yaml:2: routes[0].openapi"}},
		{"syntax", "routes: [\n", []string{"r.yaml:"}},
		{"wrong type", "routes:\n  - name: a\n    methods: GET\n", []string{"r.yaml:3: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRoutes([]byte(tc.src), "r.yaml", t.TempDir())
			var re *RoutesError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a *RoutesError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\nlacks %q", err, w)
				}
			}
		})
	}
}

func TestLoadRoutesRefusesHugeFiles(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(p, make([]byte, MaxRoutesFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRoutes(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err %v", err)
	}
	if _, err := LoadRoutes(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("a missing file loaded")
	}
}

func FuzzParseRoutes(f *testing.F) {
	f.Add([]byte(testRoutesYAML))
	f.Add([]byte("routes:\n  - {name: a, methods: [GET], path: /a, service: s}\n"))
	f.Add([]byte("x: &a [*a]\n"))
	f.Add([]byte("rate_limits: {per_ip: {rate: 1e309, burst: -1}}\nroutes: []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := ParseRoutes(data, "fuzz.yaml", "")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid routes file") && !strings.Contains(err.Error(), "larger than") {
				t.Fatalf("unexpected error shape: %v", err)
			}
			return
		}
		if len(rs.Routes) == 0 {
			t.Fatal("valid routes file without routes")
		}
		for _, r := range rs.Routes {
			if checkRoutePath(r.Path) != nil || r.MaxBodyBytes <= 0 || r.Timeout <= 0 || len(r.Methods) == 0 {
				t.Fatalf("invalid route accepted: %+v", r)
			}
			if m, _ := rs.Match(r.Methods[0], r.Path); m == nil {
				t.Fatalf("route %s does not match its own path", r.Name)
			}
		}
	})
}
