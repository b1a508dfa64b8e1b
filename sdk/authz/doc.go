// Package authz evaluates Bulwark's Cedar policies inside a service, from
// a signed policy bundle that the control plane publishes.
//
// An [Evaluator] decides requests against one policy set, schema and
// entity data with the same semantics as the control plane's decision
// service: default deny, a matching forbid overrides every permit, and any
// evaluation error denies. With a schema, a request for an undeclared
// action, or with a principal or resource type the action does not apply
// to, is refused with a clear reason and no policy is evaluated. Every
// [Decision] carries the IDs of its determining policies and the bundle
// version it was made with. [Context] builds the request context record
// the schema declares.
//
// A [Client] fetches the bundle from the control plane (long-polling
// GET /v1/policy/bundle with ETags), verifies its Ed25519 signature before
// using it ([VerifyBundle]), never goes back to an older bundle (also
// across restarts, through its cache file), keeps the last good bundle
// when the control plane is unreachable, and denies everything once the
// control plane has not confirmed that bundle for longer than the
// configured maximum staleness (or the bundle has expired). Bundles it
// refuses are reported to [Config.OnRefused] so the service can audit
// them.
package authz
