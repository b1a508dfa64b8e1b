package authz_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulwarksec/bulwark/sdk/authz"
)

// The schema and reference policies live in internal/policy; sdk/ must not
// import it, so the tests read the files.
const (
	schemaPath = "../../internal/policy/schema.cedarschema"
)

// bankDirs hold reference policies with *.test.json cases; those that
// exist are tested.
var bankDirs = []string{"../../examples/policies/bank", "../../internal/policy/testdata/bank"}

func readSchema(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatalf("read schema: %v", err)
	}
	return string(b)
}

func uid(typ, id string) cedar.EntityUID {
	if !strings.Contains(typ, "::") {
		typ = "Bulwark::" + typ
	}
	return cedar.NewEntityUID(cedar.EntityType(typ), cedar.String(id))
}

func action(name string) cedar.EntityUID { return uid("Bulwark::Action", name) }

// testEntities is a small organisation: a three-level role hierarchy.
const testEntities = `[
 {"uid":{"type":"Bulwark::Role","id":"staff"},"attrs":{},"parents":[]},
 {"uid":{"type":"Bulwark::Role","id":"teller"},"attrs":{},"parents":[{"type":"Bulwark::Role","id":"staff"}]},
 {"uid":{"type":"Bulwark::Role","id":"manager"},"attrs":{},"parents":[{"type":"Bulwark::Role","id":"teller"}]},
 {"uid":{"type":"Bulwark::Region","id":"eu"},"attrs":{"code":"eu"},"parents":[]},
 {"uid":{"type":"Bulwark::User","id":"mia"},"attrs":{},"parents":[{"type":"Bulwark::Role","id":"manager"}]},
 {"uid":{"type":"Bulwark::User","id":"tom"},"attrs":{},"parents":[{"type":"Bulwark::Role","id":"teller"}]},
 {"uid":{"type":"Bulwark::User","id":"eve"},"attrs":{},"parents":[]},
 {"uid":{"type":"Bulwark::Account","id":"a1"},"attrs":{"owner":{"__entity":{"type":"Bulwark::User","id":"eve"}},"region":{"__entity":{"type":"Bulwark::Region","id":"eu"}}},"parents":[]}
]`

var testPolicies = map[string]string{
	"roles.cedar": `
permit (principal in Bulwark::Role::"staff", action == Bulwark::Action::"read", resource is Bulwark::Account);
@id("managers-write")
permit (principal in Bulwark::Role::"manager", action == Bulwark::Action::"write", resource is Bulwark::Account);
@id("also-managers-write")
permit (principal in Bulwark::Role::"manager", action in [Bulwark::Action::"write"], resource);
`,
	"deny.cedar": `
@id("no-eve")
forbid (principal == Bulwark::User::"eve", action, resource);
@id("risky")
forbid (principal, action, resource is Bulwark::Account) when { context.riskScore > 90 };
`,
	"errors.cedar": `
@id("needs-amount")
permit (principal, action == Bulwark::Action::"transfer", resource is Bulwark::Payment) when { context.amount < 100 };
@id("overflow")
forbid (principal, action == Bulwark::Action::"approve", resource) when { context.riskScore * 9223372036854775807 > 0 };
@id("approve-all")
permit (principal, action == Bulwark::Action::"approve", resource);
`,
}

func newTestEvaluator(t testing.TB) *authz.Evaluator {
	t.Helper()
	ev, err := authz.NewEvaluator(authz.EvaluatorInput{
		Policies: testPolicies, Schema: readSchema(t), Entities: json.RawMessage(testEntities), BundleVersion: 7,
	})
	if err != nil {
		t.Fatalf("NewEvaluator: %v", err)
	}
	return ev
}

func amount(v int64) *int64 { return &v }

