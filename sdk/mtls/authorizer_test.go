package mtls_test

import (
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/sdk/mtls"
)

func TestAuthorizers(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("bulwark.test")
	cart := spiffeid.RequireFromString(cartID)
	evil := spiffeid.RequireFromString("spiffe://evil.test/ns/shop/sa/checkout")
	errPolicy := errors.New("denied by policy")
	tests := []struct {
		name  string
		authz mtls.Authorizer
		allow []spiffeid.ID
		deny  []spiffeid.ID
	}{
		{name: "ID", authz: mtls.AuthorizeID(checkout), allow: []spiffeid.ID{checkout}, deny: []spiffeid.ID{cart, evil, {}}},
		{name: "zero ID", authz: mtls.AuthorizeID(spiffeid.ID{}), deny: []spiffeid.ID{checkout, {}}},
		{name: "one of", authz: mtls.AuthorizeOneOf(checkout, payments), allow: []spiffeid.ID{checkout, payments}, deny: []spiffeid.ID{cart, evil, {}}},
		{name: "one of nothing", authz: mtls.AuthorizeOneOf(), deny: []spiffeid.ID{checkout, {}}},
		{name: "one of zero IDs", authz: mtls.AuthorizeOneOf(spiffeid.ID{}), deny: []spiffeid.ID{checkout, {}}},
		{name: "member of", authz: mtls.AuthorizeMemberOf(td), allow: []spiffeid.ID{checkout, cart}, deny: []spiffeid.ID{evil, {}}},
		{name: "member of zero trust domain", authz: mtls.AuthorizeMemberOf(spiffeid.TrustDomain{}), deny: []spiffeid.ID{checkout, {}}},
		{
			name: "func",
			authz: mtls.AuthorizeFunc(func(id spiffeid.ID) error {
				if id == cart {
					return nil
				}
				return errPolicy
			}),
			allow: []spiffeid.ID{cart},
			deny:  []spiffeid.ID{checkout, evil},
		},
		{name: "nil func", authz: mtls.AuthorizeFunc(nil), deny: []spiffeid.ID{checkout}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, id := range tt.allow {
				if err := tt.authz(id); err != nil {
					t.Errorf("%q refused: %v", id, err)
				}
			}
			for _, id := range tt.deny {
				if err := tt.authz(id); !errors.Is(err, mtls.ErrUnauthorized) {
					t.Errorf("%q: error %v, want ErrUnauthorized", id, err)
				}
			}
		})
	}
}

func TestAuthorizeFuncKeepsTheReason(t *testing.T) {
	t.Parallel()
	errPolicy := errors.New("denied by policy")
	err := mtls.AuthorizeFunc(func(spiffeid.ID) error { return errPolicy })(checkout)
	if !errors.Is(err, errPolicy) || !errors.Is(err, mtls.ErrUnauthorized) {
		t.Fatalf("error %v wraps neither the decision's reason nor ErrUnauthorized", err)
	}
}
