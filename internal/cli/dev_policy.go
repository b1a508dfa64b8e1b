package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/bulwarksec/bulwark/examples"
	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/internal/policy"
)

// devPolicyActor is who loads the reference policies in dev mode.
var devPolicyActor = policy.Caller{Kind: "system", ID: "bulwark dev"}

// provisionDevPolicies loads the reference bank policies and the demo
// bank's entities on the first start: a store that already has a policy
// set or entities keeps them (what the developer pushed since wins). The
// reference files name workloads in trust domain bulwark.local; another
// configured trust domain is substituted.
func provisionDevPolicies(ctx context.Context, repo *policy.Repository, trustDomain string) error {
	td := func(s string) string {
		return strings.ReplaceAll(s, "spiffe://bulwark.local/", "spiffe://"+trustDomain+"/")
	}
	snap := repo.Snapshot()
	if snap.PolicyVersion == 0 {
		files, err := examples.BankPolicies()
		if err != nil {
			return fmt.Errorf("reference policies: %w", err)
		}
		for name, text := range files {
			files[name] = td(text)
		}
		if _, err := repo.Push(ctx, files, "reference bank policies (bulwark dev)", devPolicyActor); err != nil {
			return fmt.Errorf("load reference policies: %w", err)
		}
	}
	if snap.EntitiesVersion == 0 {
		ents, err := examples.BankEntities()
		if err != nil {
			return fmt.Errorf("demo bank entities: %w", err)
		}
		if _, err := repo.PutEntities(ctx, []byte(td(string(ents))), true, devPolicyActor); err != nil {
			return fmt.Errorf("load demo bank entities: %w", err)
		}
	}
	return nil
}

// authzenCurl is a working AuthZEN evaluation of the demo bank: may the
// payments service call the ledger?
func authzenCurl(info devinfo.Info) string {
	body := `{"subject":{"type":"Service","id":"spiffe://` + info.TrustDomain + `/ns/bank/sa/payments"},` +
		`"action":{"name":"call"},` +
		`"resource":{"type":"Service","id":"spiffe://` + info.TrustDomain + `/ns/bank/sa/ledger"}}`
	return "curl --cacert " + shellQuote(info.CACertFile) + ` -H "Authorization: Bearer $(cat ` + shellQuote(info.AdminCredentialFile) + `)" \` + "\n" +
		"                       -H 'Content-Type: application/json' -d " + shellQuote(body) + ` \` + "\n" +
		"                       " + info.AuthZENURL + "/access/v1/evaluation"
}
