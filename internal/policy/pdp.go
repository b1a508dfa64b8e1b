package policy

import (
	"context"

	"github.com/bulwarksec/bulwark/sdk/authz"
)

// Snapshot is an immutable view of what the decision service decides
// with: the active policy set and entity data, at one bundle version.
type Snapshot struct {
	// BundleVersion is the version of the signed bundle that carries this
	// policy set and entity data (0 before the first bundle).
	BundleVersion int64
	// PolicyVersion and EntitiesVersion are the versions of the policy set
	// and of the entity store.
	PolicyVersion   int64
	EntitiesVersion int64
	// Evaluator decides requests; the same evaluator sdk/authz embeds.
	Evaluator *authz.Evaluator
}

// Source gives the decision service the current snapshot. The Repository
// implements it; Snapshot never returns nil (before any policy is pushed
// it returns an evaluator with no policies, which denies everything).
type Source interface {
	Snapshot() *Snapshot
}

// Caller identifies the enforcement point that asked for a decision: the
// SPIFFE ID of its X.509-SVID, or the admin credential's ID.
type Caller struct {
	// Kind is "workload" or "admin".
	Kind string
	// ID is the SPIFFE ID or the admin credential ID.
	ID string
}

type callerKey struct{}

// WithCaller returns ctx carrying the authenticated caller.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller that WithCaller stored, if any.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}
