package policy

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// bankDir holds the reference bank policies and their tests.
var bankDir = filepath.Join("..", "..", "examples", "policies", "bank")

func mustSchema(t testing.TB) *Schema {
	t.Helper()
	s, err := DefaultSchema()
	if err != nil {
		t.Fatalf("DefaultSchema: %v", err)
	}
	return s
}

// writeDir creates a policy directory from name → content.
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestCheckDirGolden checks every problem of testdata/bad against
// testdata/bad.golden; run with -update to regenerate it.
func TestCheckDirGolden(t *testing.T) {
	t.Parallel()
	_, problems, err := CheckDir(filepath.Join("testdata", "bad"), mustSchema(t))
	if err != nil {
		t.Fatalf("CheckDir: %v", err)
	}
	var b strings.Builder
	for _, p := range problems {
		b.WriteString(p.String() + "\n")
	}
	golden := filepath.Join("testdata", "bad.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden (run with -update to create it): %v", err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("problems differ from %s (run with -update if intended)\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}

func TestCheckDirBankIsValid(t *testing.T) {
	t.Parallel()
	set, problems, err := CheckDir(bankDir, mustSchema(t))
	if err != nil {
		t.Fatalf("CheckDir: %v", err)
	}
	for _, p := range problems {
		t.Errorf("unexpected problem: %s", p)
	}
	if set.Len() != 27 {
		t.Errorf("Len = %d, want 27", set.Len())
	}
}

func TestLoadDir(t *testing.T) {
	t.Parallel()
	const anon = "permit (principal, action, resource);\n"
	tests := []struct {
		name    string
		files   map[string]string
		wantIDs []string
		// wantProblems are substrings of the LoadError's problems, in order.
		wantProblems []string
	}{
		{
			name: "ids from @id or file and index, files in name order",
			files: map[string]string{
				"b.cedar":     anon + "@id(\"named\")\n" + anon,
				"a.cedar":     anon,
				"notes.txt":   "not a policy",
				"x.test.json": "{}",
			},
			wantIDs: []string{"a.cedar:0", "b.cedar:0", "named"},
		},
		{
			name:    "empty directory",
			files:   map[string]string{},
			wantIDs: nil,
		},
		{
			name: "duplicate @id across files",
			files: map[string]string{
				"a.cedar": "@id(\"p\")\n" + anon,
				"b.cedar": "\n\n@id(\"p\")\n" + anon,
			},
			wantProblems: []string{`b.cedar:3:1: duplicate policy id "p" (first at a.cedar:1:1)`},
		},
		{
			name: "@id colliding with a generated id",
			files: map[string]string{
				"a.cedar": anon + "@id(\"a.cedar:0\")\n" + anon,
			},
			wantProblems: []string{`a.cedar:2:1: duplicate policy id "a.cedar:0"`},
		},
		{
			name: "every file's syntax error is reported",
			files: map[string]string{
				"a.cedar": "permit (principal, action resource);",
				"b.cedar": anon + "forbid (principal, action, resource) when { \"x };",
				"c.cedar": "@id(\"x\") @id(\"y\") " + anon,
			},
			wantProblems: []string{
				// cedar-go reports the token where its parser stopped.
				`a.cedar:1:35: syntax error near ")": exact got resource want ,`,
				`b.cedar:2:45: syntax error: literal not terminated`,
				`c.cedar:1:13: syntax error near "(": duplicate annotation: @id`,
			},
		},
		{
			name:         "file over the size limit",
			files:        map[string]string{"big.cedar": strings.Repeat(" ", MaxFileSize+1)},
			wantProblems: []string{"big.cedar: file larger than the limit"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, err := LoadDir(writeDir(t, tt.files))
			if len(tt.wantProblems) > 0 {
				var le *LoadError
				if !errors.As(err, &le) {
					t.Fatalf("LoadDir error = %v, want a *LoadError", err)
				}
				if len(le.Problems) != len(tt.wantProblems) {
					t.Fatalf("problems = %v, want %d", le.Problems, len(tt.wantProblems))
				}
				for i, want := range tt.wantProblems {
					if got := le.Problems[i].String(); !strings.Contains(got, want) {
						t.Errorf("problem %d = %q, want it to contain %q", i, got, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadDir: %v", err)
			}
			var ids []string
			for _, p := range set.Policies() {
				ids = append(ids, p.ID)
			}
			if strings.Join(ids, ",") != strings.Join(tt.wantIDs, ",") {
				t.Errorf("ids = %v, want %v", ids, tt.wantIDs)
			}
		})
	}
}

func TestLoadDirMissing(t *testing.T) {
	t.Parallel()
	_, err := LoadDir(filepath.Join(t.TempDir(), "nope"))
	var le *LoadError
	if err == nil || errors.As(err, &le) {
		t.Fatalf("LoadDir(missing) = %v, want an I/O error", err)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v does not wrap os.ErrNotExist", err)
	}
}

func TestProblemString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    Problem
		want string
	}{
		{"with position", Problem{File: "a.cedar", Line: 3, Column: 7, Message: "bad"}, "a.cedar:3:7: bad"},
		{"without position", Problem{File: "a.cedar", Message: "too big"}, "a.cedar: too big"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%s: String() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestParseSchemaErrors(t *testing.T) {
	t.Parallel()
	if _, err := ParseSchema("s.cedarschema", []byte("entity User in [Nope];")); err == nil {
		t.Error("ParseSchema with an undefined type: no error")
	}
	if _, err := ParseSchema("s.cedarschema", []byte("entity {")); err == nil {
		t.Error("ParseSchema with a syntax error: no error")
	}
}
