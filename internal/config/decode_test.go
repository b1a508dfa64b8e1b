package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// sample has a field of every kind the decoder supports, so that a later
// config field of any of them is known to work.
type sample struct {
	Name     string            `yaml:"name"`
	On       bool              `yaml:"on"`
	Count    int8              `yaml:"count"`
	Big      uint16            `yaml:"big"`
	Ratio    float64           `yaml:"ratio"`
	Tags     []string          `yaml:"tags"`
	Labels   map[string]string `yaml:"labels"`
	Items    []item            `yaml:"items"`
	Wait     Duration          `yaml:"wait"`
	Untagged string
	Skipped  string `yaml:"-"`
	hidden   string // unexported: never decoded
}

type item struct {
	ID   string   `yaml:"id"`
	Size ByteSize `yaml:"size"`
}

// decodeSample decodes src into a sample and returns the problems, one a
// line.
func decodeSample(t *testing.T, src string) (sample, string) {
	t.Helper()
	top, perr := parseDocument([]byte(src), "s.yaml")
	if perr != nil {
		return sample{}, perr.Error()
	}
	s := sample{Tags: []string{"default"}}
	d := newDecoder("s.yaml")
	if top != nil {
		d.decode(top, reflect.ValueOf(&s).Elem(), "", top)
	}
	if len(d.errs) == 0 {
		return s, ""
	}
	sortProblems(d.errs)
	return s, (&Error{Problems: d.errs}).Error()
}

func TestDecodeKinds(t *testing.T) {
	t.Parallel()
	src := `
name: x
on: true
count: -128
big: 65535
ratio: 0.5
tags: [a, b]
labels: {team: payments, tier: "1"}
items:
  - id: one
    size: 1KiB
  - {id: two, size: 2}
wait: 1m
untagged: u
`
	got, errs := decodeSample(t, src)
	if errs != "" {
		t.Fatalf("problems: %s", errs)
	}
	want := sample{
		Name: "x", On: true, Count: -128, Big: 65535, Ratio: 0.5,
		Tags:     []string{"a", "b"},
		Labels:   map[string]string{"team": "payments", "tier": "1"},
		Items:    []item{{"one", KiB}, {"two", 2}},
		Wait:     Duration(time.Minute),
		Untagged: "u",
	}
	if got.hidden != "" {
		t.Errorf("unexported field decoded: %q", got.hidden)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
}

func TestDecodeProblems(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		src  string
		want string
	}{
		{"bool", "on: yes\n", `s.yaml:1:1: on: must be true or false, got "yes"`},
		{"int8 overflow", "count: 128\n", `s.yaml:1:1: count: integer "128" is out of range`},
		{"uint negative", "big: -1\n", `s.yaml:1:1: big: must be a non-negative integer in range, got "-1"`},
		{"uint overflow", "big: 65536\n", `s.yaml:1:1: big: must be a non-negative integer in range, got "65536"`},
		{"float", "ratio: half\n", `s.yaml:1:1: ratio: must be a number, got "half"`},
		{"sequence item", "tags: [a, [b]]\n", `s.yaml:1:11: tags[1]: must be a string, got a sequence`},
		{"sequence expected", "tags: a\n", `s.yaml:1:1: tags: must be a sequence, got "a"`},
		{"struct in sequence", "items:\n  - id: a\n    sise: 1\n", `s.yaml:3:5: items[0].sise: unknown key (did you mean "size"?)`},
		{"map duplicate", "labels: {a: 1, a: 2}\n", `s.yaml:1:16: labels.a: duplicate key (first set on line 1)`},
		{"map value", "labels: {a: [1]}\n", `s.yaml:1:10: labels.a: must be a string, got a sequence`},
		{"map expected", "labels: [a]\n", `s.yaml:1:1: labels: must be a mapping of keys, got a sequence`},
		{"odd key", "\"a b\": 1\n", `s.yaml:1:1: "a b": unknown key`},
		{"skipped field", "skipped: 1\n", `s.yaml:1:1: skipped: unknown key`},
		{"unexported field", "hidden: 1\n", `s.yaml:1:1: hidden: unknown key`},
		{"alias in sequence", "name: &n x\ntags: [*n]\n", `s.yaml:2:8: tags[0]: YAML aliases are not allowed; write the value out in full`},
		{"alias key", "name: &n x\n*n : y\n", `s.yaml:2:1: YAML aliases are not allowed; write the value out in full`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, got := decodeSample(t, tc.src)
			if got != tc.want {
				t.Errorf("problems:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// TestBillionLaughs checks that aliases are refused without being expanded.
func TestBillionLaughs(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 10; i++ {
		prev := "*a" + string(rune('0'+i-1))
		b.WriteString("a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
		b.WriteString(strings.Repeat(prev+", ", 9) + prev + "]\n")
	}
	b.WriteString("data_dir: *a9\n")
	_, err := Parse([]byte(b.String()), "laughs.yaml")
	if err == nil || !strings.Contains(err.Error(), "laughs.yaml:11:1: data_dir: YAML aliases are not allowed") {
		t.Errorf("Parse = %v, want the alias refused", err)
	}
}
