package policy

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		{
			name: "canonical layout, comments between policies kept",
			in: "// header\n\n  // about p\npermit(principal,action,resource) when {context.mfa};   // trailing\n" +
				"forbid(principal,action,resource);\n",
			want: "// header\n\n// about p\npermit ( principal, action, resource )\nwhen { context.mfa };\n\n" +
				"// trailing\nforbid ( principal, action, resource );\n",
		},
		{
			name: "strings holding // and ; are not comments",
			in:   `permit(principal,action,resource) when { context.zone == "a//b;c" };`,
			want: "permit ( principal, action, resource )\nwhen { context.zone == \"a//b;c\" };\n",
		},
		{
			name:    "comment inside a policy is refused",
			in:      "permit(principal, // who\n action, resource);",
			wantErr: ErrCommentInPolicy,
		},
		{name: "empty file", in: "", want: ""},
		{name: "only comments", in: "// nothing yet\n", want: "// nothing yet\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Format("p.cedar", []byte(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Format error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Format: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("Format =\n%s\nwant\n%s", got, tt.want)
			}
			again, err := Format("p.cedar", got)
			if err != nil || string(again) != string(got) {
				t.Errorf("Format is not idempotent: %v\n%s", err, again)
			}
		})
	}
}

func TestFormatSyntaxError(t *testing.T) {
	t.Parallel()
	if _, err := Format("p.cedar", []byte("permit (")); err == nil {
		t.Fatal("Format of a syntax error: no error")
	}
}

// TestBankPoliciesFormatted keeps the example policies in canonical form.
func TestBankPoliciesFormatted(t *testing.T) {
	t.Parallel()
	dir := bankDir
	names, err := PolicyFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		text, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Format(name, text)
		if err != nil {
			t.Fatalf("Format(%s): %v", name, err)
		}
		if string(got) != string(text) {
			t.Errorf("%s is not formatted; run bulwark policy fmt %s", name, dir)
		}
	}
}
