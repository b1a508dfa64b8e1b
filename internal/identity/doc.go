// Package identity is Bulwark's OAuth 2.0 / OpenID Connect authorization
// server, built to the FAPI 2.0 Security Profile on go-jose: discovery and
// a rotating JWKS; confidential clients authenticating with private_key_jwt
// or mutual TLS and public clients with PKCE; local users with argon2id
// passwords, lockout and TOTP; the authorization-code (PKCE S256, PAR),
// client-credentials, refresh-token and token-exchange grants; JWT access
// tokens (RFC 9068) sender-constrained by DPoP or mTLS; introspection,
// revocation and a revocation feed for verifiers. Every security-relevant
// action is an audit event.
//
// Grant handlers live one flow a file (flow_*.go); OAuth errors are the
// immutable sentinels of errors.go.
package identity
