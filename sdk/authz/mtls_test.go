package authz_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/mtls"
)

func TestPeerAuthorizer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := testContent(1)
	c.Schema = `namespace Bulwark {
  entity Service;
  action "call" appliesTo { principal: [Service], resource: [Service], context: { zone: String } };
}`
	c.Entities = nil
	c.Policies = map[string]string{"svc.cedar": `
@id("payments-call-ledger")
permit (principal == Bulwark::Service::"spiffe://bank.example/payments", action == Bulwark::Action::"call",
        resource == Bulwark::Service::"spiffe://bank.example/ledger");
@id("secure-zone-only")
forbid (principal, action, resource) unless { context.zone == "secure" };`}
	h.server.publish(signedRaw(t, c, h.priv), 1)
	client := h.start(t, h.config(""))
	waitVersion(t, client, 1, eventually)

	ledger := spiffeid.RequireFromString("spiffe://bank.example/ledger")
	zone := "secure"
	authorize := mtls.AuthorizeFunc(client.PeerAuthorizer("call", ledger, func() authz.Context { return authz.Context{Time: testIssued, Hour: -1, Zone: zone} }))
	tests := []struct {
		name, peer, zone string
		wantErr          string
	}{
		{name: "allowed peer", peer: "spiffe://bank.example/payments", zone: "secure"},
		{name: "peer without a permit", peer: "spiffe://bank.example/notifications", zone: "secure", wantErr: "no policy permits it"},
		{name: "forbidden by context", peer: "spiffe://bank.example/payments", zone: "public", wantErr: "forbidden by secure-zone-only"},
	}
	for _, tc := range tests {
		zone = tc.zone
		err := authorize(spiffeid.RequireFromString(tc.peer))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v, want allowed", tc.name, err)
		case tc.wantErr != "" && (err == nil || !errors.Is(err, mtls.ErrUnauthorized) || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: %v, want ErrUnauthorized mentioning %q", tc.name, err, tc.wantErr)
		}
	}
	// Past the staleness limit every peer is refused.
	h.clock.Set(testIssued.Add(authz.DefaultMaxStaleness + 1))
	zone = "secure"
	if err := authorize(spiffeid.RequireFromString("spiffe://bank.example/payments")); err == nil || !strings.Contains(err.Error(), authz.RefusalStale) {
		t.Errorf("stale bundle: %v, want a refusal", err)
	}
}
