package policy

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cedar-policy/cedar-go"
)

// ErrCommentInPolicy is returned by Format for a policy with a comment
// inside its text: cedar-go's printer drops comments, so Format refuses to
// rewrite such a file rather than lose them.
var ErrCommentInPolicy = errors.New("comment inside a policy statement would be lost by formatting")

// Format returns text in cedar-go's canonical formatting (Policy.MarshalCedar),
// one blank line between policies. Comments between policies (and at the top
// and bottom of the file) are kept, on their own lines before the policy that
// follows them; a comment inside a policy statement makes Format fail with
// ErrCommentInPolicy. file names the file in errors.
func Format(file string, text []byte) ([]byte, error) {
	list, err := cedar.NewPolicyListFromBytes(file, text)
	if err != nil {
		return nil, errors.New(parseProblem(file, err).String())
	}
	var out bytes.Buffer
	writeComments(&out, leadingGap(text, list))
	for i, p := range list {
		start := p.Position().Offset
		end := len(text)
		if i+1 < len(list) {
			end = list[i+1].Position().Offset
		}
		stmtEnd, comment, err := statementEnd(file, text[start:end])
		if err != nil {
			return nil, err
		}
		if comment {
			pos := p.Position()
			return nil, fmt.Errorf("%s:%d:%d: %w", file, pos.Line, pos.Column, ErrCommentInPolicy)
		}
		out.Write(p.MarshalCedar())
		out.WriteByte('\n')
		gap := bytes.TrimSpace(text[start+stmtEnd : end])
		if len(gap) > 0 || i+1 < len(list) {
			out.WriteByte('\n')
		}
		writeComments(&out, gap)
	}
	return out.Bytes(), nil
}

// leadingGap is the text before the first policy (comments, whitespace).
func leadingGap(text []byte, list cedar.PolicyList) []byte {
	if len(list) == 0 {
		return bytes.TrimSpace(text)
	}
	return bytes.TrimSpace(text[:list[0].Position().Offset])
}

// writeComments writes the comment lines of gap, each trimmed, followed by a
// newline.
func writeComments(out *bytes.Buffer, gap []byte) {
	if len(gap) == 0 {
		return
	}
	for line := range bytes.Lines(gap) {
		out.Write(bytes.TrimSpace(line))
		out.WriteByte('\n')
	}
}

// statementEnd returns the length of the policy statement at the start of
// seg (up to and including its ';') and whether a "//" comment occurs in it.
// In Cedar a ';' outside string literals and comments only ends a policy,
// and "//" comments run to the end of the line; the result is confirmed by
// parsing the statement with cedar-go.
func statementEnd(file string, seg []byte) (end int, comment bool, err error) {
	inString, inComment := false, false
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case inComment:
			inComment = c != '\n'
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '/' && i+1 < len(seg) && seg[i+1] == '/':
			inComment, comment = true, true
		case c == ';':
			list, err := cedar.NewPolicyListFromBytes(file, seg[:i+1])
			if err != nil || len(list) != 1 {
				return 0, false, fmt.Errorf("%s: cannot find the end of a policy statement", file)
			}
			return i + 1, comment, nil
		}
	}
	return 0, false, fmt.Errorf("%s: cannot find the end of a policy statement", file)
}
