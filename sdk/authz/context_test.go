package authz_test

import (
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulwarksec/bulwark/sdk/authz"
)

func TestContextRecord(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 22, 21, 30, 0, 0, time.FixedZone("X", 5*3600)) // 16:30 UTC
	amt := int64(1_500_000)
	tests := []struct {
		name string
		ctx  authz.Context
		want string
	}{
		{name: "hour from the time in UTC", ctx: authz.Context{Time: at, Hour: -1, Zone: "secure", Region: "eu", MFA: true, RiskScore: 20, Scopes: []string{"b", "a"}},
			want: `{"mfa":true,"region":"eu","riskScore":20,"time":{"epoch":1795365000,"hour":16},"tokenScopes":["a","b"],"zone":"secure"}`},
		{name: "business hour given", ctx: authz.Context{Time: at, Hour: 9, Amount: &amt},
			want: `{"amount":1500000,"mfa":false,"region":"","riskScore":0,"time":{"epoch":1795365000,"hour":9},"tokenScopes":[],"zone":""}`},
		{name: "zero value", ctx: authz.Context{},
			want: `{"mfa":false,"region":"","riskScore":0,"time":{"epoch":0,"hour":0},"tokenScopes":[],"zone":""}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := tc.ctx.Record()
			var want cedar.Record
			if err := want.UnmarshalJSON([]byte(tc.want)); err != nil {
				t.Fatal(err)
			}
			if !rec.Equal(want) {
				got, _ := rec.MarshalJSON()
				t.Errorf("Record() = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestContextRecordMatchesSchema decides with a policy that reads every
// field of the schema's RequestContext: a field missing or of the wrong
// type would be an evaluation error.
func TestContextRecordMatchesSchema(t *testing.T) {
	t.Parallel()
	ev, err := authz.NewEvaluator(authz.EvaluatorInput{
		Schema: readSchema(t),
		Policies: map[string]string{"ctx.cedar": `permit (principal, action, resource) when {
  context.time.epoch > 0 && context.time.hour == 10 && context.zone == "secure" && context.region == "eu" &&
  context has amount && context.amount == 5 && context.mfa && context.riskScore == 3 && context.tokenScopes.contains("pay")
};`},
	})
	if err != nil {
		t.Fatal(err)
	}
	amt := int64(5)
	d := ev.Decide(authz.Request{Principal: uid("User", "u"), Action: action("read"), Resource: uid("Account", "a"),
		Context: authz.Context{Time: testIssued, Hour: 10, Zone: "secure", Region: "eu", Amount: &amt, MFA: true, RiskScore: 3, Scopes: []string{"pay"}}.Record()})
	if !d.Allowed {
		t.Errorf("decision %+v, want allowed", d)
	}
}
