package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Short YAML tags of the scalars the decoder tells apart.
const (
	nullTag      = "!!null"
	strTag       = "!!str"
	intTag       = "!!int"
	floatTag     = "!!float"
	boolTag      = "!!bool"
	timestampTag = "!!timestamp"
	mergeTag     = "!!merge"
)

const (
	msgAlias   = "YAML aliases are not allowed; write the value out in full"
	msgMerge   = "YAML merge keys (<<) are not allowed; write the keys out in full"
	msgMissing = "missing value; remove the key to keep the default"
)

var (
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	wholeNumberRE   = regexp.MustCompile(`^[-+]?[0-9][0-9_]*$`)
)

// parseDocument parses data as exactly one YAML document and returns its
// top node, or nil when data holds no document or an explicit null one.
// The tree is never decoded by the yaml package itself, so aliases are never
// expanded.
func parseDocument(data []byte, file string) (*yaml.Node, *Error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, syntaxError(err, file)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, &Error{Problems: []FieldError{{
			File: file, Line: next.Line, Column: next.Column,
			Msg: "a config file holds one YAML document; found another one here",
		}}}
	case !errors.Is(err, io.EOF):
		return nil, syntaxError(err, file)
	}
	if len(doc.Content) != 1 {
		return nil, nil
	}
	top := doc.Content[0]
	if top.Kind == yaml.ScalarNode && top.ShortTag() == nullTag {
		return nil, nil
	}
	return top, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line ([0-9]+): (.*)$`)

// syntaxError turns an error of the yaml parser into an *Error, keeping its
// line when it gives one.
func syntaxError(err error, file string) *Error {
	p := FieldError{File: file, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Msg = m[2]
	}
	p.Msg = "invalid YAML: " + p.Msg
	return &Error{Problems: []FieldError{p}}
}

// decoder walks a yaml.Node tree against a Go value, guided by the yaml
// struct tags, and collects every problem instead of stopping at the first.
//
// It handles structs (from mappings; an empty or null mapping keeps the
// defaults), strings, bools, integers, floats, slices (from sequences,
// replacing the default), maps with string keys, and any type whose pointer
// implements yaml.Unmarshaler and is given the scalar node. A new field of
// one of these types needs no change here.
type decoder struct {
	file string
	errs []FieldError
	// keys maps the dotted path of every known key found in the file to the
	// node of that key, so that later problems can point at its line.
	keys map[string]*yaml.Node
	// bad holds the paths that already have a problem.
	bad map[string]bool
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, keys: map[string]*yaml.Node{}, bad: map[string]bool{}}
}

// fail reports a value at path that could not be decoded, and so kept its
// default.
func (d *decoder) fail(at *yaml.Node, path, format string, args ...any) {
	d.report(at, path, format, args...)
	d.bad[path] = true
}

// report reports a problem with a key.
func (d *decoder) report(at *yaml.Node, path, format string, args ...any) {
	p := FieldError{File: d.file, Key: path, Msg: fmt.Sprintf(format, args...)}
	if at != nil {
		p.Line, p.Column = at.Line, at.Column
	}
	d.errs = append(d.errs, p)
}

// decode stores n into v. path names the value in messages and at is the
// node whose position is reported: the key of a mapping entry, or the item
// of a sequence.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, at *yaml.Node) {
	if n.Kind == yaml.AliasNode {
		d.fail(at, path, msgAlias)
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if isNull(n) {
			d.fail(at, path, msgMissing)
			return
		}
		if alias := findAlias(n); alias != nil {
			d.fail(alias, path, msgAlias)
			return
		}
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			d.fail(at, path, "%s", err.Error())
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path, at)
	case reflect.Map:
		d.mapping(n, v, path, at)
	case reflect.Slice:
		d.sequence(n, v, path, at)
	case reflect.String:
		if s, ok := d.scalar(n, path, at, "a string", strTag, intTag, floatTag, boolTag, timestampTag); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if _, ok := d.scalar(n, path, at, "true or false", boolTag); ok {
			var b bool
			if err := n.Decode(&b); err != nil {
				d.fail(at, path, "must be true or false, got %s", describe(n))
				return
			}
			v.SetBool(b)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == floatTag && wholeNumberRE.MatchString(n.Value) {
			// The yaml package resolves an integer too big for 64 bits as a float.
			d.fail(at, path, "integer %s is out of range", quote(n.Value))
			return
		}
		if _, ok := d.scalar(n, path, at, "an integer", intTag); ok {
			var i int64
			if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
				d.fail(at, path, "integer %s is out of range", quote(n.Value))
				return
			}
			v.SetInt(i)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if _, ok := d.scalar(n, path, at, "a non-negative integer", intTag); ok {
			var u uint64
			if err := n.Decode(&u); err != nil || v.OverflowUint(u) {
				d.fail(at, path, "must be a non-negative integer in range, got %s", quote(n.Value))
				return
			}
			v.SetUint(u)
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := d.scalar(n, path, at, "a number", floatTag, intTag); ok {
			var f float64
			if err := n.Decode(&f); err != nil || v.OverflowFloat(f) {
				d.fail(at, path, "number %s is out of range", quote(n.Value))
				return
			}
			v.SetFloat(f)
		}
	default:
		d.fail(at, path, "internal error: config fields of type %s are not supported", v.Type())
	}
}

// scalar checks that n is a scalar with one of the tags and returns its text.
// A tag given explicitly in the file (such as "!!binary") must be the first
// of tags; the others are accepted only as implicit tags, so that a plain
// 1.2 or 8443 can be read as a string.
func (d *decoder) scalar(n *yaml.Node, path string, at *yaml.Node, want string, tags ...string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.fail(at, path, "must be %s, got %s", want, describe(n))
		return "", false
	}
	tag := n.ShortTag()
	if tag == nullTag {
		d.fail(at, path, msgMissing)
		return "", false
	}
	ok := tag == tags[0]
	if !ok && n.Style&yaml.TaggedStyle == 0 {
		for _, t := range tags[1:] {
			ok = ok || tag == t
		}
	}
	if !ok {
		d.fail(at, path, "must be %s, got %s", want, describe(n))
		return "", false
	}
	return n.Value, true
}

// structure decodes a mapping into the struct v, field by field.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string, at *yaml.Node) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		if path == "" {
			d.fail(at, path, "the top level of a config file must be a mapping of keys, got %s", describe(n))
		} else {
			d.fail(at, path, "must be a mapping of keys, got %s", describe(n))
		}
		return
	}
	fields := structFields(v.Type())
	d.entries(n, path, func(key *yaml.Node, name, sub string, val *yaml.Node) {
		i, ok := fields.index[name]
		if !ok {
			msg := "unknown key"
			if s := suggest(name, fields.names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.report(key, sub, "%s", msg)
			return
		}
		d.keys[sub] = key
		d.decode(val, v.Field(i), sub, key)
	})
}

// mapping decodes a mapping into the map v, which has string keys. The
// mapping replaces the default.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string, at *yaml.Node) {
	if v.Type().Key().Kind() != reflect.String {
		d.fail(at, path, "internal error: config maps must have string keys, not %s", v.Type().Key())
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(at, path, "must be a mapping of keys, got %s", describe(n))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	d.entries(n, path, func(key *yaml.Node, name, sub string, val *yaml.Node) {
		d.keys[sub] = key
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, sub, key)
		m.SetMapIndex(reflect.ValueOf(name).Convert(v.Type().Key()), elem)
	})
	v.Set(m)
}

// entries calls fn for each entry of the mapping n whose key is a plain
// string seen for the first time, and reports the others.
func (d *decoder) entries(n *yaml.Node, path string, fn func(key *yaml.Node, name, sub string, val *yaml.Node)) {
	first := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		switch {
		case key.Kind == yaml.AliasNode:
			d.report(key, path, msgAlias)
			continue
		case key.Kind != yaml.ScalarNode:
			d.report(key, path, "keys must be strings, got %s", describe(key))
			continue
		case key.ShortTag() == mergeTag:
			d.report(key, join(path, key.Value), msgMerge)
			continue
		}
		name := key.Value
		sub := join(path, name)
		if prev, dup := first[name]; dup {
			d.report(key, sub, "duplicate key (first set on line %d)", prev.Line)
			continue
		}
		first[name] = key
		fn(key, name, sub, val)
	}
}

// sequence decodes a sequence into the slice v, replacing the default.
func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string, at *yaml.Node) {
	if n.Kind != yaml.SequenceNode {
		d.fail(at, path, "must be a sequence, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), item)
	}
	v.Set(s)
}

// fieldSet maps the YAML names of a struct's fields to their indexes.
type fieldSet struct {
	index map[string]int
	names []string // in declaration order, for suggestions
}

// structFields reads the yaml tags of t the way the yaml package does when
// it marshals: the name before the first comma, or the lower-cased field
// name when there is none; "-" and unexported fields are skipped.
func structFields(t reflect.Type) fieldSet {
	fs := fieldSet{index: map[string]int{}}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fs.index[name] = i
		fs.names = append(fs.names, name)
	}
	return fs
}

// join appends a key to a dotted path. A key that is not a plain name is
// quoted (and cut short) so that the path reads unambiguously.
func join(path, name string) string {
	if !plainKey(name) {
		name = quote(name)
	}
	if path == "" {
		return name
	}
	return path + "." + name
}

func plainKey(s string) bool {
	if s == "" || len(s) > maxQuoted {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == nullTag
}

// findAlias returns the first alias node in the tree under n, if any.
func findAlias(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode {
		return n
	}
	for _, c := range n.Content {
		if a := findAlias(c); a != nil {
			return a
		}
	}
	return nil
}

// suggest returns the candidate closest to name by edit distance, or "" when
// none is close enough to be a likely typo.
func suggest(name string, candidates []string) string {
	lower := strings.ToLower(name)
	best, bestDist := "", -1
	for _, c := range candidates {
		limit := max(1, len(c)/3)
		if diff := len(lower) - len(c); diff > limit || -diff > limit {
			continue
		}
		if dist := editDistance(lower, c); dist <= limit && (bestDist < 0 || dist < bestDist) {
			best, bestDist = c, dist
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// the number of inserted, deleted or replaced bytes and swapped adjacent
// bytes that turn a into b.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
