package authn

import (
	"context"
	"slices"
	"time"
)

// Principal is who a verified access token speaks for. The verifier shares
// one Principal between the requests that present the same token: treat it,
// and its slices and maps, as read-only.
type Principal struct {
	// Subject is the token's sub: a user ID, or the client ID of a
	// client-credentials token.
	Subject string
	// ClientID is the OAuth client the token was issued to.
	ClientID string
	// Scopes are the token's scopes.
	Scopes []string
	// Audience is the token's aud.
	Audience []string
	// Expiry, IssuedAt and AuthTime are exp, iat and auth_time (zero when
	// absent).
	Expiry, IssuedAt, AuthTime time.Time
	// JTI is the token's unique identifier.
	JTI string
	// Actor is the delegation chain (RFC 8693 act claim): the party acting
	// on behalf of Subject, and whoever acted for that party, and so on.
	Actor *Actor
	// Confirmation is what the token is bound to (RFC 7800 cnf), if
	// anything.
	Confirmation Confirmation
	// Claims holds every claim of the token as decoded from JSON.
	Claims map[string]any
}

// Actor is one link of an RFC 8693 delegation chain.
type Actor struct {
	// Subject is the acting party's sub.
	Subject string `json:"sub"`
	// Issuer is the acting party's iss, if given.
	Issuer string `json:"iss,omitempty"`
	// ClientID is the acting party's client_id, if given.
	ClientID string `json:"client_id,omitempty"`
	// Actor is whoever acted for this party, if anyone.
	Actor *Actor `json:"act,omitempty"`
}

// Confirmation is a token's proof-of-possession binding (RFC 7800 cnf).
// At most one field is set.
type Confirmation struct {
	// JKT is the RFC 7638 thumbprint of the DPoP key (RFC 9449).
	JKT string `json:"jkt,omitempty"`
	// X5TS256 is the base64url SHA-256 of the client certificate's DER
	// (RFC 8705).
	X5TS256 string `json:"x5t#S256,omitempty"`
}

// Bound reports whether the token is sender-constrained.
func (c Confirmation) Bound() bool { return c.JKT != "" || c.X5TS256 != "" }

// HasScope reports whether the token carries scope.
func (p *Principal) HasScope(scope string) bool {
	return p != nil && slices.Contains(p.Scopes, scope)
}

// IsUser reports whether the token speaks for a user rather than for a
// client acting on its own behalf. A token obtained by token exchange (it
// has an act claim) carries its subject's type in subject_type, because its
// client_id is then the acting client; any other token's subject is a user
// when it is not its client_id (a client-credentials token has sub =
// client_id).
func (p *Principal) IsUser() bool {
	if p == nil || p.Subject == "" {
		return false
	}
	if p.Actor != nil {
		return p.Claims["subject_type"] == "user"
	}
	return p.Subject != p.ClientID
}

// OriginClient returns the OAuth client the request started from: the
// application the user authorized, which Bulwark's issuer keeps as the
// first actor of an exchanged user token's delegation chain (the innermost
// act); a client's own token, exchanged, started from that client (its
// subject); any other token from its client_id. Behind the gateway every
// internal token's client_id is the gateway's exchange client, so this is
// the client a service should show and audit.
func (p *Principal) OriginClient() string {
	if p == nil {
		return ""
	}
	if p.Actor == nil {
		return p.ClientID
	}
	if !p.IsUser() {
		return p.Subject
	}
	a := p.Actor
	for a.Actor != nil {
		a = a.Actor
	}
	return a.Subject
}

type principalKey struct{}

// NewContext returns a copy of ctx that carries p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the Principal that Middleware or an interceptor put
// in ctx.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}
