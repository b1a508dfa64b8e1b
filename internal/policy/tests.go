package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

// TestExt is the extension of policy test files.
const TestExt = ".test.json"

// Namespace is the Cedar namespace of Bulwark's schema.
const Namespace = "Bulwark"

// TestFile is the format of a *.test.json file: shared entities and context,
// and the cases. Unknown fields are an error.
//
// Entities use Cedar's JSON entity format. Context uses Cedar's JSON value
// format; a case's context is merged over the file's (case keys win), and a
// case's entities are added to the file's (case entities win).
type TestFile struct {
	Entities json.RawMessage `json:"entities,omitempty"`
	Context  json.RawMessage `json:"context,omitempty"`
	Cases    []TestCase      `json:"cases"`
}

// TestCase is one request and its expected decision.
type TestCase struct {
	Name      string          `json:"name"`
	Principal EntityRef       `json:"principal"`
	Action    string          `json:"action"`
	Resource  EntityRef       `json:"resource"`
	Context   json.RawMessage `json:"context,omitempty"`
	Entities  json.RawMessage `json:"entities,omitempty"`
	// Expect is "allow" or "deny".
	Expect string `json:"expect"`
	// Reasons, when present, must equal the determining policy IDs (in any
	// order); [] asserts a default deny.
	Reasons *[]string `json:"reasons,omitempty"`
}

// EntityRef names an entity; Type is qualified with the Bulwark namespace
// when it has no "::".
type EntityRef struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

func (r EntityRef) uid() cedar.EntityUID {
	t := r.Type
	if !strings.Contains(t, "::") {
		t = Namespace + "::" + t
	}
	return cedar.NewEntityUID(cedar.EntityType(t), cedar.String(r.ID))
}

// ActionUID returns the UID of a Bulwark action, e.g. Bulwark::Action::"read".
func ActionUID(name string) cedar.EntityUID {
	return cedar.NewEntityUID(Namespace+"::Action", cedar.String(name))
}

// CaseResult is the outcome of one test case.
type CaseResult struct {
	File   string
	Name   string
	Passed bool
	// Got is the engine's decision (zero if the case could not be run).
	Got Decision
	// Failure says why the case failed.
	Failure string
}

// Report is the outcome of a test run.
type Report struct {
	Results []CaseResult
	Passed  int
	Failed  int
}

// RunTests loads the policies of dir, validates them against the Bulwark
// schema, and runs every case of every *.test.json file of dir against
// them. Each request and its entities are checked against the schema before
// it is decided, so a typo in a test fails the case instead of passing as a
// deny. The error reports policies that do not load or validate and test
// files that cannot be read or decoded; failing cases are in the Report.
func RunTests(dir string) (Report, error) {
	s, err := DefaultSchema()
	if err != nil {
		return Report{}, err
	}
	set, problems, err := CheckDir(dir, s)
	if err != nil {
		return Report{}, err
	}
	if len(problems) > 0 {
		return Report{}, &LoadError{Problems: problems}
	}
	names, err := listFiles(dir, TestExt, MaxFiles)
	if err != nil {
		return Report{}, err
	}
	if len(names) == 0 {
		return Report{}, fmt.Errorf("no %s files in %s", TestExt, dir)
	}
	engine := NewEngine(set)
	v := validate.New(s.resolved, validate.WithStrict())
	var rep Report
	for _, name := range names {
		tf, err := readTestFile(filepath.Join(dir, name))
		if err != nil {
			return Report{}, fmt.Errorf("%s: %w", name, err)
		}
		for _, c := range tf.Cases {
			r := runCase(engine, v, tf, c)
			r.File = name
			if r.Passed {
				rep.Passed++
			} else {
				rep.Failed++
			}
			rep.Results = append(rep.Results, r)
		}
	}
	return rep, nil
}

