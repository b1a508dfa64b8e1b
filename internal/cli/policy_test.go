package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// runPolicyCommand executes `bulwark policy ARGS` under a bare root, like Main.
func runPolicyCommand(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	root := &cobra.Command{Use: "bulwark", SilenceUsage: true, SilenceErrors: true}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(newPolicyCommand())
	root.SetArgs(append([]string{"policy"}, args...))
	root.SetOut(&out)
	root.SetErr(&errOut)
	if err := root.ExecuteContext(context.Background()); err != nil {
		errOut.WriteString("bulwark: " + err.Error() + "\n")
		var u *usageError
		if errors.As(err, &u) {
			return 2, out.String(), errOut.String()
		}
		return 1, out.String(), errOut.String()
	}
	return 0, out.String(), errOut.String()
}

var (
	bankDir = filepath.Join("..", "..", "examples", "policies", "bank")
	badDir  = filepath.Join("..", "policy", "testdata", "bad")
)

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	golden, err := os.ReadFile(filepath.Join(badDir, "..", "bad.golden"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
	}{
		{"valid set", []string{"validate", bankDir}, 0, "27 policies valid\n"},
		{"every problem with its position", []string{"validate", badDir}, 1, string(golden)},
		{"no directory", []string{"validate"}, 2, ""},
		{"two directories", []string{"validate", bankDir, badDir}, 2, ""},
		{"missing directory", []string{"validate", filepath.Join(t.TempDir(), "nope")}, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runPolicyCommand(tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.wantCode, errOut)
			}
			if out != tt.wantStdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", out, tt.wantStdout)
			}
		})
	}
}

func TestPolicyTest(t *testing.T) {
	t.Parallel()
	code, out, errOut := runPolicyCommand("test", bankDir)
	if code != 0 {
		t.Fatalf("exit %d; stdout: %s stderr: %s", code, out, errOut)
	}
	if strings.Contains(out, "FAIL") || !strings.Contains(out, "PASS tellers.test.json: manager inherits teller read\n") ||
		!strings.Contains(out, "\n83 passed, 0 failed\n") {
		t.Errorf("unexpected output:\n%s", out)
	}

	dir := copyDir(t, bankDir)
	path := filepath.Join(dir, "services.test.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Make "notifications cannot call ledger" expect allow: it must fail.
	broken := strings.Replace(string(b), `"expect": "deny"`, `"expect": "allow"`, 1)
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runPolicyCommand("test", dir)
	if code != 1 {
		t.Fatalf("exit %d with a failing case, want 1", code)
	}
	if !strings.Contains(out, "FAIL services.test.json: notifications cannot call ledger: expected allow, got deny") {
		t.Errorf("no FAIL line for the broken case:\n%s", out)
	}

	if code, _, _ := runPolicyCommand("test", badDir); code != 1 {
		t.Errorf("test on invalid policies: exit %d, want 1", code)
	}
}

func TestPolicyFmt(t *testing.T) {
	t.Parallel()
	if code, out, errOut := runPolicyCommand("fmt", "--check", bankDir); code != 0 || out != "" {
		t.Fatalf("fmt --check on formatted policies: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	dir := t.TempDir()
	messy := "// keep me\npermit(principal,action,resource);\n"
	path := filepath.Join(dir, "a.cedar")
	if err := os.WriteFile(path, []byte(messy), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runPolicyCommand("fmt", "--check", dir)
	if code != 1 || out != "a.cedar\n" {
		t.Fatalf("fmt --check on a messy file: exit %d, stdout %q; want 1 and the file name", code, out)
	}
	if b, _ := os.ReadFile(path); string(b) != messy {
		t.Fatal("fmt --check wrote the file")
	}
	if code, out, errOut := runPolicyCommand("fmt", dir); code != 0 || out != "a.cedar\n" {
		t.Fatalf("fmt: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	want := "// keep me\npermit ( principal, action, resource );\n"
	if b, _ := os.ReadFile(path); string(b) != want {
		t.Errorf("formatted file = %q, want %q", b, want)
	}

	inside := filepath.Join(dir, "b.cedar")
	if err := os.WriteFile(inside, []byte("permit (principal, // who\n action, resource);\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runPolicyCommand("fmt", dir)
	if code != 1 || !strings.Contains(errOut, "b.cedar:1:1: comment inside a policy statement") {
		t.Errorf("fmt with a comment inside a policy: exit %d, stderr %q", code, errOut)
	}
}
