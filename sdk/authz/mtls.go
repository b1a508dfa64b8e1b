package authz

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Entity types and the action namespace of Bulwark's schema used by the
// helpers of this package.
const (
	// ServiceType is the entity type of a workload, keyed by SPIFFE ID.
	ServiceType = cedar.EntityType("Bulwark::Service")
	// ActionType is the entity type of Bulwark's actions.
	ActionType = cedar.EntityType("Bulwark::Action")
)

// ActionUID returns the UID of a Bulwark action, e.g. Bulwark::Action::"call".
func ActionUID(name string) cedar.EntityUID {
	return cedar.NewEntityUID(ActionType, cedar.String(name))
}

// ServiceUID returns the entity UID of a workload: Bulwark::Service::"<id>".
func ServiceUID(id spiffeid.ID) cedar.EntityUID {
	return cedar.NewEntityUID(ServiceType, cedar.String(id.String()))
}

// PeerAuthorizer returns a decision function for mTLS servers that asks
// the policy whether the peer (principal Bulwark::Service::"<peer ID>")
// may do action on this service (resource Bulwark::Service::"<self>").
// ctx, if not nil, supplies the request context; otherwise it is the
// current time and nothing else. A denial (including no bundle or a stale
// one) is an error naming the reasons. Use it with sdk/mtls:
//
//	cfg.Authorizer = mtls.AuthorizeFunc(client.PeerAuthorizer("call", self, nil))
//
// (sdk/authz does not import sdk/mtls, to keep its dependencies small.)
func (c *Client) PeerAuthorizer(action string, self spiffeid.ID, ctx func() Context) func(peer spiffeid.ID) error {
	act := ActionUID(action)
	res := ServiceUID(self)
	return func(peer spiffeid.ID) error {
		if self.IsZero() {
			return errors.New("no SPIFFE ID for this service")
		}
		rc := Context{Time: time.Now(), Hour: -1}
		if ctx != nil {
			rc = ctx()
		}
		d := c.Decide(Request{Principal: ServiceUID(peer), Action: act, Resource: res, Context: rc.Record()})
		if d.Allowed {
			return nil
		}
		return denialError(d)
	}
}

// denialError describes why a decision denied.
func denialError(d Decision) error {
	switch {
	case d.Refusal != "":
		return fmt.Errorf("denied by policy bundle %d: %s", d.BundleVersion, d.Refusal)
	case len(d.Errors) > 0:
		return fmt.Errorf("denied by policy bundle %d: evaluation errors in %s", d.BundleVersion, strings.Join(d.Errors, "; "))
	case len(d.Reasons) > 0:
		return fmt.Errorf("denied by policy bundle %d: forbidden by %s", d.BundleVersion, strings.Join(d.Reasons, ", "))
	default:
		return fmt.Errorf("denied by policy bundle %d: no policy permits it", d.BundleVersion)
	}
}
