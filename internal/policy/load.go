package policy

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cedar-policy/cedar-go"
)

// Limits on what LoadDir reads, so a hostile or mistaken directory cannot
// exhaust memory.
const (
	// MaxFileSize is the largest *.cedar or *.test.json file read.
	MaxFileSize = 1 << 20
	// MaxFiles is the largest number of *.cedar files in one directory.
	MaxFiles = 1000
)

// PolicyExt is the extension of policy files.
const PolicyExt = ".cedar"

// Policy is one parsed policy statement and where it came from.
type Policy struct {
	// ID is the value of the policy's @id annotation, or "<file>:<index>"
	// (index 0-based within the file) when it has none.
	ID     string
	File   string
	Line   int
	Column int
	Cedar  *cedar.Policy
}

// Set is a loaded policy set: every policy of a directory with a unique ID,
// in file order.
type Set struct {
	policies []Policy
}

// Policies returns the policies of the set in file order.
func (s *Set) Policies() []Policy { return slices.Clone(s.policies) }

// Len returns the number of policies.
func (s *Set) Len() int { return len(s.policies) }

// ParsePolicies parses the policy statements of one file's text. file names
// the file in IDs and positions. It returns the policies it could parse and
// a Problem for each thing wrong; cedar-go's parser stops at the first syntax
// error of a file, so a file yields at most one syntax problem.
func ParsePolicies(file string, text []byte) ([]Policy, []Problem) {
	list, err := cedar.NewPolicyListFromBytes(file, text)
	if err != nil {
		return nil, []Problem{parseProblem(file, err)}
	}
	out := make([]Policy, 0, len(list))
	for i, p := range list {
		id := fmt.Sprintf("%s:%d", file, i)
		if v, ok := p.Annotations()["id"]; ok {
			id = string(v)
		}
		pos := p.Position()
		out = append(out, Policy{ID: id, File: file, Line: pos.Line, Column: pos.Column, Cedar: p})
	}
	return out, nil
}

// LoadDir reads every *.cedar file of dir (not its subdirectories) in name
// order and returns the policy set. If anything is wrong (a syntax error, a
// duplicate policy ID, a file too large) the error is a *LoadError listing
// every problem; an I/O error is returned as is.
func LoadDir(dir string) (*Set, error) {
	set, problems, err := loadDir(dir)
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, &LoadError{Problems: problems}
	}
	return set, nil
}

// CheckDir loads dir like LoadDir and validates what parsed against s, so
// that one run reports syntax errors in one file and type errors in another.
// The set holds the policies that parsed; problems lists everything wrong.
func CheckDir(dir string, s *Schema) (*Set, []Problem, error) {
	set, problems, err := loadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	problems = append(problems, Validate(set, s)...)
	sortProblems(problems)
	return set, problems, nil
}

// PolicyFiles returns the *.cedar files of dir, sorted by name.
func PolicyFiles(dir string) ([]string, error) {
	return listFiles(dir, PolicyExt, MaxFiles)
}

func listFiles(dir, ext string, limit int) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read policy directory: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ext) {
			continue
		}
		names = append(names, e.Name())
	}
	if len(names) > limit {
		return nil, fmt.Errorf("policy directory %s: %d %s files, more than the limit of %d", dir, len(names), ext, limit)
	}
	slices.Sort(names)
	return names, nil
}

// errTooLarge marks a file over MaxFileSize.
var errTooLarge = errors.New("file larger than the limit")

// readBounded reads a file of at most MaxFileSize bytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%w of %d bytes", errTooLarge, MaxFileSize)
	}
	return b, nil
}

func loadDir(dir string) (*Set, []Problem, error) {
	names, err := PolicyFiles(dir)
	if err != nil {
		return nil, nil, err
	}
	var sp setParser
	for _, name := range names {
		text, err := readBounded(filepath.Join(dir, name))
		if errors.Is(err, errTooLarge) {
			sp.problems = append(sp.problems, Problem{File: name, Message: err.Error()})
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read policy file: %w", err)
		}
		sp.add(name, text)
	}
	set, problems := sp.result()
	return set, problems, nil
}

