package policy

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunTestsBank(t *testing.T) {
	t.Parallel()
	rep, err := RunTests(bankDir)
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	for _, r := range rep.Results {
		if !r.Passed {
			t.Errorf("%s: %s: %s", r.File, r.Name, r.Failure)
		}
	}
	if rep.Failed != 0 || rep.Passed < 40 {
		t.Errorf("passed %d, failed %d; want at least 40 passing and none failing", rep.Passed, rep.Failed)
	}
}

// TestRunTestsDecisionFixture: the smaller policy set the decision
// service's tests use (testdata/bank) is itself valid and passes its cases,
// so those tests decide with a set that means what it says.
func TestRunTestsDecisionFixture(t *testing.T) {
	t.Parallel()
	rep, err := RunTests(decisionBankDir)
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	if rep.Failed != 0 || rep.Passed == 0 {
		t.Errorf("passed %d, failed %d", rep.Passed, rep.Failed)
	}
}

// TestBankPoliciesAllDetermineADecision checks that every reference policy
// is the reason of at least one allowing or denying case, and that the
// cases include default denies, so no rule of the set goes untested.
func TestBankPoliciesAllDetermineADecision(t *testing.T) {
	t.Parallel()
	rep, err := RunTests(bankDir)
	if err != nil {
		t.Fatalf("RunTests: %v", err)
	}
	seen := map[string]bool{}
	var allows, denies, defaultDenies int
	for _, r := range rep.Results {
		for _, id := range r.Got.Reasons {
			seen[id] = true
		}
		switch {
		case r.Got.Allowed:
			allows++
		case len(r.Got.Reasons) == 0:
			defaultDenies++
		default:
			denies++
		}
	}
	for _, p := range mustLoad(t, bankDir).Policies() {
		if !seen[p.ID] {
			t.Errorf("policy %q determines no test case", p.ID)
		}
	}
	if allows == 0 || denies == 0 || defaultDenies == 0 {
		t.Errorf("allows %d, denies by a forbid %d, default denies %d: want each at least once", allows, denies, defaultDenies)
	}
}

const testPolicies = `@id("read-accounts")
permit (principal is Bulwark::User, action == Bulwark::Action::"read", resource is Bulwark::Account)
when { context.mfa };
`

// testCtx is a complete context for the Bulwark schema.
const testCtx = `"context": {"time": {"epoch": 0, "hour": 9}, "zone": "internal", "region": "eu",
  "mfa": true, "riskScore": 0, "tokenScopes": []}`

const testEntities = `"entities": [
  {"uid": {"type": "Bulwark::Region", "id": "eu"}, "attrs": {"code": "eu"}, "parents": []},
  {"uid": {"type": "Bulwark::User", "id": "alice"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Bulwark::Account", "id": "a1"},
   "attrs": {"owner": {"__entity": {"type": "Bulwark::User", "id": "alice"}}, "region": {"__entity": {"type": "Bulwark::Region", "id": "eu"}}, "branch": "london"},
   "parents": []}]`