func TestEvaluatorDecide(t *testing.T) {
	t.Parallel()
	ev := newTestEvaluator(t)
	base := authz.Context{Hour: 10, Zone: "internal", Region: "eu", RiskScore: 10}
	risky := base
	risky.RiskScore = 95
	small := base
	small.Amount = amount(50)
	tests := []struct {
		name      string
		principal cedar.EntityUID
		action    cedar.EntityUID
		resource  cedar.EntityUID
		ctx       authz.Context
		entities  cedar.EntityGetter
		allowed   bool
		reasons   []string
		errors    []string
		refusal   string
	}{
		{name: "default deny: no permit matches", principal: uid("User", "tom"), action: action("write"), resource: uid("Account", "a1"), ctx: base},
		{name: "role hierarchy: teller is staff", principal: uid("User", "tom"), action: action("read"), resource: uid("Account", "a1"), ctx: base,
			allowed: true, reasons: []string{"roles.cedar:0"}},
		{name: "role hierarchy: manager is teller is staff", principal: uid("User", "mia"), action: action("read"), resource: uid("Account", "a1"), ctx: base,
			allowed: true, reasons: []string{"roles.cedar:0"}},
		{name: "two permits are both reasons, sorted", principal: uid("User", "mia"), action: action("write"), resource: uid("Account", "a1"), ctx: base,
			allowed: true, reasons: []string{"also-managers-write", "managers-write"}},
		{name: "unknown principal is denied", principal: uid("User", "nobody"), action: action("read"), resource: uid("Account", "a1"), ctx: base},
		{name: "forbid overrides permit", principal: uid("User", "mia"), action: action("read"), resource: uid("Account", "a1"), ctx: risky,
			reasons: []string{"risky"}},
		{name: "two forbids", principal: uid("User", "eve"), action: action("read"), resource: uid("Account", "a1"), ctx: risky,
			reasons: []string{"no-eve", "risky"}},
		{name: "missing context attribute is an error and denies", principal: uid("User", "tom"), action: action("transfer"), resource: uid("Payment", "p1"), ctx: base,
			errors: []string{"needs-amount: " /* prefix */}},
		{name: "context attribute present allows", principal: uid("User", "tom"), action: action("transfer"), resource: uid("Payment", "p1"), ctx: small,
			allowed: true, reasons: []string{"needs-amount"}},
		{name: "an erroring forbid denies despite a permit", principal: uid("User", "tom"), action: action("approve"), resource: uid("Payment", "p1"), ctx: base,
			errors: []string{"overflow: "}},
		{name: "unknown action is refused", principal: uid("User", "tom"), action: action("fly"), resource: uid("Account", "a1"), ctx: base,
			refusal: `unknown action Bulwark::Action::"fly"`},
		{name: "action of another namespace is refused", principal: uid("User", "tom"), action: uid("Other::Action", "read"), resource: uid("Account", "a1"), ctx: base,
			refusal: `unknown action Other::Action::"read"`},
		{name: "resource type not in appliesTo is refused", principal: uid("User", "tom"), action: action("read"), resource: uid("Secret", "s"), ctx: base,
			refusal: `Bulwark::Secret is not a resource type of Bulwark::Action::"read"`},
		{name: "principal type not in appliesTo is refused", principal: uid("Client", "c"), action: action("approve"), resource: uid("Payment", "p"), ctx: base,
			refusal: `Bulwark::Client is not a principal type of Bulwark::Action::"approve"`},
		{name: "request entities overlay: new user in the manager role", principal: uid("User", "new"), action: action("write"), resource: uid("Account", "a1"), ctx: base,
			entities: cedar.EntityMap{uid("User", "new"): {UID: uid("User", "new"), Parents: cedar.NewEntityUIDSet(uid("Role", "manager"))}},
			allowed:  true, reasons: []string{"also-managers-write", "managers-write"}},
		{name: "request entities overlay replaces the evaluator's entity", principal: uid("User", "mia"), action: action("write"), resource: uid("Account", "a1"), ctx: base,
			entities: cedar.EntityMap{uid("User", "mia"): {UID: uid("User", "mia")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := ev.Decide(authz.Request{Principal: tc.principal, Action: tc.action, Resource: tc.resource, Context: tc.ctx.Record(), Entities: tc.entities})
			if d.Allowed != tc.allowed {
				t.Errorf("Allowed = %v, want %v (decision %+v)", d.Allowed, tc.allowed, d)
			}
			if !slices.Equal(d.Reasons, tc.reasons) {
				t.Errorf("Reasons = %q, want %q", d.Reasons, tc.reasons)
			}
			if len(d.Errors) != len(tc.errors) {
				t.Errorf("Errors = %q, want %d with prefixes %q", d.Errors, len(tc.errors), tc.errors)
			} else {
				for i := range d.Errors {
					if !strings.HasPrefix(d.Errors[i], tc.errors[i]) {
						t.Errorf("Errors[%d] = %q, want prefix %q", i, d.Errors[i], tc.errors[i])
					}
				}
			}
			if d.Refusal != tc.refusal {
				t.Errorf("Refusal = %q, want %q", d.Refusal, tc.refusal)
			}
			if d.BundleVersion != 7 {
				t.Errorf("BundleVersion = %d, want 7", d.BundleVersion)
			}
		})
	}
}

func TestNewEvaluatorErrors(t *testing.T) {
	t.Parallel()
	schema := readSchema(t)
	tests := []struct {
		name string
		in   authz.EvaluatorInput
		want []string
	}{
		{name: "syntax error names file, line and column",
			in:   authz.EvaluatorInput{Policies: map[string]string{"bad.cedar": "permit (principal, action, resource);\npermit (principal action, resource);"}},
			want: []string{"bad.cedar:2:"}},
		{name: "duplicate id names both places",
			in: authz.EvaluatorInput{Policies: map[string]string{
				"a.cedar": `@id("x") permit (principal, action, resource);`,
				"b.cedar": "\n  @id(\"x\") forbid (principal, action, resource);"}},
			want: []string{`b.cedar:2:3: duplicate policy id "x"`, "a.cedar:1:1"}},
		{name: "bad schema", in: authz.EvaluatorInput{Schema: "entity ;"}, want: []string{"schema"}},
		{name: "bad entities", in: authz.EvaluatorInput{Schema: schema, Entities: json.RawMessage(`{"not":"an array"}`)}, want: []string{"entities"}},
		{name: "duplicate entities", in: authz.EvaluatorInput{Entities: json.RawMessage(
			`[{"uid":{"type":"Bulwark::Role","id":"r"},"attrs":{},"parents":[]},{"uid":{"type":"Bulwark::Role","id":"r"},"attrs":{},"parents":[]}]`)},
			want: []string{"entities"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := authz.NewEvaluator(tc.in)
			if err == nil {
				t.Fatal("NewEvaluator succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestEvaluatorEmpty(t *testing.T) {
	t.Parallel()
	ev, err := authz.NewEvaluator(authz.EvaluatorInput{})
	if err != nil {
		t.Fatal(err)
	}
	d := ev.Decide(authz.Request{Principal: uid("User", "a"), Action: action("read"), Resource: uid("Account", "b")})
	if d.Allowed || d.Refusal != "" || len(d.Reasons) != 0 {
		t.Errorf("empty evaluator: %+v, want a plain default deny", d)
	}
}

func TestEvaluatorRoleCycle(t *testing.T) {
	t.Parallel()
	ents := `[
 {"uid":{"type":"Bulwark::Role","id":"a"},"attrs":{},"parents":[{"type":"Bulwark::Role","id":"b"}]},
 {"uid":{"type":"Bulwark::Role","id":"b"},"attrs":{},"parents":[{"type":"Bulwark::Role","id":"a"}]},
 {"uid":{"type":"Bulwark::User","id":"u"},"attrs":{},"parents":[{"type":"Bulwark::Role","id":"a"}]}]`
	ev, err := authz.NewEvaluator(authz.EvaluatorInput{
		Policies: map[string]string{"p.cedar": `permit (principal in Bulwark::Role::"b", action, resource);`},
		Schema:   readSchema(t), Entities: json.RawMessage(ents)})
	if err != nil {
		t.Fatal(err)
	}
	d := ev.Decide(authz.Request{Principal: uid("User", "u"), Action: action("read"), Resource: uid("Account", "x")})
	if !d.Allowed {
		t.Errorf("user in a role cycle: %+v, want allowed", d)
	}
}

func TestEvaluatorConcurrent(t *testing.T) {
	t.Parallel()
	ev := newTestEvaluator(t)
	req := authz.Request{Principal: uid("User", "mia"), Action: action("read"), Resource: uid("Account", "a1"),
		Context: authz.Context{Hour: 10, Region: "eu"}.Record()}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if d := ev.Decide(req); !d.Allowed {
					t.Errorf("concurrent decision: %+v", d)
					return
				}
			}
		})
	}
	wg.Wait()
}

// bankTestFile is internal/policy's *.test.json format.
type bankTestFile struct {
	Entities json.RawMessage `json:"entities"`
	Context  map[string]any  `json:"context"`
	Cases    []struct {
		Name      string                    `json:"name"`
		Principal struct{ Type, ID string } `json:"principal"`
		Action    string                    `json:"action"`
		Resource  struct{ Type, ID string } `json:"resource"`
		Context   map[string]any            `json:"context"`
		Entities  json.RawMessage           `json:"entities"`
		Expect    string                    `json:"expect"`
		Reasons   *[]string                 `json:"reasons"`
	} `json:"cases"`
}

// TestEvaluatorBankCases runs the reference policy tests through the
// evaluator, with each case's entities as request entities.
func TestEvaluatorBankCases(t *testing.T) {
	t.Parallel()
	found := false
	for _, dir := range bankDirs {
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		found = true
		t.Run(filepath.Base(filepath.Dir(dir))+"/"+filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			testBankDir(t, dir)
		})
	}
	if !found {
		t.Fatalf("none of %q exists", bankDirs)
	}
}

func testBankDir(t *testing.T, bankDir string) {
	policies := map[string]string{}
	names, _ := filepath.Glob(filepath.Join(bankDir, "*.cedar"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		policies[filepath.Base(n)] = string(b)
	}
	tests, _ := filepath.Glob(filepath.Join(bankDir, "*.test.json"))
	if len(names) == 0 || len(tests) == 0 {
		t.Fatalf("no reference policies or tests under %s", bankDir)
	}
	for _, tf := range tests {
		raw, err := os.ReadFile(tf)
		if err != nil {
			t.Fatal(err)
		}
		var f bankTestFile
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatalf("%s: %v", tf, err)
		}
		ev, err := authz.NewEvaluator(authz.EvaluatorInput{Policies: policies, Schema: readSchema(t), Entities: f.Entities, BundleVersion: 1})
		if err != nil {
			t.Fatalf("%s: NewEvaluator: %v", tf, err)
		}
		for _, c := range f.Cases {
			t.Run(filepath.Base(tf)+"/"+c.Name, func(t *testing.T) {
				ctx := map[string]any{}
				for k, v := range f.Context {
					ctx[k] = v
				}
				for k, v := range c.Context {
					ctx[k] = v
				}
				cj, _ := json.Marshal(ctx)
				var rec cedar.Record
				if err := rec.UnmarshalJSON(cj); err != nil {
					t.Fatalf("context: %v", err)
				}
				req := authz.Request{Principal: uid(c.Principal.Type, c.Principal.ID), Action: action(c.Action),
					Resource: uid(c.Resource.Type, c.Resource.ID), Context: rec}
				if len(c.Entities) > 0 {
					var em cedar.EntityMap
					if err := json.Unmarshal(c.Entities, &em); err != nil {
						t.Fatalf("case entities: %v", err)
					}
					req.Entities = em
				}
				d := ev.Decide(req)
				if d.Allowed != (c.Expect == "allow") {
					t.Errorf("decision %+v, want %s", d, c.Expect)
				}
				if c.Reasons != nil {
					want := slices.Sorted(slices.Values(*c.Reasons))
					if !slices.Equal(d.Reasons, want) && !(len(want) == 0 && len(d.Reasons) == 0) {
						t.Errorf("reasons %q, want %q", d.Reasons, want)
					}
				}
			})
		}
	}
}

func TestNilEvaluatorDenies(t *testing.T) {
	t.Parallel()
	var ev *authz.Evaluator
	d := ev.Decide(authz.Request{Principal: uid("User", "a"), Action: action("read"), Resource: uid("Account", "b")})
	if d.Allowed || d.Refusal != authz.RefusalNoBundle || ev.BundleVersion() != 0 {
		t.Errorf("nil evaluator: %+v", d)
	}
}
