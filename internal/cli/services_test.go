package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/audit/audittest"
	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/internal/directory"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// servicesEnv is a service directory behind a TLS server that requires
// the real admin credential, and the dev.json that points the CLI at it.
type servicesEnv struct {
	dir     *directory.Directory
	devJSON string
	cred    string
}

func newServicesEnv(t *testing.T) *servicesEnv {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t, store.SQLite)
	d, err := directory.New(directory.Config{TrustDomain: "bulwark.test"}, directory.Deps{DB: db, Audit: audittest.Start(t, db)})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := adminauth.New(db, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := auth.EnsureCredential(ctx)
	if err != nil || cred == "" {
		t.Fatalf("admin credential: %v", err)
	}
	mux := http.NewServeMux()
	d.Register(mux, auth.Require, func(h http.Handler) http.Handler { return h })
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
	return &servicesEnv{dir: d, devJSON: filepath.Join(dir, devinfo.FileName), cred: cred}
}

// run runs `bulwark services ARGS` as Main would.
func (e *servicesEnv) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRootCommand()
	root.SetArgs(append(append([]string{"services"}, args...), "--dev-json", e.devJSON))
	root.SetIn(strings.NewReader(""))
	root.SetOut(&out)
	root.SetErr(&errOut)
	if err := root.ExecuteContext(context.Background()); err != nil {
		errOut.WriteString("bulwark: " + err.Error() + "\n")
		code = 1
		var u *usageError
		if errors.As(err, &u) {
			code = 2
		}
	}
	if strings.Contains(out.String()+errOut.String(), e.cred) {
		t.Fatalf("bulwark services %v printed the admin credential", args)
	}
	return code, out.String(), errOut.String()
}

func TestServicesCommands(t *testing.T) {
	t.Parallel()
	e := newServicesEnv(t)
	const id = "spiffe://bulwark.test/ns/bank/sa/payments"
	putArgs := []string{"put", "--id", id, "--name", "payments", "--endpoint", "127.0.0.1:9001",
		"--endpoint", "payments.bank.internal:9001", "--owner", "team-payments", "--data-class", "confidential", "--region", "eu"}
	steps := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"empty list", []string{"list"}, 0, []string{"NAME", "SPIFFE ID"}},
		{"create", putArgs, 0, []string{"created service payments", id}},
		{"replace", append(putArgs[:len(putArgs):len(putArgs)], "--data-class", "restricted"), 0, []string{"updated service payments"}},
		{"list table", []string{"list"}, 0, []string{"payments", id, "127.0.0.1:9001,payments.bank.internal:9001", "team-payments", "confidential,restricted", "eu"}},
		{"get by id", []string{"get", id}, 0, []string{"name:", "payments", "owner:", "team-payments"}},
		{"get by name", []string{"get", "payments", "-o", "json"}, 0, []string{`"id": "` + id + `"`}},
		{"get unknown name", []string{"get", "nobody"}, 1, []string{`no service named "nobody"`}},
		{"get unknown id", []string{"get", "spiffe://bulwark.test/nobody"}, 1, []string{"404", "not_found"}},
		{"bad endpoint", []string{"put", "--id", id, "--name", "payments", "--endpoint", "127.0.0.1", "--owner", "o"}, 1,
			[]string{"400", "endpoints[0]"}},
		{"other trust domain", []string{"put", "--id", "spiffe://evil.test/x", "--name", "x", "--endpoint", "a:1", "--owner", "o"}, 1,
			[]string{"400", "id: trust domain"}},
		{"missing owner", []string{"put", "--id", id, "--name", "payments", "--endpoint", "a:1"}, 2, []string{"--owner is required"}},
		{"bad output", []string{"list", "-o", "yaml"}, 2, []string{"-o must be table or json"}},
		{"delete by name refused", []string{"delete", "payments"}, 2, []string{"must be a SPIFFE ID"}},
		{"delete", []string{"delete", id}, 0, []string{"deleted service " + id}},
		{"delete again", []string{"delete", id}, 1, []string{"404"}},
	}
	for _, s := range steps {
		code, out, errOut := e.run(t, s.args...)
		if code != s.code {
			t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", s.name, code, s.code, out, errOut)
		}
		for _, w := range s.want {
			if !strings.Contains(out+errOut, w) {
				t.Fatalf("%s: output lacks %q\nstdout: %s\nstderr: %s", s.name, w, out, errOut)
			}
		}
	}

	// JSON output of the list decodes as the API's type.
	if _, err := e.dir.Put(context.Background(), directory.Service{ID: "spiffe://bulwark.test/ledger", Name: "ledger",
		Endpoints: []string{"127.0.0.1:9002"}, Owner: "team-ledger"}, "test"); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := e.run(t, "list", "-o", "json")
	var list directory.ServiceList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Services) != 1 || list.Services[0].Name != "ledger" {
		t.Fatalf("list -o json: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func TestServicesRefusesWrongCredential(t *testing.T) {
	t.Parallel()
	e := newServicesEnv(t)
	credFile := filepath.Join(t.TempDir(), "wrong.credential")
	if err := os.WriteFile(credFile, []byte(adminCredentialOfRightShape()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := e.run(t, "put", "--id", "spiffe://bulwark.test/x", "--name", "x", "--endpoint", "a:1", "--owner", "o",
		"--credential-file", credFile)
	if code != 1 || !strings.Contains(errOut, "401") {
		t.Fatalf("wrong credential: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if list, err := e.dir.List(context.Background()); err != nil || len(list) != 0 {
		t.Fatalf("a refused put stored a service: %+v, %v", list, err)
	}
}