// DecodeTestFile strictly decodes a test file.
func DecodeTestFile(b []byte) (*TestFile, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var tf TestFile
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("decode test file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode test file: trailing data after the JSON object")
	}
	for i, c := range tf.Cases {
		if c.Name == "" {
			return nil, fmt.Errorf("case %d: name is required", i)
		}
		if c.Expect != "allow" && c.Expect != "deny" {
			return nil, fmt.Errorf("case %q: expect must be \"allow\" or \"deny\", not %q", c.Name, c.Expect)
		}
		if c.Action == "" || c.Principal.Type == "" || c.Resource.Type == "" {
			return nil, fmt.Errorf("case %q: principal, action and resource are required", c.Name)
		}
	}
	return &tf, nil
}

func readTestFile(path string) (*TestFile, error) {
	b, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	return DecodeTestFile(b)
}

func runCase(engine *Engine, v *validate.Validator, tf *TestFile, c TestCase) CaseResult {
	res := CaseResult{Name: c.Name}
	entities, err := mergeEntities(tf.Entities, c.Entities)
	if err != nil {
		res.Failure = err.Error()
		return res
	}
	ctx, err := mergeContext(tf.Context, c.Context)
	if err != nil {
		res.Failure = err.Error()
		return res
	}
	req := Request{Principal: c.Principal.uid(), Action: ActionUID(c.Action), Resource: c.Resource.uid(), Context: ctx}
	if err := checkRequest(v, req, entities); err != nil {
		res.Failure = err.Error()
		return res
	}
	res.Got = engine.Decide(req, entities)
	var fails []string
	if got := decisionWord(res.Got.Allowed); got != c.Expect {
		fails = append(fails, fmt.Sprintf("expected %s, got %s", c.Expect, got))
	}
	if c.Reasons != nil {
		want := slices.Sorted(slices.Values(*c.Reasons))
		if !slices.Equal(want, res.Got.Reasons) {
			fails = append(fails, fmt.Sprintf("expected reasons %v, got %v", want, res.Got.Reasons))
		}
	}
	if len(res.Got.Errors) > 0 {
		fails = append(fails, fmt.Sprintf("evaluation errors: %s", strings.Join(res.Got.Errors, "; ")))
	}
	res.Failure = strings.Join(fails, "; ")
	res.Passed = len(fails) == 0
	return res
}

func decisionWord(allowed bool) string {
	if allowed {
		return "allow"
	}
	return "deny"
}

// checkRequest validates the request and its entities against the schema.
func checkRequest(v *validate.Validator, req Request, entities cedar.EntityMap) error {
	for _, uid := range slices.SortedFunc(maps.Keys(entities), func(a, b cedar.EntityUID) int {
		return strings.Compare(a.String(), b.String())
	}) {
		if err := v.Entity(entities[uid]); err != nil {
			return fmt.Errorf("entity %s does not match the schema: %w", uid, err)
		}
	}
	if err := v.Request(types.Request{Principal: req.Principal, Action: req.Action, Resource: req.Resource, Context: req.Context}); err != nil {
		return fmt.Errorf("request does not match the schema: %w", err)
	}
	return nil
}

func mergeEntities(base, over json.RawMessage) (cedar.EntityMap, error) {
	out := cedar.EntityMap{}
	for _, raw := range []json.RawMessage{base, over} {
		if len(raw) == 0 {
			continue
		}
		var m cedar.EntityMap
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("decode entities: %w", err)
		}
		maps.Copy(out, m)
	}
	return out, nil
}

func mergeContext(base, over json.RawMessage) (cedar.Record, error) {
	merged := map[string]json.RawMessage{}
	for _, raw := range []json.RawMessage{base, over} {
		if len(raw) == 0 {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return cedar.Record{}, fmt.Errorf("decode context: %w", err)
		}
		maps.Copy(merged, m)
	}
	b, err := json.Marshal(merged)
	if err != nil {
		return cedar.Record{}, fmt.Errorf("encode context: %w", err)
	}
	var rec cedar.Record
	if err := rec.UnmarshalJSON(b); err != nil {
		return cedar.Record{}, fmt.Errorf("decode context: %w", err)
	}
	return rec, nil
}