// ReadDir reads every *.cedar file of dir (not its subdirectories) with the
// same limits as LoadDir and returns their texts by file name, for sending
// them elsewhere (bulwark policy push). A file over MaxFileSize is an error.
func ReadDir(dir string) (map[string]string, error) {
	names, err := PolicyFiles(dir)
	if err != nil {
		return nil, err
	}
	files := make(map[string]string, len(names))
	for _, name := range names {
		text, err := readBounded(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read policy file %s: %w", name, err)
		}
		files[name] = string(text)
	}
	return files, nil
}

// LoadFiles parses an in-memory policy set (file name -> Cedar text) like
// LoadDir parses a directory, in file name order. Names are not checked
// here (see CheckFiles).
func LoadFiles(files map[string]string) (*Set, []Problem) {
	var sp setParser
	for _, name := range slices.Sorted(maps.Keys(files)) {
		text := files[name]
		if len(text) > MaxFileSize {
			sp.problems = append(sp.problems, Problem{File: name, Message: fmt.Sprintf("%v of %d bytes", errTooLarge, MaxFileSize)})
			continue
		}
		sp.add(name, []byte(text))
	}
	return sp.result()
}

// CheckFiles checks an in-memory policy set as a push must be checked:
// every file name a plain "name.cedar", at most MaxFiles files of at most
// MaxFileSize bytes, every file parsed, no duplicate policy ID, and every
// policy valid against s. The problems are sorted by file and position;
// the set holds the policies that parsed.
func CheckFiles(files map[string]string, s *Schema) (*Set, []Problem) {
	var problems []Problem
	if len(files) > MaxFiles {
		return &Set{}, []Problem{{File: "(policy set)", Message: fmt.Sprintf("%d files, more than the limit of %d", len(files), MaxFiles)}}
	}
	valid := make(map[string]string, len(files))
	for name, text := range files {
		if err := checkFileName(name); err != nil {
			problems = append(problems, Problem{File: strconv.Quote(clipName(name)), Message: err.Error()})
			continue
		}
		valid[name] = text
	}
	set, probs := LoadFiles(valid)
	problems = append(problems, probs...)
	problems = append(problems, Validate(set, s)...)
	sortProblems(problems)
	return set, problems
}

// validFileName is a plain policy file name: no directory, no hidden file.
var validFileName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$`)

func checkFileName(name string) error {
	stem, ok := strings.CutSuffix(name, PolicyExt)
	if !ok || stem == "" {
		return fmt.Errorf("file name must end in %s", PolicyExt)
	}
	if !validFileName.MatchString(name) {
		return errors.New("file name must be a plain name of letters, digits, '.', '_' and '-' (no directory, at most 200 characters)")
	}
	return nil
}

func clipName(name string) string {
	if len(name) > 64 {
		return name[:64] + "..."
	}
	return name
}

// setParser parses files into one set, finding duplicate policy IDs.
type setParser struct {
	set      Set
	problems []Problem
	first    map[string]Policy
}

func (sp *setParser) add(name string, text []byte) {
	if sp.first == nil {
		sp.first = map[string]Policy{}
	}
	ps, probs := ParsePolicies(name, text)
	sp.problems = append(sp.problems, probs...)
	for _, p := range ps {
		if prev, dup := sp.first[p.ID]; dup {
			sp.problems = append(sp.problems, Problem{File: p.File, Line: p.Line, Column: p.Column,
				Message: fmt.Sprintf("duplicate policy id %q (first at %s:%d:%d)", p.ID, prev.File, prev.Line, prev.Column)})
			continue
		}
		sp.first[p.ID] = p
		sp.set.policies = append(sp.set.policies, p)
	}
}

func (sp *setParser) result() (*Set, []Problem) {
	set := sp.set
	return &set, sp.problems
}

func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
}
