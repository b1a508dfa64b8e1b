package authz

import (
	"encoding/json"
	"fmt"
	"iter"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/cedar-policy/cedar-go"
	publicast "github.com/cedar-policy/cedar-go/ast"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
)

// Refusals: why a request was denied without evaluating any policy. They
// are the prefixes or whole values of [Decision.Refusal].
const (
	// RefusalNoBundle: the client has no verified bundle yet.
	RefusalNoBundle = "no policy bundle"
	// RefusalStale: the active bundle is older than the maximum staleness.
	RefusalStale = "policy bundle is stale"
	// RefusalUnknownAction prefixes the refusal of an action the schema
	// does not declare.
	RefusalUnknownAction = "unknown action"
)

// EvaluatorInput is what an evaluator is built from (a verified bundle, or
// the control plane's own store).
type EvaluatorInput struct {
	// Policies maps each policy file name to its Cedar text.
	Policies map[string]string
	// Schema is the Cedar schema in the human-readable format. Empty means
	// no schema: every action and entity type is evaluated.
	Schema string
	// Entities is a Cedar JSON entity array; nil or empty means none.
	Entities json.RawMessage
	// BundleVersion is reported in every Decision.
	BundleVersion int64
}

// Request is one authorization question: may Principal do Action on
// Resource, given Context?
type Request struct {
	Principal, Action, Resource cedar.EntityUID
	// Context is the request context (see [Context.Record]).
	Context cedar.Record
	// Entities, if not nil, are looked up before the evaluator's own: what
	// the enforcement point knows about this request (e.g. the payment
	// being made). A request entity replaces the evaluator's entity of the
	// same UID; the ancestors of the evaluator's other entities are those
	// computed when the evaluator was built.
	Entities cedar.EntityGetter
}

// Decision is the answer to a [Request].
type Decision struct {
	// Allowed is true only when at least one permit policy matched, no
	// forbid policy matched, and no policy failed to evaluate.
	Allowed bool
	// Reasons are the IDs of the determining policies, sorted: the matching
	// forbids when denied by a forbid, the matching permits when allowed.
	// Empty for a default deny, a refusal, and a denial caused by errors.
	Reasons []string
	// Errors are "policyID: message" for each policy that failed to
	// evaluate, sorted. Any error denies.
	Errors []string
	// Refusal says why the request was denied without evaluating policies:
	// unknown action, entity type not allowed for the action, no bundle,
	// stale bundle. Empty when policies were evaluated.
	Refusal string
	// BundleVersion is the version of the bundle the decision was made with
	// (0 when there was none).
	BundleVersion int64
}

// Evaluator decides requests against one policy set, schema and entity
// data. It is immutable and safe for concurrent use.
type Evaluator struct {
	version  int64
	entities cedar.EntityMap
	// all holds every policy, in file order.
	all policyList
	// actions indexes the policies by action and entity types; nil when
	// there is no schema.
	actions map[cedar.EntityUID]*actionIndex
}

// actionIndex holds, for one declared action, the policies whose scope can
// match it, by principal and resource type.
type actionIndex struct {
	uid        cedar.EntityUID
	principals []types.EntityType
	resources  []types.EntityType
	byTypes    map[typePair]*policyList
}

type typePair struct {
	principal, resource types.EntityType
}

type policyEntry struct {
	id     cedar.PolicyID
	policy *cedar.Policy
	scope  *ast.Policy
}

// policyList is a cedar.PolicyIterator over a fixed list of policies.
type policyList []policyEntry

// All implements cedar.PolicyIterator.
func (l *policyList) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for i := range *l {
			if !yield((*l)[i].id, (*l)[i].policy) {
				return
			}
		}
	}
}

// NewEvaluatorFromBundle builds an evaluator from a verified bundle,
// reporting the bundle's version in every decision.
func NewEvaluatorFromBundle(vb *VerifiedBundle) (*Evaluator, error) {
	if vb == nil {
		return nil, fmt.Errorf("build evaluator: no bundle")
	}
	return NewEvaluator(EvaluatorInput{
		Policies:      vb.Policies,
		Schema:        vb.Schema,
		Entities:      vb.Entities,
		BundleVersion: vb.Manifest.Version,
	})
}

