package policy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a policy set, at a position in a file.
// Line and Column are 1-based; 0 means the position is unknown.
type Problem struct {
	File    string
	Line    int
	Column  int
	Message string
}

// String formats the problem as file:line:col: message.
func (p Problem) String() string {
	if p.Line == 0 {
		return fmt.Sprintf("%s: %s", p.File, p.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Column, p.Message)
}

// LoadError lists every problem found while loading a policy directory.
type LoadError struct {
	Problems []Problem
}

func (e *LoadError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("%d policy problem(s):\n%s", len(e.Problems), strings.Join(lines, "\n"))
}

// cedar-go reports parse errors as text carrying a position of the form
// "<input>:LINE:COL"; these patterns recover it.
var (
	parseErrAt   = regexp.MustCompile(`parse error at <input>:(\d+):(\d+) ("(?:[^"\\]|\\.)*"): `)
	scanErrAt    = regexp.MustCompile(`<input>:(\d+):(\d+): `)
	parserPrefix = "parser error: "
)

// parseProblem turns a cedar-go parse error into a Problem in file.
func parseProblem(file string, err error) Problem {
	msg := strings.TrimPrefix(err.Error(), parserPrefix)
	if m := parseErrAt.FindStringSubmatchIndex(msg); m != nil && m[0] == 0 {
		line, _ := strconv.Atoi(msg[m[2]:m[3]])
		col, _ := strconv.Atoi(msg[m[4]:m[5]])
		near := msg[m[6]:m[7]]
		text := "syntax error: " + msg[m[1]:]
		if near != `""` {
			text = fmt.Sprintf("syntax error near %s: %s", near, msg[m[1]:])
		}
		return Problem{File: file, Line: line, Column: col, Message: text}
	}
	if m := scanErrAt.FindStringSubmatchIndex(msg); m != nil && m[0] == 0 {
		line, _ := strconv.Atoi(msg[m[2]:m[3]])
		col, _ := strconv.Atoi(msg[m[4]:m[5]])
		return Problem{File: file, Line: line, Column: col, Message: "syntax error: " + msg[m[1]:]}
	}
	return Problem{File: file, Message: "syntax error: " + msg}
}
