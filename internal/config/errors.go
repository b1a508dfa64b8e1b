package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Error is the error returned by Parse, Load and Validate for an invalid
// configuration. It holds every problem found, not just the first.
type Error struct {
	Problems []FieldError
}

// FieldError is one problem in a configuration.
type FieldError struct {
	File   string // file name as given to Parse or Load; may be empty
	Line   int    // 1-based line of the key in the file; 0 when not known
	Column int    // 1-based column of the key; 0 when not known
	Key    string // dotted key path such as "store.driver"; empty for a problem with the whole file
	Msg    string
}

// String formats p as "file:line:col: key: msg", leaving off the parts that
// are not known.
func (p FieldError) String() string {
	var b strings.Builder
	loc := make([]string, 0, 3)
	if p.File != "" {
		loc = append(loc, p.File)
	}
	if p.Line > 0 {
		loc = append(loc, strconv.Itoa(p.Line))
		if p.Column > 0 {
			loc = append(loc, strconv.Itoa(p.Column))
		}
	}
	if len(loc) > 0 {
		b.WriteString(strings.Join(loc, ":"))
		b.WriteString(": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error returns the problems one a line, in the order of the file; problems
// with keys that are not in the file come last.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sortProblems orders problems by position; those without a line keep their
// relative order after the others.
func sortProblems(ps []FieldError) {
	slices.SortStableFunc(ps, func(a, b FieldError) int {
		if (a.Line == 0) != (b.Line == 0) {
			if a.Line == 0 {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
}

// maxQuoted bounds how much of a value from the file is echoed in a message.
const maxQuoted = 64

// quote returns s Go-quoted, cut short if long, for use in a message.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}

// describe names what a node holds, for "got ..." in a message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	if n.ShortTag() == nullTag {
		return "no value"
	}
	if n.Style&yaml.TaggedStyle != 0 {
		return quote(n.Value) + " tagged " + quote(n.Tag)
	}
	return quote(n.Value)
}
