// Package policy is Bulwark's authorization core: the Cedar schema for
// Bulwark's entities and actions, loading and validating policy sets from
// *.cedar files with file:line:col diagnostics, a default-deny decision
// engine over cedar-go, and the runner for policy tests (*.test.json) kept
// beside the policies.
//
// The central decision service (AuthZEN, Envoy ext_authz), versioning,
// signed bundles and embedded evaluation in sdk/authz build on this package.
package policy