// NewEvaluator parses the policies, schema and entities of in. Policy IDs
// are the @id annotation or "<file>:<index>" (index 0-based within the
// file). A syntax error or a duplicate policy ID is an error naming
// file:line:col.
func NewEvaluator(in EvaluatorInput) (*Evaluator, error) {
	e := &Evaluator{version: in.BundleVersion}
	if err := e.parsePolicies(in.Policies); err != nil {
		return nil, err
	}
	e.entities = cedar.EntityMap{}
	if raw := strings.TrimSpace(string(in.Entities)); raw != "" && raw != "null" {
		if err := json.Unmarshal(in.Entities, &e.entities); err != nil {
			return nil, fmt.Errorf("build evaluator: entities: %w", err)
		}
	}
	var sch *resolved.Schema
	if strings.TrimSpace(in.Schema) != "" {
		var s schema.Schema
		s.SetFilename("schema.cedarschema")
		if err := s.UnmarshalCedar([]byte(in.Schema)); err != nil {
			return nil, fmt.Errorf("build evaluator: parse schema: %w", err)
		}
		r, err := s.Resolve()
		if err != nil {
			return nil, fmt.Errorf("build evaluator: resolve schema: %w", err)
		}
		sch = r
		// Action entities and their groups come from the schema, as in
		// Cedar; entity data may add to an action's parents.
		for uid, a := range r.Actions {
			ent := a.Entity
			ent.UID = uid
			if have, ok := e.entities[uid]; ok {
				ps := slices.Collect(have.Parents.All())
				ps = append(ps, slices.Collect(ent.Parents.All())...)
				have.Parents = types.NewEntityUIDSet(ps...)
				ent = have
			}
			e.entities[uid] = ent
		}
	}
	closeAncestors(e.entities)
	if sch != nil {
		e.buildIndex(sch)
	}
	return e, nil
}

func (e *Evaluator) parsePolicies(files map[string]string) error {
	type at struct {
		file      string
		line, col int
	}
	seen := map[string]at{}
	for _, file := range slices.Sorted(maps.Keys(files)) {
		list, err := cedar.NewPolicyListFromBytes(file, []byte(files[file]))
		if err != nil {
			return fmt.Errorf("build evaluator: %s", parseErrorText(file, err))
		}
		for i, p := range list {
			id := fmt.Sprintf("%s:%d", file, i)
			if v, ok := p.Annotations()["id"]; ok {
				id = string(v)
			}
			pos := p.Position()
			if prev, dup := seen[id]; dup {
				return fmt.Errorf("build evaluator: %s:%d:%d: duplicate policy id %q (first at %s:%d:%d)",
					file, pos.Line, pos.Column, id, prev.file, prev.line, prev.col)
			}
			seen[id] = at{file, pos.Line, pos.Column}
			e.all = append(e.all, policyEntry{id: cedar.PolicyID(id), policy: p, scope: (*ast.Policy)(p.AST())})
		}
	}
	return nil
}

// cedar-go reports parse errors as text carrying a position of the form
// "<input>:LINE:COL"; these patterns recover it.
var (
	parseErrAt = regexp.MustCompile(`^parse error at <input>:(\d+):(\d+) ("(?:[^"\\]|\\.)*"): `)
	scanErrAt  = regexp.MustCompile(`^<input>:(\d+):(\d+): `)
)

// parseErrorText formats a cedar-go parse error as
// "file:line:col: syntax error ...".
func parseErrorText(file string, err error) string {
	msg := strings.TrimPrefix(err.Error(), "parser error: ")
	if m := parseErrAt.FindStringSubmatch(msg); m != nil {
		rest := msg[len(m[0]):]
		if m[3] != `""` {
			return fmt.Sprintf("%s:%s:%s: syntax error near %s: %s", file, m[1], m[2], m[3], rest)
		}
		return fmt.Sprintf("%s:%s:%s: syntax error: %s", file, m[1], m[2], rest)
	}
	if m := scanErrAt.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s:%s:%s: syntax error: %s", file, m[1], m[2], msg[len(m[0]):])
	}
	return fmt.Sprintf("%s: syntax error: %s", file, strings.ReplaceAll(msg, "<input>", file))
}

