package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulwarksec/bulwark/internal/policy"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

// bankPolicyDir holds the reference bank policies and their *.test.json
// files, relative to bench/.
const bankPolicyDir = "../examples/policies/bank"

// minLatencySamples is the least number of decisions the latency
// percentiles are computed over.
const minLatencySamples = 200_000

// loadBankEvaluator builds an evaluator from the reference bank policies,
// the embedded schema and the entities of every test file (merged; the
// first definition of an entity wins).
func loadBankEvaluator(b *testing.B) *authz.Evaluator {
	b.Helper()
	policies := map[string]string{}
	names, err := filepath.Glob(filepath.Join(bankPolicyDir, "*"+policy.PolicyExt))
	if err != nil || len(names) == 0 {
		b.Fatalf("no policies under %s: %v", bankPolicyDir, err)
	}
	for _, n := range names {
		text, err := os.ReadFile(n)
		if err != nil {
			b.Fatal(err)
		}
		policies[filepath.Base(n)] = string(text)
	}
	tests, err := filepath.Glob(filepath.Join(bankPolicyDir, "*"+policy.TestExt))
	if err != nil || len(tests) == 0 {
		b.Fatalf("no tests under %s: %v", bankPolicyDir, err)
	}
	seen := map[string]bool{}
	var merged []json.RawMessage
	for _, n := range tests {
		raw, err := os.ReadFile(n)
		if err != nil {
			b.Fatal(err)
		}
		var tf struct {
			Entities []json.RawMessage `json:"entities"`
		}
		if err := json.Unmarshal(raw, &tf); err != nil {
			b.Fatalf("%s: %v", n, err)
		}
		for _, e := range tf.Entities {
			var id struct {
				UID json.RawMessage `json:"uid"`
			}
			if err := json.Unmarshal(e, &id); err != nil {
				b.Fatalf("%s: %v", n, err)
			}
			var key cedar.EntityUID
			if err := json.Unmarshal(id.UID, &key); err != nil {
				b.Fatalf("%s: entity uid: %v", n, err)
			}
			if seen[key.String()] {
				continue
			}
			seen[key.String()] = true
			merged = append(merged, e)
		}
	}
	entities, err := json.Marshal(merged)
	if err != nil {
		b.Fatal(err)
	}
	ev, err := authz.NewEvaluator(authz.EvaluatorInput{
		Policies: policies, Schema: string(policy.SchemaText()), Entities: entities, BundleVersion: 1,
	})
	if err != nil {
		b.Fatal(err)
	}
	return ev
}

// decisionCase is one kind of request an enforcement point asks about; the
// benchmark builds its UIDs and context on every decision.
type decisionCase struct {
	principalType, principal string
	action                   string
	resourceType, resource   string
	mfa                      bool
	amount                   int64 // 0: no amount in the context
	want                     bool
}

// decisionMix: a teller reads an account of her branch, payments calls
// ledger, a large approved transfer with MFA, and the same without MFA.
var decisionMix = []decisionCase{
	{principalType: "Bulwark::User", principal: "alice", action: "read",
		resourceType: "Bulwark::Account", resource: "acc-london-1", want: true},
	{principalType: "Bulwark::Service", principal: "spiffe://bulwark.local/ns/bank/sa/payments", action: "call",
		resourceType: "Bulwark::Service", resource: "spiffe://bulwark.local/ns/bank/sa/ledger", want: true},
	{principalType: "Bulwark::User", principal: "alice", action: "transfer",
		resourceType: "Bulwark::Payment", resource: "pay-large-approved", mfa: true, amount: 2_500_000, want: true},
	{principalType: "Bulwark::User", principal: "alice", action: "transfer",
		resourceType: "Bulwark::Payment", resource: "pay-large-approved", amount: 2_500_000, want: false},
}

// BenchmarkEmbeddedDecision measures an embedded sdk/authz decision over
// the reference bank policies, including building the request's entity
// UIDs and context record. It reports the p50 and p99 latency of single
// decisions (per-call clock deltas over at least minLatencySamples
// decisions).
func BenchmarkEmbeddedDecision(b *testing.B) {
	ev := loadBankEvaluator(b)
	// decide builds and decides the i-th request of the mix, arriving at
	// now (the business hour is fixed at 10:00 so that the teller's read
	// is within business hours whenever the benchmark runs).
	decide := func(i int, now time.Time) authz.Decision {
		c := &decisionMix[i%len(decisionMix)]
		ctx := authz.Context{Time: now, Hour: 10, Zone: "internal", Region: "eu", MFA: c.mfa, RiskScore: 10}
		if c.amount != 0 {
			ctx.Amount = &c.amount
		}
		return ev.Decide(authz.Request{
			Principal: cedar.NewEntityUID(cedar.EntityType(c.principalType), cedar.String(c.principal)),
			Action:    cedar.NewEntityUID("Bulwark::Action", cedar.String(c.action)),
			Resource:  cedar.NewEntityUID(cedar.EntityType(c.resourceType), cedar.String(c.resource)),
			Context:   ctx.Record(),
		})
	}
	for i := range decisionMix {
		if d := decide(i, time.Now()); d.Allowed != decisionMix[i].want {
			b.Fatalf("case %d: decision %+v, want allowed=%v", i, d, decisionMix[i].want)
		}
	}
	lat := make([]time.Duration, 0, max(b.N, minLatencySamples))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		decide(i, start)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	for i := len(lat); i < minLatencySamples; i++ {
		start := time.Now()
		decide(i, start)
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := int(float64(len(lat))*p+0.5) - 1
		return float64(lat[min(max(i, 0), len(lat)-1)].Nanoseconds())
	}
	b.ReportMetric(pct(0.50), "p50-ns")
	b.ReportMetric(pct(0.99), "p99-ns")
}
