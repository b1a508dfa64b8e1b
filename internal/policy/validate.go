package policy

import (
	"strconv"

	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

// Validate type-checks every policy of set against s with cedar-go's schema
// validator in strict mode and returns a Problem for each error, at the
// position of the policy it concerns (the validator reports no finer
// position). An empty result means the set is valid.
func Validate(set *Set, s *Schema) []Problem {
	v := validate.New(s.resolved, validate.WithStrict())
	var problems []Problem
	for _, p := range set.policies {
		err := v.Policy("", (*xast.Policy)(p.Cedar.AST()))
		for _, e := range flatten(err) {
			problems = append(problems, Problem{File: p.File, Line: p.Line, Column: p.Column,
				Message: "policy " + strconv.Quote(p.ID) + ": " + e.Error()})
		}
	}
	return problems
}

// flatten unwraps joined errors into a list.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}
