package policy

import (
	"slices"
	"strings"
	"testing"

	"github.com/cedar-policy/cedar-go"
)

// engineFor builds an engine from policy text in one file, failing the test
// on any load problem.
func engineFor(t *testing.T, text string) *Engine {
	t.Helper()
	set, err := LoadDir(writeDir(t, map[string]string{"p.cedar": text}))
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	return NewEngine(set)
}

func TestDecide(t *testing.T) {
	t.Parallel()
	alice := cedar.NewEntityUID("Bulwark::User", "alice")
	acct := cedar.NewEntityUID("Bulwark::Account", "a1")
	read := ActionUID("read")
	entities := cedar.EntityMap{
		alice: {UID: alice, Parents: cedar.NewEntityUIDSet(cedar.NewEntityUID("Bulwark::Role", "teller"))},
		acct:  {UID: acct, Attributes: cedar.NewRecord(cedar.RecordMap{"region": cedar.String("eu")})},
	}
	ctx := cedar.NewRecord(cedar.RecordMap{"mfa": cedar.True})
	const (
		permitTeller = `@id("permit-teller") permit (principal in Bulwark::Role::"teller", action, resource);`
		permitAll    = `@id("permit-all") permit (principal, action, resource);`
		forbidNoMFA  = `@id("forbid-no-mfa") forbid (principal, action, resource) unless { context.mfa };`
		forbidEU     = `@id("forbid-eu") forbid (principal, action, resource) when { resource.region == "eu" };`
		permitBroken = `@id("permit-broken") permit (principal, action, resource) when { resource.missing == 1 };`
		forbidBroken = `@id("forbid-broken") forbid (principal, action, resource) when { resource.missing == 1 };`
	)
	tests := []struct {
		name        string
		policies    []string
		ctx         cedar.RecordMap // nil: {mfa: true}
		wantAllowed bool
		wantReasons []string
		wantErrors  []string // substrings, in order
	}{
		{name: "no policies: default deny", policies: nil},
		{name: "no matching permit: default deny", policies: []string{`permit (principal == Bulwark::User::"bob", action, resource);`}},
		{name: "matching permit allows", policies: []string{permitTeller}, wantAllowed: true, wantReasons: []string{"permit-teller"}},
		{name: "all matching permits are reasons", policies: []string{permitTeller, permitAll}, wantAllowed: true,
			wantReasons: []string{"permit-all", "permit-teller"}},
		{name: "forbid wins over permits", policies: []string{permitTeller, permitAll, forbidEU}, wantReasons: []string{"forbid-eu"}},
		{name: "forbid on context", policies: []string{permitAll, forbidNoMFA},
			ctx: cedar.RecordMap{"mfa": cedar.False}, wantReasons: []string{"forbid-no-mfa"}},
		{name: "context satisfies the forbid's unless", policies: []string{permitAll, forbidNoMFA}, wantAllowed: true,
			wantReasons: []string{"permit-all"}},
		{name: "an erroring permit does not allow", policies: []string{permitBroken},
			wantErrors: []string{"permit-broken: "}},
		{name: "an erroring forbid denies despite a permit", policies: []string{permitAll, forbidBroken},
			wantErrors: []string{"forbid-broken: "}},
		{name: "an error denies even when a forbid also matched", policies: []string{permitAll, forbidEU, permitBroken},
			wantReasons: []string{"forbid-eu"}, wantErrors: []string{"permit-broken: "}},
		{name: "missing context attribute is an error, not an allow", policies: []string{permitAll, forbidNoMFA},
			ctx: cedar.RecordMap{}, wantErrors: []string{"forbid-no-mfa: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := engineFor(t, strings.Join(tt.policies, "\n"))
			c := ctx
			if tt.ctx != nil {
				c = cedar.NewRecord(tt.ctx)
			}
			d := e.Decide(Request{Principal: alice, Action: read, Resource: acct, Context: c}, entities)
			if d.Allowed != tt.wantAllowed {
				t.Errorf("Allowed = %v, want %v (decision %+v)", d.Allowed, tt.wantAllowed, d)
			}
			if !slices.Equal(d.Reasons, tt.wantReasons) {
				t.Errorf("Reasons = %v, want %v", d.Reasons, tt.wantReasons)
			}
			if len(d.Errors) != len(tt.wantErrors) {
				t.Fatalf("Errors = %v, want %d", d.Errors, len(tt.wantErrors))
			}
			for i, want := range tt.wantErrors {
				if !strings.HasPrefix(d.Errors[i], want) {
					t.Errorf("Errors[%d] = %q, want prefix %q", i, d.Errors[i], want)
				}
			}
		})
	}
}