func TestRunTestsCases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		cases       string
		wantFailure string // "" means the case passes
	}{
		{
			name:  "allow as expected with reasons",
			cases: `{"name": "c", "principal": {"type": "User", "id": "alice"}, "action": "read", "resource": {"type": "Account", "id": "a1"}, "expect": "allow", "reasons": ["read-accounts"]}`,
		},
		{
			name:  "context override gives a default deny",
			cases: `{"name": "c", "principal": {"type": "User", "id": "alice"}, "action": "read", "resource": {"type": "Account", "id": "a1"}, "context": {"mfa": false}, "expect": "deny", "reasons": []}`,
		},
		{
			name:        "wrong expectation fails",
			cases:       `{"name": "c", "principal": {"type": "User", "id": "alice"}, "action": "read", "resource": {"type": "Account", "id": "a1"}, "expect": "deny"}`,
			wantFailure: "expected deny, got allow",
		},
		{
			name:        "wrong reasons fail",
			cases:       `{"name": "c", "principal": {"type": "User", "id": "alice"}, "action": "read", "resource": {"type": "Account", "id": "a1"}, "expect": "allow", "reasons": ["other"]}`,
			wantFailure: "expected reasons [other], got [read-accounts]",
		},
		{
			name:        "a request outside the schema fails instead of passing as a deny",
			cases:       `{"name": "c", "principal": {"type": "User", "id": "alice"}, "action": "delete", "resource": {"type": "Account", "id": "a1"}, "expect": "deny"}`,
			wantFailure: "request does not match the schema",
		},
		{
			name:        "a context missing an attribute fails",
			cases:       `{"name": "c", "principal": {"type": "User", "id": "alice"}, "action": "read", "resource": {"type": "Account", "id": "a1"}, "context": {"zone": 1}, "expect": "allow"}`,
			wantFailure: "request does not match the schema",
		},
		{
			name:        "an entity outside the schema fails",
			cases:       `{"name": "c", "principal": {"type": "User", "id": "alice"}, "action": "read", "resource": {"type": "Account", "id": "a1"}, "entities": [{"uid": {"type": "Bulwark::User", "id": "alice"}, "attrs": {"salary": 1}, "parents": []}], "expect": "allow"}`,
			wantFailure: "entity Bulwark::User::\"alice\" does not match the schema",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := writeDir(t, map[string]string{
				"p.cedar":     testPolicies,
				"p.test.json": "{" + testEntities + ",\n" + testCtx + `, "cases": [` + tt.cases + "]}",
			})
			rep, err := RunTests(dir)
			if err != nil {
				t.Fatalf("RunTests: %v", err)
			}
			if len(rep.Results) != 1 {
				t.Fatalf("results = %+v, want 1", rep.Results)
			}
			r := rep.Results[0]
			if tt.wantFailure == "" {
				if !r.Passed || rep.Passed != 1 {
					t.Errorf("case failed: %s", r.Failure)
				}
				return
			}
			if r.Passed || rep.Failed != 1 {
				t.Fatalf("case passed, want a failure containing %q", tt.wantFailure)
			}
			if !strings.Contains(r.Failure, tt.wantFailure) {
				t.Errorf("Failure = %q, want it to contain %q", r.Failure, tt.wantFailure)
			}
		})
	}
}

func TestRunTestsErrors(t *testing.T) {
	t.Parallel()
	okCase := `{"name": "c", "principal": {"type": "User", "id": "alice"}, "action": "read", "resource": {"type": "Account", "id": "a1"}, "expect": "allow"}`
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{"no test files", map[string]string{"p.cedar": testPolicies}, "no .test.json files"},
		{"invalid policies", map[string]string{"p.cedar": "permit (principal, action, resource) when { context.nope };", "p.test.json": `{"cases": []}`},
			"policy problem(s)"},
		{"unknown field", map[string]string{"p.cedar": testPolicies, "p.test.json": `{"cases": [], "extra": 1}`}, `unknown field "extra"`},
		{"bad expect", map[string]string{"p.cedar": testPolicies, "p.test.json": `{"cases": [` + strings.Replace(okCase, `"allow"`, `"maybe"`, 1) + `]}`},
			`expect must be "allow" or "deny"`},
		{"missing name", map[string]string{"p.cedar": testPolicies, "p.test.json": `{"cases": [` + strings.Replace(okCase, `"name": "c"`, `"name": ""`, 1) + `]}`},
			"name is required"},
		{"trailing data", map[string]string{"p.cedar": testPolicies, "p.test.json": `{"cases": []} {}`}, "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := RunTests(writeDir(t, tt.files))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("RunTests error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestRunTestsInvalidPoliciesIsLoadError(t *testing.T) {
	t.Parallel()
	_, err := RunTests(filepath.Join("testdata", "bad"))
	var le *LoadError
	if !errors.As(err, &le) || len(le.Problems) == 0 {
		t.Fatalf("RunTests(bad) = %v, want a *LoadError", err)
	}
}
