package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulwarksec/bulwark/internal/policy"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

// echoRoute is the gateway route of the bench (a Cedar Route entity ID).
const echoRoute = "bench-echo"

// benchPolicies are added to the reference bank policies: the gateway may
// call payments' agent (the upstream of the route), and the bench client
// with the bench scope may write the route.
var benchPolicies = map[string]string{"bench.cedar": `
@id("bench-gateway-call-payments")
permit (
    principal == Bulwark::Service::"` + workloadID(gatewayName).String() + `",
    action == Bulwark::Action::"call",
    resource == Bulwark::Service::"` + workloadID(paymentsName).String() + `"
);

@id("bench-client-write-echo")
permit (
    principal == Bulwark::Client::"` + benchClientID + `",
    action == Bulwark::Action::"write",
    resource == Bulwark::Route::"` + echoRoute + `"
)
when { context.tokenScopes.contains("` + benchScope + `") };
`}

// newEvaluator builds an evaluator from the policies in dir (the reference
// bank policies), benchPolicies, the embedded schema and the entities of
// dir's test files (the first definition of an entity wins).
func newEvaluator(dir string) (*authz.Evaluator, error) {
	policies := map[string]string{}
	for k, v := range benchPolicies {
		policies[k] = v
	}
	names, err := filepath.Glob(filepath.Join(dir, "*"+policy.PolicyExt))
	if err != nil || len(names) == 0 {
		return nil, fmt.Errorf("no policies under %s (run from the repository root or set -policies): %v", dir, err)
	}
	for _, n := range names {
		text, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("read policy: %w", err)
		}
		policies[filepath.Base(n)] = string(text)
	}
	tests, err := filepath.Glob(filepath.Join(dir, "*"+policy.TestExt))
	if err != nil {
		return nil, fmt.Errorf("policy tests under %s: %w", dir, err)
	}
	seen := map[string]bool{}
	var merged []json.RawMessage
	for _, n := range tests {
		raw, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("read policy test: %w", err)
		}
		var tf struct {
			Entities []json.RawMessage `json:"entities"`
		}
		if err := json.Unmarshal(raw, &tf); err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		for _, e := range tf.Entities {
			var id struct {
				UID json.RawMessage `json:"uid"`
			}
			if err := json.Unmarshal(e, &id); err != nil {
				return nil, fmt.Errorf("%s: entity: %w", n, err)
			}
			var key cedar.EntityUID
			if err := json.Unmarshal(id.UID, &key); err != nil {
				return nil, fmt.Errorf("%s: entity uid: %w", n, err)
			}
			if !seen[key.String()] {
				seen[key.String()] = true
				merged = append(merged, e)
			}
		}
	}
	entities, err := json.Marshal(merged)
	if err != nil {
		return nil, fmt.Errorf("entities: %w", err)
	}
	ev, err := authz.NewEvaluator(authz.EvaluatorInput{
		Policies: policies, Schema: string(policy.SchemaText()), Entities: entities, BundleVersion: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	return ev, nil
}
