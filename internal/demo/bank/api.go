package bank

import (
	_ "embed" // the API description and the gateway routes
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"go.yaml.in/yaml/v3"
)

//go:embed openapi.yaml
var openAPI []byte

//go:embed routes.yaml
var routesYAML []byte

// File names of the gateway files WriteGatewayFiles writes; the routes file
// names the OpenAPI document by RoutesFileOpenAPI, relative to itself.
const (
	RoutesFileName    = "routes.yaml"
	RoutesFileOpenAPI = "openapi.yaml"
)

// OpenAPI returns the bank's public API description (OpenAPI 3.0, YAML),
// which the gateway validates requests against. The caller gets a copy.
func OpenAPI() []byte { return slices.Clone(openAPI) }

// RoutesYAML returns the gateway routes file of the demo bank (the format of
// internal/gateway's LoadRoutes). It names the OpenAPI document as
// "openapi.yaml" beside it: see WriteGatewayFiles. The caller gets a copy.
func RoutesYAML() []byte { return slices.Clone(routesYAML) }

// PublicPaths returns the public API paths of the demo bank, in the order of
// the routes file, each once (dev.json's demo_api_paths).
func PublicPaths() []string {
	paths, err := routePaths(routesYAML)
	if err != nil {
		// The embedded file is checked by the package's tests.
		return nil
	}
	return paths
}

func routePaths(data []byte) ([]string, error) {
	var doc struct {
		Routes []struct {
			Path string `yaml:"path"`
		} `yaml:"routes"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse routes: %w", err)
	}
	var out []string
	for _, r := range doc.Routes {
		if r.Path == "" {
			return nil, errors.New("parse routes: a route has no path")
		}
		if !slices.Contains(out, r.Path) {
			out = append(out, r.Path)
		}
	}
	return out, nil
}

// WriteGatewayFiles writes the routes file and the OpenAPI document it names
// into dir (created 0700 if needed) and returns the routes file's path, for
// gateway.routes_file.
func WriteGatewayFiles(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("bank: gateway files: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, RoutesFileOpenAPI), openAPI, 0o600); err != nil {
		return "", fmt.Errorf("bank: gateway files: %w", err)
	}
	p := filepath.Join(dir, RoutesFileName)
	if err := os.WriteFile(p, routesYAML, 0o600); err != nil {
		return "", fmt.Errorf("bank: gateway files: %w", err)
	}
	return p, nil
}
