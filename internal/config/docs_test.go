package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

const (
	examplePath = "../../deploy/bulwark.example.yaml"
	docsPath    = "../../docs/configuration.md"
)

// keyPaths returns the dotted path of every leaf key of Config.
func keyPaths(t reflect.Type, prefix string) []string {
	var paths []string
	fs := structFields(t)
	for _, name := range fs.names {
		ft := t.Field(fs.index[name]).Type
		path := join(prefix, name)
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(unmarshalerType) {
			paths = append(paths, keyPaths(ft, path)...)
			continue
		}
		paths = append(paths, path)
	}
	return paths
}

// TestExampleFile checks that deploy/bulwark.example.yaml parses, sets every
// key, and sets each to its default.
func TestExampleFile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(data, filepath.Base(examplePath))
	if err != nil {
		t.Fatalf("example file does not parse:\n%v", err)
	}
	want, err := Parse(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if *cfg != *want {
		t.Errorf("example file is not all defaults:\ngot  %+v\nwant %+v", *cfg, *want)
	}
	top, perr := parseDocument(data, "")
	if perr != nil {
		t.Fatal(perr)
	}
	d := newDecoder("")
	var scratch Config
	d.decode(top, reflect.ValueOf(&scratch).Elem(), "", top)
	for _, key := range keyPaths(reflect.TypeFor[Config](), "") {
		if _, ok := d.keys[key]; !ok {
			t.Errorf("example file does not set %s", key)
		}
	}
}

// TestDocs checks that docs/configuration.md documents every key and that
// each of its complete YAML examples parses.
func TestDocs(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, key := range keyPaths(reflect.TypeFor[Config](), "") {
		if !strings.Contains(doc, "| `"+key+"` |") {
			t.Errorf("%s has no table row for %s", docsPath, key)
		}
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(blocks) == 0 {
		t.Fatalf("%s has no yaml examples", docsPath)
	}
	for i, b := range blocks {
		if _, err := Parse([]byte(b[1]), "example"); err != nil {
			t.Errorf("yaml example %d in %s does not parse:\n%v\n%s", i+1, docsPath, err, b[1])
		}
	}
}
