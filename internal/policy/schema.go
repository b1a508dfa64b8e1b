package policy

import (
	_ "embed"
	"fmt"

	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
)

// SchemaFile is the name under which the embedded schema reports positions.
const SchemaFile = "schema.cedarschema"

//go:embed schema.cedarschema
var schemaText []byte

// SchemaText returns the Cedar schema (human-readable format) for Bulwark's
// entities, actions and request context.
func SchemaText() []byte { return append([]byte(nil), schemaText...) }

// Schema is a parsed and resolved Cedar schema.
type Schema struct {
	resolved *resolved.Schema
}

// DefaultSchema parses and resolves the embedded Bulwark schema.
func DefaultSchema() (*Schema, error) {
	return ParseSchema(SchemaFile, schemaText)
}

// ParseSchema parses a schema in the human-readable Cedar schema format and
// resolves its type references.
func ParseSchema(filename string, text []byte) (*Schema, error) {
	var s schema.Schema
	s.SetFilename(filename)
	if err := s.UnmarshalCedar(text); err != nil {
		return nil, fmt.Errorf("parse schema %s: %w", filename, err)
	}
	r, err := s.Resolve()
	if err != nil {
		return nil, fmt.Errorf("resolve schema %s: %w", filename, err)
	}
	return &Schema{resolved: r}, nil
}
