package cli

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/policy"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// memKeyStore is an in-memory policy.KeyStore.
type memKeyStore struct {
	mu   sync.Mutex
	keys map[string][]byte
}

func (m *memKeyStore) LoadOrCreate(name string, gen func() ([]byte, error)) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := m.keys[name]; ok {
		return k, nil
	}
	k, err := gen()
	if err != nil {
		return nil, err
	}
	m.keys = map[string][]byte{name: k}
	return k, nil
}

// policyEnv is a policy repository behind a TLS server with the policy
// API, and the dev.json that points the CLI at it.
type policyEnv struct {
	repo    *policy.Repository
	devJSON string
	cred    string
}

func newPolicyEnv(t *testing.T) *policyEnv {
	t.Helper()
	db := storetest.Open(t, store.SQLite)
	repo, err := policy.NewRepository(context.Background(), policy.RepositoryConfig{Issuer: "cli-test"},
		policy.RepositoryDeps{DB: db, Audit: audittest.Start(t, db), Keys: &memKeyStore{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = repo.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	cred := adminCredentialOfRightShape()
	auth := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+cred {
				httpapi.WriteError(w, r, nil, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthenticated, "bad credential"))
				return
			}
			next.ServeHTTP(w, r.WithContext(policy.WithCaller(r.Context(), policy.Caller{Kind: "admin", ID: "cred_cli"})))
		})
	}
	mux := http.NewServeMux()
	repo.Register(mux, auth, auth)
	srv := httptest.NewTLSServer(httpapi.WithRequestID(mux))
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	caFile, credFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "admin.credential")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(credFile, []byte(cred+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := devinfo.Write(dir, devinfo.Info{ControlPlaneURL: srv.URL, AdminCredentialFile: credFile, CACertFile: caFile, DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	return &policyEnv{repo: repo, devJSON: filepath.Join(dir, devinfo.FileName), cred: cred}
}

// run runs `bulwark policy ARGS` against the environment.
func (e *policyEnv) run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(append(append([]string{"policy"}, args...), "--dev-json", e.devJSON), strings.NewReader(stdin), &out, &errOut)
	if strings.Contains(out.String()+errOut.String(), e.cred) {
		t.Fatalf("bulwark policy %v printed the admin credential", args)
	}
	return code, out.String(), errOut.String()
}

func writePolicyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	cliAdminsRead = `@id("admins-read-routes")
permit (principal in Bulwark::Role::"admin", action == Bulwark::Action::"read", resource is Bulwark::Route);
`
	cliUsersWrite = `@id("users-write-routes")
permit (principal is Bulwark::User, action == Bulwark::Action::"write", resource is Bulwark::Route);
`
)

func TestPolicyRemoteCommands(t *testing.T) {
	t.Parallel()
	e := newPolicyEnv(t)
	expect := func(name string, wantCode int, stdin string, args []string, want ...string) string {
		t.Helper()
		code, out, errOut := e.run(t, stdin, args...)
		if code != wantCode {
			t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", name, code, wantCode, out, errOut)
		}
		for _, w := range want {
			if !strings.Contains(out+errOut, w) {
				t.Fatalf("%s: output lacks %q\nstdout: %s\nstderr: %s", name, w, out, errOut)
			}
		}
		return out
	}

	good := writePolicyDir(t, map[string]string{"admins.cedar": cliAdminsRead, "users.cedar": cliUsersWrite, "README.md": "not a policy"})
	expect("push", 0, "", []string{"push", good, "--comment", "first"}, "pushed version 1 (2 policies)")
	bad := writePolicyDir(t, map[string]string{
		"a.cedar": "// broken\npermit (principal, action, resource) when { 1 + };\n",
		"b.cedar": "// types\n\n@id(\"bad-type\")\npermit (principal, action == Bulwark::Action::\"read\", resource is Bulwark::Route) when { resource.method > 3 };\n",
	})
	expect("invalid push", 1, "", []string{"push", bad}, "a.cedar:2:", "b.cedar:3:1: policy \"bad-type\"", "2 problem(s)")
	if _, v := e.repo.Bundle(); e.repo.Snapshot().PolicyVersion != 1 || v != 2 {
		t.Fatalf("the refused push changed the active set: policy %d bundle %d", e.repo.Snapshot().PolicyVersion, v)
	}
	expect("push missing dir", 1, "", []string{"push", filepath.Join(good, "nope")})
	expect("push no arg", 2, "", []string{"push"})

	second := writePolicyDir(t, map[string]string{"admins.cedar": cliAdminsRead})
	expect("push second", 0, "", []string{"push", second}, "pushed version 2 (1 policies)")
	out := expect("versions", 0, "", []string{"versions"}, "VERSION", " 1", "*2", "admin:cred_cli", "first")
	if strings.Count(out, "\n") != 3 {
		t.Fatalf("versions table:\n%s", out)
	}
	expect("versions json", 0, "", []string{"versions", "-o", "json"}, `"versions"`, `"active": true`)
	expect("rollback", 0, "", []string{"rollback"}, "rolled back to version 1 as version 3 (2 policies)")
	expect("rollback --to", 0, "", []string{"rollback", "--to", "2"}, "rolled back to version 2 as version 4")
	expect("rollback to missing", 1, "", []string{"rollback", "--to", "99"}, "404", "not_found")
	expect("rollback negative", 2, "", []string{"rollback", "--to", "-1"})

	ents := filepath.Join(t.TempDir(), "entities.json")
	if err := os.WriteFile(ents, []byte(`[{"uid":{"type":"Bulwark::User","id":"alice"},"parents":[{"type":"Bulwark::Role","id":"admin"}],"attrs":{}},
		{"uid":{"type":"Bulwark::Role","id":"admin"},"parents":[],"attrs":{}}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("entities put", 0, "", []string{"entities", "put", ents}, "entities version 1")
	svc := `[{"uid":{"type":"Bulwark::Service","id":"spiffe://bulwark.local/ns/bank/sa/payments"},"parents":[],"attrs":{"namespace":"bank","trustDomain":"bulwark.local"}}]`
	expect("entities put stdin", 0, svc, []string{"entities", "put", "-"}, "entities version 2")
	out = expect("entities list", 0, "", []string{"entities", "list", "--type", "User"}, `"alice"`)
	if strings.Contains(out, "Service") {
		t.Fatalf("type filter: %s", out)
	}
	expect("entities get", 0, "", []string{"entities", "get", "Service", "spiffe://bulwark.local/ns/bank/sa/payments"}, `"trustDomain": "bulwark.local"`)
	expect("entities delete", 0, "", []string{"entities", "delete", "Service", "spiffe://bulwark.local/ns/bank/sa/payments"}, "deleted; entities version 3")
	expect("entities get deleted", 1, "", []string{"entities", "get", "Service", "spiffe://bulwark.local/ns/bank/sa/payments"}, "404")
	expect("entities put invalid", 1, `[{"uid":{"type":"Bulwark::Route","id":"r"},"parents":[],"attrs":{"method":5,"path":"/"}}]`,
		[]string{"entities", "put", "-"}, "does not match the schema")
	expect("entities replace", 0, svc, []string{"entities", "replace", "-"}, "entities version 4")
	out = expect("entities list all", 0, "", []string{"entities", "list"}, "payments")
	if strings.Contains(out, "alice") {
		t.Fatalf("replace kept alice: %s", out)
	}
	expect("entities get args", 2, "", []string{"entities", "get", "User"})

	// The active set decides with the entities.
	deadline := time.Now().Add(10 * time.Second)
	for e.repo.Snapshot().EntitiesVersion != 4 {
		if time.Now().After(deadline) {
			t.Fatal("snapshot did not follow the entities")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPolicyRemoteNeedsServer(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	missing := filepath.Join(t.TempDir(), "dev.json")
	code := Main([]string{"policy", "versions", "--dev-json", missing}, strings.NewReader(""), &out, &errOut)
	if code == 0 {
		t.Fatalf("versions without a server: exit 0: %s", out.String())
	}
}

// TestPolicyRemoteAgainstControlPlane drives the commands against a real
// in-process control plane with its admin authentication.
func TestPolicyRemoteAgainstControlPlane(t *testing.T) {
	t.Parallel()
	env := newCPEnv(t)
	dir := writePolicyDir(t, map[string]string{"admins.cedar": cliAdminsRead})
	if code, out, errOut := env.run(t, "policy", "push", dir, "--comment", "cp"); code != 0 || !strings.Contains(out, "pushed version") {
		t.Fatalf("push: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := env.run(t, "policy", "versions")
	if code != 0 || !strings.Contains(out, "cp") || !strings.Contains(out, "admin:") {
		t.Fatalf("versions: exit %d\n%s%s", code, out, errOut)
	}
	bad := writePolicyDir(t, map[string]string{"a.cedar": "permit (principal, action, resource) when { 1 + };\n"})
	if code, out, errOut := env.run(t, "policy", "push", bad); code != 1 || !strings.Contains(out, "a.cedar:1:") {
		t.Fatalf("invalid push: exit %d\n%s%s", code, out, errOut)
	}
	ents := filepath.Join(t.TempDir(), "e.json")
	if err := os.WriteFile(ents, []byte(`[{"uid":{"type":"Bulwark::Role","id":"admin"},"parents":[],"attrs":{}}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := env.run(t, "policy", "entities", "put", ents); code != 0 || !strings.Contains(out, "entities version") {
		t.Fatalf("entities put: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := env.run(t, "policy", "entities", "get", "Role", "admin"); code != 0 || !strings.Contains(out, `"admin"`) {
		t.Fatalf("entities get: exit %d\n%s%s", code, out, errOut)
	}
}
