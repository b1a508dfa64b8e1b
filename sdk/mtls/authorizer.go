package mtls

import (
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrUnauthorized is wrapped by every refusal of an [Authorizer] built by
// this package: the peer's SVID is valid, but its SPIFFE ID may not
// connect.
var ErrUnauthorized = errors.New("mtls: peer not authorized")

// An Authorizer decides whether a peer, whose X.509-SVID has been verified
// against the trust bundle, may connect. It returns nil to allow and an
// error to refuse; the handshake fails with that error.
//
// It runs during every TLS handshake, resumed ones included, so it must be
// fast and must not block on the network. A nil Authorizer refuses every
// peer.
type Authorizer func(id spiffeid.ID) error

// AuthorizeID allows exactly the peer with SPIFFE ID id.
func AuthorizeID(id spiffeid.ID) Authorizer {
	return func(peer spiffeid.ID) error {
		if id.IsZero() || peer != id {
			return fmt.Errorf("%w: %s is not %s", ErrUnauthorized, peer, id)
		}
		return nil
	}
}

// AuthorizeOneOf allows the peers whose SPIFFE ID is one of ids. With no
// ids it refuses every peer.
func AuthorizeOneOf(ids ...spiffeid.ID) Authorizer {
	allowed := make(map[spiffeid.ID]struct{}, len(ids))
	for _, id := range ids {
		if !id.IsZero() {
			allowed[id] = struct{}{}
		}
	}
	return func(peer spiffeid.ID) error {
		if _, ok := allowed[peer]; !ok {
			return fmt.Errorf("%w: %s is not one of the %d allowed IDs", ErrUnauthorized, peer, len(allowed))
		}
		return nil
	}
}

// AuthorizeMemberOf allows every peer of trust domain td. With the zero
// trust domain it refuses every peer.
func AuthorizeMemberOf(td spiffeid.TrustDomain) Authorizer {
	return func(peer spiffeid.ID) error {
		if td.IsZero() || !peer.MemberOf(td) {
			return fmt.Errorf("%w: %s is not a member of trust domain %q", ErrUnauthorized, peer, td)
		}
		return nil
	}
}

// AuthorizeFunc is the hook for decisions other than by SPIFFE ID or trust
// domain, such as a policy engine's: decide is called with the peer's
// verified SPIFFE ID, and an error it returns refuses the peer (wrapped in
// [ErrUnauthorized]). A nil decide refuses every peer.
//
//	authz := mtls.AuthorizeFunc(func(peer spiffeid.ID) error {
//		if !policy.Allows(peer, "connect", "payments") {
//			return errors.New("denied by policy")
//		}
//		return nil
//	})
func AuthorizeFunc(decide func(id spiffeid.ID) error) Authorizer {
	return func(peer spiffeid.ID) error {
		if decide == nil {
			return fmt.Errorf("%w: no decision function", ErrUnauthorized)
		}
		if err := decide(peer); err != nil {
			if errors.Is(err, ErrUnauthorized) {
				return err
			}
			return fmt.Errorf("%w: %s: %w", ErrUnauthorized, peer, err)
		}
		return nil
	}
}

// authorize runs a, refusing when a is nil.
func (a Authorizer) authorize(id spiffeid.ID) error {
	if a == nil {
		return fmt.Errorf("%w: no authorizer configured", ErrUnauthorized)
	}
	return a(id)
}
