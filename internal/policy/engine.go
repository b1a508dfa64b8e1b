package policy

import (
	"slices"

	"github.com/cedar-policy/cedar-go"
)

// Request is one authorization question: may Principal do Action on
// Resource, given Context?
type Request struct {
	Principal cedar.EntityUID
	Action    cedar.EntityUID
	Resource  cedar.EntityUID
	Context   cedar.Record
}

// Decision is the engine's answer.
type Decision struct {
	// Allowed is true only when at least one permit policy matched, no
	// forbid policy matched, and no policy failed to evaluate.
	Allowed bool
	// Reasons are the IDs of the determining policies, sorted: the matching
	// forbids when denied by a forbid, the matching permits when allowed.
	// Empty for a default deny and for a denial caused only by errors.
	Reasons []string
	// Errors are "policyID: message" for each policy that failed to
	// evaluate, sorted.
	Errors []string
}

// Engine decides requests against one policy set. It is immutable and safe
// for concurrent use.
type Engine struct {
	policies *cedar.PolicySet
}

// NewEngine returns an engine for set; a nil set denies everything. The
// engine does not see later changes to set.
func NewEngine(set *Set) *Engine {
	ps := cedar.NewPolicySet()
	if set == nil {
		return &Engine{policies: ps}
	}
	for _, p := range set.policies {
		ps.Add(cedar.PolicyID(p.ID), p.Cedar)
	}
	return &Engine{policies: ps}
}

// Decide answers req using entities for attribute and membership lookups.
//
// It denies by default: without a matching permit the answer is deny; a
// matching forbid overrides every permit; and any evaluation error (a
// missing entity or attribute, an overflow) denies, because the failing
// policy might have been a forbid that should have applied.
func (e *Engine) Decide(req Request, entities cedar.EntityMap) Decision {
	dec, diag := cedar.Authorize(e.policies, entities, cedar.Request{
		Principal: req.Principal,
		Action:    req.Action,
		Resource:  req.Resource,
		Context:   req.Context,
	})
	var d Decision
	for _, er := range diag.Errors {
		d.Errors = append(d.Errors, string(er.PolicyID)+": "+er.Message)
	}
	slices.Sort(d.Errors)
	if dec == cedar.Allow && len(d.Errors) > 0 {
		// The permits that matched do not determine a denial by error.
		return d
	}
	for _, r := range diag.Reasons {
		d.Reasons = append(d.Reasons, string(r.PolicyID))
	}
	slices.Sort(d.Reasons)
	d.Allowed = dec == cedar.Allow && len(d.Errors) == 0
	return d
}