// closeAncestors replaces each entity's parents with all its ancestors,
// so that Cedar's `in` (which is transitive) finds them at the first level.
func closeAncestors(m cedar.EntityMap) {
	closed := make(map[cedar.EntityUID][]cedar.EntityUID, len(m))
	var visit func(uid cedar.EntityUID, onPath map[cedar.EntityUID]bool) []cedar.EntityUID
	visit = func(uid cedar.EntityUID, onPath map[cedar.EntityUID]bool) []cedar.EntityUID {
		if c, ok := closed[uid]; ok {
			return c
		}
		ent, ok := m[uid]
		if !ok || onPath[uid] {
			return nil
		}
		onPath[uid] = true
		set := map[cedar.EntityUID]struct{}{}
		for p := range ent.Parents.All() {
			set[p] = struct{}{}
			for _, a := range visit(p, onPath) {
				set[a] = struct{}{}
			}
		}
		delete(onPath, uid)
		out := slices.Collect(maps.Keys(set))
		closed[uid] = out
		return out
	}
	for uid := range m {
		visit(uid, map[cedar.EntityUID]bool{})
	}
	for uid, ent := range m {
		if c := closed[uid]; len(c) != ent.Parents.Len() {
			ent.Parents = types.NewEntityUIDSet(c...)
			m[uid] = ent
		}
	}
}

func (e *Evaluator) buildIndex(sch *resolved.Schema) {
	e.actions = make(map[cedar.EntityUID]*actionIndex, len(sch.Actions))
	variants := map[variantKey]policyEntry{}
	for uid, a := range sch.Actions {
		ai := &actionIndex{uid: uid, byTypes: map[typePair]*policyList{}}
		if a.AppliesTo != nil {
			ai.principals = slices.Clone(a.AppliesTo.Principals)
			ai.resources = slices.Clone(a.AppliesTo.Resources)
		}
		var forAction []int
		for i, p := range e.all {
			if e.actionScopeMatches(p.scope.Action, uid) {
				forAction = append(forAction, i)
			}
		}
		for _, pt := range ai.principals {
			for _, rt := range ai.resources {
				l := policyList{}
				for _, i := range forAction {
					p := e.all[i]
					if typeScopeMatches(p.scope.Principal, pt) && typeScopeMatches(p.scope.Resource, rt) {
						l = append(l, specialize(variants, i, p, pt, rt))
					}
				}
				ai.byTypes[typePair{pt, rt}] = &l
			}
		}
		e.actions[uid] = ai
	}
}

// variantKey names a policy with some of its scope checks removed.
type variantKey struct {
	index               int
	principal, resource ast.IsScopeNode
}

// specialize returns p for requests of the action and entity types it is
// indexed under: its action scope is known to match, and an `is` scope on
// the request's type is known to hold, so those checks are removed (they
// cannot fail to evaluate, so decisions are unchanged). Variants are
// shared through cache.
func specialize(cache map[variantKey]policyEntry, index int, p policyEntry, pt, rt types.EntityType) policyEntry {
	principal := narrowScope(p.scope.Principal, pt)
	resource := narrowScope(p.scope.Resource, rt)
	key := variantKey{index: index, principal: principal, resource: resource}
	if v, ok := cache[key]; ok {
		return v
	}
	cp := *p.scope
	cp.Action = ast.ScopeTypeAll{}
	cp.Principal = principal.(ast.IsPrincipalScopeNode)
	cp.Resource = resource.(ast.IsResourceScopeNode)
	v := policyEntry{id: p.id, policy: cedar.NewPolicyFromAST((*publicast.Policy)(&cp)), scope: p.scope}
	cache[key] = v
	return v
}

// narrowScope removes the type test of a principal or resource scope that
// holds for an entity of type t.
func narrowScope(s ast.IsScopeNode, t types.EntityType) ast.IsScopeNode {
	switch s := s.(type) {
	case ast.ScopeTypeIs:
		if s.Type == t {
			return ast.ScopeTypeAll{}
		}
	case ast.ScopeTypeIsIn:
		if s.Type == t {
			return ast.ScopeTypeIn{Entity: s.Entity}
		}
	}
	return s
}

