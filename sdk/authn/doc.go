// Package authn verifies OAuth 2.0 access tokens for a resource server:
// JWT access tokens (RFC 9068) issued by a Bulwark authorization server,
// bearer or sender-constrained by DPoP (RFC 9449) or a client certificate
// (RFC 8705).
//
// # Usage
//
//	v, err := authn.New(ctx, authn.Config{
//		Issuer:   "https://id.example.com",
//		Audience: "https://payments.example.com",
//	})
//	if err != nil { ... }
//	mux.Handle("/v1/transfers", v.Middleware(v.RequireScopes("payments:write")(transfers)))
//
// and in the handler:
//
//	p, _ := authn.FromContext(r.Context())
//	log.Println(p.Subject, p.ClientID, p.Scopes)
//
// For gRPC servers, see package authngrpc.
//
// # What is checked
//
// New reads the issuer's OpenID metadata (whose issuer must equal
// Config.Issuer exactly), its key set (JWKS) and its revocation feed, and
// keeps both current in the background until its context ends: the keys as
// often as the JWKS response's max-age says, and again when a token names
// an unknown kid (at most once per Config.JWKSRefresh, so a flood of made-up
// kids cannot overload the issuer); revocations by long-polling the feed,
// so a revoked token is refused within seconds.
//
// A token is refused unless: it is at most MaxTokenSize bytes of exactly
// three base64url segments; its header has typ at+jwt, a kid found in the
// key set, an alg in the allow-list that fits that key, and none of jwk,
// jku, x5u, x5c or crit; its signature verifies; iss is Config.Issuer; aud
// contains Config.Audience; exp has not passed and nbf and iat are not in
// the future (with Config.Leeway); jti, sub and client_id are present; and
// jti is not revoked. "none" and HMAC algorithms are never accepted.
//
// A token bound to a DPoP key (cnf.jkt) is accepted only with the DPoP
// scheme and a fresh, never-seen DPoP proof for this request signed by that
// key; a token bound to a certificate (cnf.x5t#S256) only over a TLS
// connection where the client presented that certificate.
//
// Verified tokens are cached until they expire, keyed by a hash of the
// signing input and the decoded signature; revocation is checked on every
// use. Every refusal is logged at Warn, without the token, and passed to
// Config.OnRefusal with a stable Reason.
package authn
