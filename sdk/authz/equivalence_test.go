package authz_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulwarksec/bulwark/sdk/authz"
)

// referenceDecide is internal/policy.Engine's semantics, written out: plain
// cedar.Authorize over every policy and the entities as given (no index,
// no ancestor closure, no scope specialisation).
func referenceDecide(ps *cedar.PolicySet, entities cedar.EntityMap, req authz.Request) authz.Decision {
	var getter cedar.EntityGetter = entities
	if req.Entities != nil {
		merged := maps.Clone(entities)
		for _, e := range req.Entities.(cedar.EntityMap) {
			merged[e.UID] = e
		}
		getter = merged
	}
	dec, diag := cedar.Authorize(ps, getter, cedar.Request{Principal: req.Principal, Action: req.Action, Resource: req.Resource, Context: req.Context})
	var d authz.Decision
	for _, er := range diag.Errors {
		d.Errors = append(d.Errors, string(er.PolicyID)+": "+er.Message)
	}
	slices.Sort(d.Errors)
	if dec == cedar.Allow && len(d.Errors) > 0 {
		return d
	}
	for _, r := range diag.Reasons {
		d.Reasons = append(d.Reasons, string(r.PolicyID))
	}
	slices.Sort(d.Reasons)
	d.Allowed = dec == cedar.Allow && len(d.Errors) == 0
	return d
}

// TestEvaluatorMatchesPlainCedar decides random requests over the
// reference policies and entities both ways: the optimised evaluator must
// give exactly the reference decision whenever it evaluates at all.
func TestEvaluatorMatchesPlainCedar(t *testing.T) {
	t.Parallel()
	for _, dir := range bankDirs {
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		t.Run(filepath.Base(filepath.Dir(dir))+"/"+filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			compareWithReference(t, dir)
		})
	}
}

func compareWithReference(t *testing.T, dir string) {
	policies := map[string]string{}
	names, _ := filepath.Glob(filepath.Join(dir, "*.cedar"))
	ps := cedar.NewPolicySet()
	for _, n := range names {
		text, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		base := filepath.Base(n)
		policies[base] = string(text)
		list, err := cedar.NewPolicyListFromBytes(base, text)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range list {
			id := fmt.Sprintf("%s:%d", base, i)
			if v, ok := p.Annotations()["id"]; ok {
				id = string(v)
			}
			ps.Add(cedar.PolicyID(id), p)
		}
	}
	// Every entity of every test file (first definition wins).
	entities := cedar.EntityMap{}
	tests, _ := filepath.Glob(filepath.Join(dir, "*.test.json"))
	for _, tf := range tests {
		raw, err := os.ReadFile(tf)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Entities []json.RawMessage `json:"entities"`
		}
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
		for _, e := range f.Entities {
			var ent cedar.Entity
			if err := json.Unmarshal(e, &ent); err != nil {
				t.Fatal(err)
			}
			if _, ok := entities[ent.UID]; !ok {
				entities[ent.UID] = ent
			}
		}
	}
	entJSON, err := json.Marshal(entities)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := authz.NewEvaluator(authz.EvaluatorInput{Policies: policies, Schema: readSchema(t), Entities: entJSON})
	if err != nil {
		t.Fatal(err)
	}

	uids := slices.SortedFunc(maps.Keys(entities), func(a, b cedar.EntityUID) int {
		return cmpStrings(a.String(), b.String())
	})
	uids = append(uids, uid("User", "stranger"), uid("Service", "spiffe://bulwark.local/ns/bank/sa/payments"),
		uid("Service", "spiffe://bulwark.local/ns/bank/sa/ledger"), uid("Payment", "unknown"))
	actions := []string{"read", "write", "transfer", "approve", "call", "readSecret", "readAudit", "deleteAudit", "disableAudit"}
	zones := []string{"secure", "internal", "public"}
	regions := []string{"eu", "us"}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(n int) int { return rng.IntN(n) }
	evaluated, allowed, forbidden, failed := 0, 0, 0, 0
	const want = 3000
	for i := 0; i < 200_000 && evaluated < want; i++ {
		c := authz.Context{Hour: pick(24), Zone: zones[pick(len(zones))], Region: regions[pick(len(regions))],
			MFA: pick(2) == 0, RiskScore: pick(100)}
		if pick(2) == 0 {
			a := int64(pick(3_000_000))
			c.Amount = &a
		}
		req := authz.Request{Principal: uids[pick(len(uids))], Action: action(actions[pick(len(actions))]),
			Resource: uids[pick(len(uids))], Context: c.Record()}
		if pick(4) == 0 {
			// The enforcement point knows the principal: it overlays a
			// version of it with other roles.
			roles := []cedar.EntityUID{uid("Role", "teller"), uid("Role", "manager"), uid("Role", "admin"), uid("Role", "auditor")}
			p := cedar.Entity{UID: req.Principal, Parents: cedar.NewEntityUIDSet(roles[pick(len(roles))])}
			if old, ok := entities[req.Principal]; ok {
				p.Attributes = old.Attributes
			}
			req.Entities = cedar.EntityMap{req.Principal: p}
		}
		if pick(8) == 0 {
			// A request that puts its action in a group: the evaluator's
			// index by action no longer holds for it.
			em, _ := req.Entities.(cedar.EntityMap)
			if em == nil {
				em = cedar.EntityMap{}
			}
			em[req.Action] = cedar.Entity{UID: req.Action, Parents: cedar.NewEntityUIDSet(action("transfer"))}
			req.Entities = em
		}
		got := ev.Decide(req)
		if got.Refusal != "" {
			continue // the reference has no schema: nothing to compare
		}
		evaluated++
		switch {
		case got.Allowed:
			allowed++
		case len(got.Errors) > 0:
			failed++
		case len(got.Reasons) > 0:
			forbidden++
		}
		want := referenceDecide(ps, entities, req)
		if got.Allowed != want.Allowed || !slices.Equal(got.Reasons, want.Reasons) || !slices.Equal(got.Errors, want.Errors) {
			t.Fatalf("request %d %s %s %s: evaluator %+v, reference %+v", i, req.Principal, req.Action, req.Resource, got, want)
		}
	}
	if evaluated < want {
		t.Errorf("only %d random requests were evaluated, want %d", evaluated, want)
	}
	if allowed == 0 || forbidden == 0 || failed == 0 {
		t.Errorf("the random requests do not cover allows (%d), forbids (%d) and errors (%d)", allowed, forbidden, failed)
	}
	t.Logf("%d requests compared: %d allowed, %d forbidden, %d failed", evaluated, allowed, forbidden, failed)
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
