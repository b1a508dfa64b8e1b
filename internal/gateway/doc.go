// Package gateway is Bulwark's edge proxy (north-south): every external
// request is correlated, stripped of client-set identity headers, matched to
// a route, rate limited per IP, authenticated (sdk/authn: JWT access tokens,
// DPoP or mTLS binding, revocation), rate limited per client and per user,
// checked for the route's scopes, authorized by the Cedar policy bundle,
// validated against the route's OpenAPI document, screened by the OWASP Core
// Rule Set (Coraza), and only then forwarded over mutual TLS to the agent of
// the route's service, carrying an internal token obtained by token exchange
// (RFC 8693) instead of the caller's token.
//
// Every step fails closed: a refusal answers a JSON error without internal
// detail, is logged without secrets, counted in Prometheus and sent to the
// audit trail with the request's correlation id. Open circuit breakers, an
// unreachable issuer or a stale policy bundle only ever refuse more; they never
// let a request skip a check.
//
// LoadRoutes reads the routes file; New builds a Gateway from it and its
// collaborators; Start is the one-call constructor used by `bulwark gateway`
// and `bulwark dev`.
package gateway
