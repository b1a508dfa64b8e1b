// Package repo checks rules of the house that hold across the whole
// module: every package is documented, the public SDK never depends on
// server internals, and nothing but the binary depends on the CLI wiring.
package repo

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/bulwarksec/bulwark"

type pkg struct {
	ImportPath string
	Name       string
	Doc        string
	Deps       []string
	Imports    []string
	GoFiles    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	return pkgs
}

func TestEveryPackageHasADocComment(t *testing.T) {
	t.Parallel()
	for _, p := range listPackages(t) {
		if len(p.GoFiles) == 0 {
			continue // test-only package; its doc lives on the test files
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no package doc comment", p.ImportPath)
		}
	}
}

// The SDK keeps its dependencies small: the standard library, plus
// go-jose for JOSE, gRPC (with what gRPC itself needs) only in the gRPC
// interceptors, go-spiffe (with what it needs: the Workload API client
// brings gRPC and protobuf) only in the mutual-TLS package and its test
// CA, and cedar-go
// (with what it needs) and go-spiffe's spiffeid only in the embedded
// authorizer; spiffeid (which needs nothing else) also in sdk/peer, whose
// Identity names the calling workload.
const (
	joseModule      = "github.com/go-jose/go-jose/v4"
	grpcModule      = "google.golang.org/grpc"
	grpcSDKPackage  = module + "/sdk/authn/authngrpc"
	spiffeModule    = "github.com/spiffe/go-spiffe/v2"
	mtlsSDKPackage  = module + "/sdk/mtls"
	cedarModule     = "github.com/cedar-policy/cedar-go"
	spiffeIDPackage = spiffeModule + "/spiffeid"
	authzSDKPackage = module + "/sdk/authz"
	peerSDKPackage  = module + "/sdk/peer"
)

// inModule reports whether package path belongs to module mod.
func inModule(path, mod string) bool {
	return path == mod || strings.HasPrefix(path, mod+"/")
}

// thirdParty reports whether path is a package outside this module and the
// standard library (whose first element has no dot).
func thirdParty(path string) bool {
	return !inModule(path, module) && strings.Contains(strings.SplitN(path, "/", 2)[0], ".")
}

// depsOf lists the packages the given packages depend on, themselves
// included.
func depsOf(t *testing.T, pkgs []string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	if len(pkgs) == 0 {
		return out
	}
	b, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).Output()
	if err != nil {
		t.Fatalf("go list -deps %v: %v", pkgs, err)
	}
	for _, line := range strings.Fields(string(b)) {
		out[line] = true
	}
	return out
}

func TestSDKDoesNotImportInternals(t *testing.T) {
	t.Parallel()
	for _, p := range listPackages(t) {
		if !strings.HasPrefix(p.ImportPath, module+"/sdk/") {
			continue
		}
		grpcOK := p.ImportPath == grpcSDKPackage
		spiffeOK := p.ImportPath == mtlsSDKPackage || p.ImportPath == mtlsSDKPackage+"/mtlstest"
		authzOK := p.ImportPath == authzSDKPackage
		peerOK := p.ImportPath == peerSDKPackage
		var allowedImports []string // third-party imports whose own dependencies are allowed
		for _, imp := range p.Imports {
			switch {
			case !thirdParty(imp), inModule(imp, joseModule):
			case grpcOK && inModule(imp, grpcModule), spiffeOK && inModule(imp, spiffeModule),
				authzOK && (inModule(imp, cedarModule) || imp == spiffeIDPackage), peerOK && imp == spiffeIDPackage:
				allowedImports = append(allowedImports, imp)
			default:
				t.Errorf("SDK package %s imports third-party %s: keep the SDK's dependencies small (standard library, go-jose; gRPC only in authngrpc; go-spiffe only in mtls, its spiffeid also in authz and peer; cedar-go only in authz)", p.ImportPath, imp)
			}
		}
		allowedDeps := depsOf(t, allowedImports)
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module+"/internal/") {
				t.Errorf("SDK package %s depends on %s: the SDK must not import server internals", p.ImportPath, d)
			}
			if thirdParty(d) && !inModule(d, joseModule) && !allowedDeps[d] {
				t.Errorf("SDK package %s depends on third-party %s: keep the SDK's dependencies small (standard library, go-jose; gRPC only in authngrpc; go-spiffe only in mtls; cedar-go only in authz)", p.ImportPath, d)
			}
		}
	}
}

func TestOnlyTheBinaryImportsTheCLI(t *testing.T) {
	t.Parallel()
	for _, p := range listPackages(t) {
		if p.ImportPath == module+"/cmd/bulwark" {
			continue
		}
		for _, imp := range p.Imports {
			if imp == module+"/internal/cli" {
				t.Errorf("%s imports internal/cli: dependencies point inward, cli wires everything", p.ImportPath)
			}
		}
	}
}

func TestNoForbiddenPackageNames(t *testing.T) {
	t.Parallel()
	for _, p := range listPackages(t) {
		switch p.Name {
		case "util", "utils", "common", "helpers", "models", "misc":
			t.Errorf("package %s is named %q: name a package for what it provides", p.ImportPath, p.Name)
		}
	}
}
