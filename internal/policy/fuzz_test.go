package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadPolicy feeds untrusted policy text to the parser, the validator,
// the formatter and the engine: none may panic, and whatever parses must
// format to text that parses to the same number of policies.
func FuzzLoadPolicy(f *testing.F) {
	for _, dir := range []string{bankDir, filepath.Join("testdata", "bad")} {
		names, err := PolicyFiles(dir)
		if err != nil {
			f.Fatal(err)
		}
		for _, name := range names {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte(`@id("x") permit (principal, action, resource) when { "a" like "*" };`))
	f.Add([]byte("forbid (principal, action, resource) unless { 1 + 9223372036854775807 > 0 };"))
	s := mustSchema(f)
	f.Fuzz(func(t *testing.T, text []byte) {
		ps, problems := ParsePolicies("f.cedar", text)
		for _, p := range problems {
			if p.File != "f.cedar" || p.Message == "" {
				t.Fatalf("malformed problem %+v", p)
			}
		}
		set := &Set{policies: ps}
		_ = Validate(set, s)
		_ = NewEngine(set).Decide(Request{}, nil)
		out, err := Format("f.cedar", text)
		if err != nil {
			return
		}
		again, againProblems := ParsePolicies("f.cedar", out)
		if len(againProblems) > 0 || len(again) != len(ps) {
			t.Fatalf("formatted text does not parse to %d policies: %v\n%s", len(ps), againProblems, out)
		}
	})
}
