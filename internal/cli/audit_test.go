package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/bulwarksec/bulwark/internal/adminauth"
	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/internal/httpapi"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

const cliTestOrigin = "bulwark.test/cli-audit"

// auditEnv is a log served over HTTPS with its dev.json, as `bulwark dev`
// leaves it.
type auditEnv struct {
	db      *store.DB
	log     *audit.Log
	devJSON string
	cred    string
	vkey    string
}

func newAuditEnv(t *testing.T, events int) *auditEnv {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t, store.SQLite)
	skey, vkey, err := audit.GenerateSigningKey(cliTestOrigin)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.New(audit.Config{Origin: cliTestOrigin, CheckpointInterval: time.Hour},
		audit.Deps{DB: db, SignerKey: skey, VerifierKey: vkey})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("log: %v", err)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); !l.Ready(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("log not ready")
		}
	}
	evs := make([]*audit.Event, events)
	for i := range evs {
		evs[i] = &audit.Event{ClassName: "API Activity", ActivityName: "Read", StatusID: audit.StatusSuccess,
			Time: 1_700_000_000_000 + int64(i), Metadata: audit.Metadata{UID: fmt.Sprintf("evt-%d", i)}}
	}
	if _, err := l.Append(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if _, err := l.IssueCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	auth, err := adminauth.New(db, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := auth.EnsureCredential(ctx)
	if err != nil {
		t.Fatal(err)
	}
	api, err := audit.NewAPI(l, audit.APIConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux, auth.Require)
	srv := httptest.NewUnstartedServer(httpapi.WithRequestID(mux))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are part of the tests
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin.credential"), []byte(cred+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	info := devinfo.Info{ControlPlaneURL: srv.URL, AdminCredentialFile: "admin.credential", CACertFile: caFile,
		DataDir: dir, AuditOrigin: cliTestOrigin, AuditPublicKey: vkey}
	if err := devinfo.Write(dir, info); err != nil {
		t.Fatal(err)
	}
	return &auditEnv{db: db, log: l, devJSON: filepath.Join(dir, devinfo.FileName), cred: cred, vkey: vkey}
}

// run runs the bulwark CLI and returns its exit code and output.
func (e *auditEnv) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(args, strings.NewReader(""), &out, &errOut)
	if strings.Contains(out.String()+errOut.String(), e.cred) {
		t.Fatalf("bulwark %v printed the admin credential", args)
	}
	return code, out.String(), errOut.String()
}