// actionScopeMatches reports whether an action scope can match the action
// given the evaluator's entities (whose parents are closed).
func (e *Evaluator) actionScopeMatches(s ast.IsActionScopeNode, action cedar.EntityUID) bool {
	in := func(target cedar.EntityUID) bool {
		if target == action {
			return true
		}
		ent, ok := e.entities[action]
		return ok && ent.Parents.Contains(target)
	}
	switch s := s.(type) {
	case ast.ScopeTypeEq:
		return s.Entity == action
	case ast.ScopeTypeIn:
		return in(s.Entity)
	case ast.ScopeTypeInSet:
		return slices.ContainsFunc(s.Entities, in)
	default:
		return true
	}
}

// typeScopeMatches reports whether a principal or resource scope can match
// an entity of type t.
func typeScopeMatches(s ast.IsScopeNode, t types.EntityType) bool {
	switch s := s.(type) {
	case ast.ScopeTypeEq:
		return s.Entity.Type == t
	case ast.ScopeTypeIs:
		return s.Type == t
	case ast.ScopeTypeIsIn:
		return s.Type == t
	default:
		return true
	}
}

// BundleVersion returns the bundle version reported in every decision.
func (e *Evaluator) BundleVersion() int64 {
	if e == nil {
		return 0
	}
	return e.version
}

// overlay looks entities up in the request's getter first.
type overlay struct {
	req  cedar.EntityGetter
	base cedar.EntityMap
}

func (o *overlay) Get(uid cedar.EntityUID) (cedar.Entity, bool) {
	if ent, ok := o.req.Get(uid); ok {
		return ent, true
	}
	ent, ok := o.base[uid]
	return ent, ok
}

// Decide answers req. It denies by default: without a matching permit the
// answer is deny; a matching forbid overrides every permit; any evaluation
// error denies. With a schema, a request whose action is not declared, or
// whose principal or resource type the action does not apply to, is
// refused without evaluation. Decide is safe for concurrent use; a nil
// evaluator denies everything with RefusalNoBundle.
func (e *Evaluator) Decide(req Request) (d Decision) {
	if e == nil {
		return Decision{Refusal: RefusalNoBundle}
	}
	d.BundleVersion = e.version
	defer func() {
		if r := recover(); r != nil {
			d = Decision{BundleVersion: e.version, Errors: []string{fmt.Sprintf("evaluator: internal error: %v", r)}}
		}
	}()
	var entities cedar.EntityGetter = e.entities
	if req.Entities != nil {
		entities = &overlay{req: req.Entities, base: e.entities}
	}
	policies := &e.all
	if e.actions != nil {
		ai, ok := e.actions[req.Action]
		if !ok {
			d.Refusal = RefusalUnknownAction + " " + req.Action.String()
			return d
		}
		l, ok := ai.byTypes[typePair{req.Principal.Type, req.Resource.Type}]
		if !ok {
			d.Refusal = ai.typeRefusal(req.Principal.Type, req.Resource.Type)
			return d
		}
		policies = l
		if req.Entities != nil {
			if _, redefined := req.Entities.Get(req.Action); redefined {
				// The request changes the action's groups: the index may not
				// hold; evaluate every policy.
				policies = &e.all
			}
		}
	}
	dec, diag := cedar.Authorize(policies, entities, cedar.Request{
		Principal: req.Principal,
		Action:    req.Action,
		Resource:  req.Resource,
		Context:   req.Context,
	})
	if len(diag.Errors) > 0 {
		d.Errors = make([]string, len(diag.Errors))
		for i, er := range diag.Errors {
			d.Errors[i] = string(er.PolicyID) + ": " + er.Message
		}
		slices.Sort(d.Errors)
		if dec == cedar.Allow {
			// The permits that matched do not determine a denial by error.
			return d
		}
	}
	if len(diag.Reasons) > 0 {
		d.Reasons = make([]string, len(diag.Reasons))
		for i, r := range diag.Reasons {
			d.Reasons[i] = string(r.PolicyID)
		}
		if len(d.Reasons) > 1 {
			slices.Sort(d.Reasons)
		}
	}
	d.Allowed = dec == cedar.Allow && len(d.Errors) == 0
	return d
}

func (ai *actionIndex) typeRefusal(p, r types.EntityType) string {
	if !slices.Contains(ai.principals, p) {
		return fmt.Sprintf("%s is not a principal type of %s", p, ai.uid)
	}
	return fmt.Sprintf("%s is not a resource type of %s", r, ai.uid)
}