func TestDecideUnknownEntitiesAndActions(t *testing.T) {
	t.Parallel()
	e := NewEngine(mustLoad(t, bankDir))
	ctx := cedar.NewRecord(cedar.RecordMap{"mfa": cedar.True})
	tests := []struct {
		name string
		req  Request
	}{
		{"unknown action", Request{Principal: cedar.NewEntityUID("Bulwark::User", "alice"), Action: ActionUID("delete"),
			Resource: cedar.NewEntityUID("Bulwark::Account", "a1"), Context: ctx}},
		{"unknown principal type", Request{Principal: cedar.NewEntityUID("Bulwark::Robot", "r2"), Action: ActionUID("read"),
			Resource: cedar.NewEntityUID("Bulwark::Account", "a1"), Context: ctx}},
		{"zero request", Request{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if d := e.Decide(tt.req, nil); d.Allowed {
				t.Errorf("Decide = %+v, want deny", d)
			}
		})
	}
}

func mustLoad(t testing.TB, dir string) *Set {
	t.Helper()
	set, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir(%s): %v", dir, err)
	}
	return set
}

func TestDecideNilSetDenies(t *testing.T) {
	t.Parallel()
	if d := NewEngine(nil).Decide(Request{Action: ActionUID("read")}, nil); d.Allowed || len(d.Reasons) > 0 {
		t.Errorf("Decide on a nil set = %+v, want a default deny", d)
	}
}

// TestDecideConcurrent runs decisions from many goroutines; with -race it
// checks that the engine is safe for concurrent use.
func TestDecideConcurrent(t *testing.T) {
	t.Parallel()
	e, req, entities := bankTransfer(t)
	done := make(chan Decision)
	for range 8 {
		go func() {
			var d Decision
			for range 100 {
				d = e.Decide(req, entities)
			}
			done <- d
		}()
	}
	for range 8 {
		if d := <-done; !d.Allowed || !slices.Equal(d.Reasons, []string{"teller-transfer"}) {
			t.Errorf("Decide = %+v, want allow by teller-transfer", d)
		}
	}
}

// bankTransfer returns the bank engine and a small transfer by a teller.
func bankTransfer(t testing.TB) (*Engine, Request, cedar.EntityMap) {
	t.Helper()
	e := NewEngine(mustLoad(t, bankDir))
	alice := cedar.NewEntityUID("Bulwark::User", "alice")
	eu := cedar.NewEntityUID("Bulwark::Region", "eu")
	acct := cedar.NewEntityUID("Bulwark::Account", "a1")
	pay := cedar.NewEntityUID("Bulwark::Payment", "p1")
	entities := cedar.EntityMap{
		alice: {UID: alice, Parents: cedar.NewEntityUIDSet(cedar.NewEntityUID("Bulwark::Role", "teller")),
			Attributes: cedar.NewRecord(cedar.RecordMap{"branch": cedar.String("london")})},
		eu: {UID: eu, Attributes: cedar.NewRecord(cedar.RecordMap{"code": cedar.String("eu")})},
		acct: {UID: acct, Attributes: cedar.NewRecord(cedar.RecordMap{
			"owner": cedar.NewEntityUID("Bulwark::User", "carol"), "region": eu, "branch": cedar.String("london")})},
		pay: {UID: pay, Attributes: cedar.NewRecord(cedar.RecordMap{
			"account": acct, "amount": cedar.Long(5000), "currency": cedar.String("EUR")})},
	}
	ctx := cedar.NewRecord(cedar.RecordMap{
		"time":        cedar.NewRecord(cedar.RecordMap{"epoch": cedar.Long(1795000000), "hour": cedar.Long(10)}),
		"zone":        cedar.String("internal"),
		"region":      cedar.String("eu"),
		"mfa":         cedar.False,
		"riskScore":   cedar.Long(10),
		"tokenScopes": cedar.NewSet(),
	})
	return e, Request{Principal: alice, Action: ActionUID("transfer"), Resource: pay, Context: ctx}, entities
}

// BenchmarkDecide measures one decision against the bank policies, entities
// and context prepared in advance.
func BenchmarkDecide(b *testing.B) {
	e, req, entities := bankTransfer(b)
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Decide(req, entities); !d.Allowed {
			b.Fatalf("Decide = %+v", d)
		}
	}
}