func TestAuditCommands(t *testing.T) {
	t.Parallel()
	env := newAuditEnv(t, 40)
	state := filepath.Join(t.TempDir(), "state.json")
	dj := "--dev-json=" + env.devJSON

	code, out, errOut := env.run(t, "audit", "verify", dj, "--state", state)
	if code != 0 || !strings.HasPrefix(out, "verified 40 entries, checkpoint size 40 root ") ||
		!strings.Contains(out, "no previous checkpoint") {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
	// The progress bar goes to stderr only when asked (stderr is no terminal here).
	if errOut != "" {
		t.Fatalf("verify wrote to stderr: %q", errOut)
	}
	if code, out, errOut = env.run(t, "audit", "verify", dj, "--state", state, "--progress"); code != 0 ||
		!strings.Contains(out, "consistent with previous size 40") || !strings.Contains(errOut, "verifying") {
		t.Fatalf("second verify: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = env.run(t, "audit", "tail", dj, "-n", "3")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("tail: exit %d\n%s%s", code, out, errOut)
	}
	for i, l := range lines {
		ev, err := audit.DecodeEvent([]byte(l))
		if err != nil || ev.Metadata.UID != fmt.Sprintf("evt-%d", 37+i) {
			t.Fatalf("tail line %d: %q: %v", i, l, err)
		}
	}

	code, out, errOut = env.run(t, "audit", "prove", dj, "7")
	if code != 0 {
		t.Fatalf("prove: exit %d\n%s", code, errOut)
	}
	r, err := audit.ParseReceipt([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(env.vkey)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := env.log.Entries(context.Background(), 7, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.VerifyReceipt(r, entries[0].Data, cliTestOrigin, v); err != nil {
		t.Fatalf("the printed receipt: %v", err)
	}

	bundle := filepath.Join(t.TempDir(), "bundle")
	code, out, errOut = env.run(t, "audit", "export", dj, "--out", bundle, "--receipt", "2", "--receipt", "39")
	if code != 0 || !strings.Contains(out, "exported 40 entries") || !strings.Contains(out, "2 receipts") {
		t.Fatalf("export: exit %d\n%s%s", code, out, errOut)
	}
	for _, name := range []string{"checkpoint", "key", "tile/0/000.p/40", "tile/entries/000.p/40", "receipts/39.tlog-proof"} {
		if _, err := os.Stat(filepath.Join(bundle, name)); err != nil {
			t.Errorf("bundle: %v", err)
		}
	}
	archive := filepath.Join(t.TempDir(), "audit.tar.gz")
	if code, out, errOut = env.run(t, "audit", "export", dj, "--out", archive); code != 0 {
		t.Fatalf("export .tar.gz: exit %d\n%s%s", code, out, errOut)
	}
	// Offline: a dev.json whose server cannot be reached, the key by flag.
	offline := filepath.Join(t.TempDir(), devinfo.FileName)
	if err := os.WriteFile(offline, []byte(`{"control_plane_url":"https://127.0.0.1:1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{bundle, archive} {
		code, out, errOut = env.run(t, "audit", "verify", "--dev-json", offline, "--key", env.vkey, "--bundle", b, "--payloads")
		if code != 0 || !strings.HasPrefix(out, "verified 40 entries") {
			t.Fatalf("verify --bundle %s: exit %d\n%s%s", b, code, out, errOut)
		}
	}
	if code, _, _ := env.run(t, "audit", "verify", "--dev-json", filepath.Join(t.TempDir(), "none.json"), "--bundle", bundle); code == 0 {
		t.Fatal("a --dev-json that does not exist was ignored")
	}

	// Tampering makes verify fail, naming the entry, with exit code 1.
	var data []byte
	if err := env.db.QueryRowContext(context.Background(), "SELECT data FROM audit_entries WHERE idx = 21").Scan(&data); err != nil {
		t.Fatal(err)
	}
	data = bytes.Replace(data, []byte("evt-21"), []byte("evt-99"), 1)
	if _, err := env.db.ExecContext(context.Background(), "UPDATE audit_entries SET data = ? WHERE idx = 21", data); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = env.run(t, "audit", "verify", dj, "--state", state)
	if code != 1 || !strings.Contains(errOut, "entry 21 does not match the log") {
		t.Fatalf("verify after tampering: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = env.run(t, "audit", "prove", dj, "21"); code != 1 || !strings.Contains(errOut, "entry 21") {
		t.Fatalf("prove a tampered entry: exit %d: %s", code, errOut)
	}
}

func TestAuditCommandErrors(t *testing.T) {
	t.Parallel()
	env := newAuditEnv(t, 3)
	dj := "--dev-json=" + env.devJSON
	otherKey := func() string {
		_, vkey, err := audit.GenerateSigningKey(cliTestOrigin)
		if err != nil {
			t.Fatal(err)
		}
		return vkey
	}()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"prove without index", []string{"audit", "prove", dj}, 2, "accepts 1 arg"},
		{"prove bad index", []string{"audit", "prove", dj, "x"}, 2, "not an entry index"},
		{"prove beyond the checkpoint", []string{"audit", "prove", dj, "3"}, 1, "not in the latest checkpoint"},
		{"verify extra argument", []string{"audit", "verify", dj, "extra"}, 2, "unknown command"},
		{"unknown flag", []string{"audit", "verify", "--frobnicate"}, 2, "unknown flag"},
		{"export without --out", []string{"audit", "export", dj}, 2, "--out is required"},
		{"missing dev.json", []string{"audit", "tail", "--dev-json", "/nonexistent/dev.json"}, 1, "dev.json"},
		{"wrong key", []string{"audit", "verify", dj, "--key", otherKey, "--state", filepath.Join(t.TempDir(), "s.json")}, 1, "verify checkpoint"},
		{"wrong credential", []string{"audit", "tail", dj, "--credential-file", writeTemp(t, adminauth.Prefix+strings.Repeat("0", 16)+"_"+strings.Repeat("A", 43))}, 1, "unauthenticated"},
		{"untrusted CA", []string{"audit", "tail", dj, "--ca-cert", writeTemp(t, "not a certificate")}, 1, "CA certificate"},
		{"system roots only", []string{"audit", "tail", "--server", serverURL(t, env.devJSON)}, 1, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := env.run(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Fatalf("exit %d, want %d; stderr %q, want %q", code, tt.wantCode, errOut, tt.wantErr)
			}
		})
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func serverURL(t *testing.T, devJSON string) string {
	t.Helper()
	b, err := os.ReadFile(devJSON)
	if err != nil {
		t.Fatal(err)
	}
	var info devinfo.Info
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	return info.ControlPlaneURL
}
