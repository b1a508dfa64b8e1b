package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/ca"
	"github.com/bulwarksec/bulwark/internal/ca/caclient"
)

// runCA runs `bulwark ca ARGS` against the control plane of env.
func (e *cpEnv) runCA(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runCACommand(append(args, "--dev-json", e.devJSON), &out, &errOut)
	if e.cred != "" && strings.Contains(out.String()+errOut.String(), e.cred) {
		t.Fatalf("bulwark ca %v printed the admin credential", args)
	}
	return code, out.String(), errOut.String()
}

// runCACommand executes the ca command under a bare root, like Main.
func runCACommand(args []string, stdout, stderr *bytes.Buffer) int {
	root := &cobra.Command{Use: "bulwark", SilenceUsage: true, SilenceErrors: true}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(newCACommand())
	root.SetArgs(append([]string{"ca"}, args...))
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(context.Background()); err != nil {
		stderr.WriteString("bulwark: " + err.Error() + "\n")
		var u *usageError
		if errors.As(err, &u) {
			return 2
		}
		return 1
	}
	return 0
}

func TestCAInit(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "root")
	var out, errOut bytes.Buffer
	if code := runCACommand([]string{"init", "--out", dir, "--trust-domain", "example.test"}, &out, &errOut); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut.String())
	}
	key := filepath.Join(dir, ca.RootKeyFileName)
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root key: %v %v", fi, err)
	}
	cert, _, err := ca.LoadRoot(filepath.Join(dir, ca.RootCertFileName), key)
	if err != nil || !cert.IsCA || len(cert.PermittedURIDomains) != 1 || cert.PermittedURIDomains[0] != "example.test" {
		t.Fatalf("root: %v", err)
	}
	before, _ := os.ReadFile(key)

	tests := []struct {
		name string
		args []string
		code int
	}{
		{"existing files are never overwritten", []string{"init", "--out", dir, "--trust-domain", "example.test"}, 1},
		{"no --out", []string{"init"}, 2},
		{"bad trust domain", []string{"init", "--out", t.TempDir(), "--trust-domain", "Not A Domain"}, 2},
		{"bad ttl", []string{"init", "--out", t.TempDir(), "--ttl", "-1h"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := runCACommand(tt.args, &out, &errOut); code != tt.code {
				t.Fatalf("exit %d, want %d: %s", code, tt.code, errOut.String())
			}
		})
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
		t.Fatal("the root key changed")
	}
}

func TestCACommands(t *testing.T) {
	t.Parallel()
	env := newCPEnv(t)
	dir := t.TempDir()

	code, out, errOut := env.runCA(t, "entry", "create", "--spiffe-id", "spiffe://bulwark.local/ns/bank/sa/payments",
		"--selector", "unix:uid:1001", "--selector", "unix:path:/usr/bin/payments", "--ttl", "30m")
	if code != 0 || !strings.Contains(out, "ent_") || !strings.Contains(out, "unix:path:/usr/bin/payments") || !strings.Contains(out, "30m0s") {
		t.Fatalf("entry create: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = env.runCA(t, "entry", "list", "-o", "json")
	var list ca.EntryList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Entries) != 1 || list.Entries[0].TTLSeconds != 1800 {
		t.Fatalf("entry list: exit %d\n%s%s", code, out, errOut)
	}
	entryID := list.Entries[0].ID

	refused := []struct {
		name string
		args []string
		code int
	}{
		{"unknown selector type", []string{"entry", "create", "--spiffe-id", "spiffe://bulwark.local/x", "--selector", "k8s:ns:default"}, 2},
		{"no selector", []string{"entry", "create", "--spiffe-id", "spiffe://bulwark.local/x"}, 2},
		{"foreign trust domain", []string{"entry", "create", "--spiffe-id", "spiffe://evil.test/x", "--selector", "unix:uid:1"}, 1},
		{"delete unknown entry", []string{"entry", "delete", "ent_nope"}, 1},
		{"bad output", []string{"certs", "-o", "yaml"}, 2},
		{"quarantine a non-SPIFFE ID", []string{"quarantine", "https://example.com"}, 2},
		{"join token without agent", []string{"join-token", "create"}, 2},
		{"root cert without key", []string{"rotate", "--root-cert", "r.crt"}, 2},
		{"missing root files", []string{"rotate", "--root-cert", "r.crt", "--root-key", "r.key"}, 1},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			if code, out, errOut := env.runCA(t, tt.args...); code != tt.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, tt.code, out, errOut)
			}
		})
	}
	list = ca.EntryList{}
	if code, out, _ := env.runCA(t, "entry", "list", "-o", "json"); code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Entries) != 1 {
		t.Fatalf("refused commands changed the entries:\n%s", out)
	}

	// A join token written to a file is not printed, and it works.
	tokenFile := filepath.Join(dir, "join.token")
	code, out, errOut = env.runCA(t, "join-token", "create", "--agent", "node-1", "--ttl", "5m", "--out", tokenFile)
	if code != 0 || !strings.Contains(out, "spiffe://bulwark.local/agent/node-1") {
		t.Fatalf("join-token create: exit %d\n%s%s", code, out, errOut)
	}
	fi, err := os.Stat(tokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	tokenBytes, _ := os.ReadFile(tokenFile)
	token := strings.TrimSpace(string(tokenBytes))
	if token == "" || strings.Contains(out, token) {
		t.Fatalf("token file empty, or the token printed too:\n%s", out)
	}
	pemBytes, err := os.ReadFile(env.srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	res, err := caclient.New(env.srv.URL(), pool).Join(context.Background(), token, csr)
	if err != nil {
		t.Fatalf("join with the CLI's token: %v", err)
	}

	code, out, errOut = env.runCA(t, "certs", "--limit", "10", "-o", "json")
	var certs ca.CertList
	if code != 0 || json.Unmarshal([]byte(out), &certs) != nil || len(certs.Certificates) == 0 {
		t.Fatalf("certs: exit %d\n%s%s", code, out, errOut)
	}
	found := false
	for _, c := range certs.Certificates {
		found = found || c.SPIFFEID == res.ID.String()
	}
	if !found {
		t.Fatalf("certs lack the agent's SVID:\n%s", out)
	}
	if code, out, errOut = env.runCA(t, "certs"); code != 0 || !strings.Contains(out, "NOT AFTER") || !strings.Contains(out, res.ID.String()) {
		t.Fatalf("certs table: exit %d\n%s%s", code, out, errOut)
	}

	serial := res.SVID[0].SerialNumber.Text(16)
	if code, out, errOut = env.runCA(t, "revoke", serial, "--reason", "lost laptop"); code != 0 || !strings.Contains(out, "denied serial") {
		t.Fatalf("revoke: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut = env.runCA(t, "quarantine", "spiffe://bulwark.local/ns/bank/sa/payments", "--reason", "incident 42"); code != 0 || !strings.Contains(out, "denied spiffe id") {
		t.Fatalf("quarantine: exit %d\n%s%s", code, out, errOut)
	}
	deny, _, err := caclient.New(env.srv.URL(), pool).DenyList(context.Background(), 0, 0)
	if err != nil || len(deny) != 2 {
		t.Fatalf("deny list after revoke and quarantine: %+v %v", deny, err)
	}

	if code, out, errOut = env.runCA(t, "rotate"); code != 0 || !strings.Contains(out, "rotated: 2 intermediate") {
		t.Fatalf("rotate: exit %d\n%s%s", code, out, errOut)
	}

	if code, out, errOut = env.runCA(t, "entry", "delete", entryID); code != 0 || !strings.Contains(out, "deleted entry "+entryID) {
		t.Fatalf("entry delete: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ = env.runCA(t, "entry", "list"); code != 0 || strings.Contains(out, "ent_") {
		t.Fatalf("entry list after delete:\n%s", out)
	}
}

// TestCARotateWithOfflineRoot rotates to an intermediate signed by an
// offline root: the server makes the key, the CLI signs its CSR with the
// root files, and the server installs it. A root of another trust domain
// is refused and changes nothing.
func TestCARotateWithOfflineRoot(t *testing.T) {
	t.Parallel()
	env := newCPEnv(t)
	dir := filepath.Join(t.TempDir(), "root")
	var out, errOut bytes.Buffer
	if code := runCACommand([]string{"init", "--out", dir, "--trust-domain", "bulwark.local"}, &out, &errOut); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut.String())
	}
	otherDir := filepath.Join(t.TempDir(), "other")
	if code := runCACommand([]string{"init", "--out", otherDir, "--trust-domain", "evil.test"}, &out, &errOut); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut.String())
	}
	rootCert, rootKey := filepath.Join(dir, ca.RootCertFileName), filepath.Join(dir, ca.RootKeyFileName)

	code, o, e := env.runCA(t, "rotate", "--root-cert", filepath.Join(otherDir, ca.RootCertFileName), "--root-key", filepath.Join(otherDir, ca.RootKeyFileName))
	if code != 1 {
		t.Fatalf("rotate with a foreign root: exit %d\n%s%s", code, o, e)
	}
	if n := len(env.srv.CA().X509Authorities()); n != 1 {
		t.Fatalf("a refused rotation left %d trusted intermediates", n)
	}

	if code, o, e = env.runCA(t, "rotate", "--root-cert", rootCert, "--root-key", rootKey, "--ttl", "48h"); code != 0 || !strings.Contains(o, "rotated: 2 intermediate") {
		t.Fatalf("rotate with the offline root: exit %d\n%s%s", code, o, e)
	}
	root, _, err := ca.LoadRoot(rootCert, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	auths := env.srv.CA().X509Authorities()
	signedByRoot := 0
	for _, c := range auths {
		if c.CheckSignatureFrom(root) == nil {
			signedByRoot++
		}
	}
	if signedByRoot != 1 {
		t.Fatalf("%d of %d trusted intermediates are signed by the offline root, want 1", signedByRoot, len(auths))
	}
	// The sealed dev root can no longer take the CA back.
	if code, o, e = env.runCA(t, "rotate"); code != 1 {
		t.Fatalf("dev-root rotate after the offline root: exit %d\n%s%s", code, o, e)
	}
	// New SVIDs chain to the offline root's intermediate.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	tokenFile := filepath.Join(t.TempDir(), "join.token")
	if code, o, e = env.runCA(t, "join-token", "create", "--agent", "node-9", "--out", tokenFile); code != 0 {
		t.Fatalf("join-token: exit %d\n%s%s", code, o, e)
	}
	tok, _ := os.ReadFile(tokenFile)
	pemBytes, _ := os.ReadFile(env.srv.CAFile())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	res, err := caclient.New(env.srv.URL(), pool).Join(context.Background(), strings.TrimSpace(string(tok)), csr)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.SVID) != 2 || res.SVID[1].CheckSignatureFrom(root) != nil {
		t.Fatal("the agent SVID's intermediate is not the offline root's")
	}
}

// TestCAPKCS11Root creates the root key inside a SoftHSM2 token with
// `ca init --pkcs11-*` and rotates the server to an intermediate signed by
// it, the key never leaving the token. Not parallel: SOFTHSM2_CONF is
// process-wide.
func TestCAPKCS11Root(t *testing.T) {
	const module = "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(module); err != nil {
		t.Fatalf("SoftHSM2 is required (make test-deps installs it): %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.MkdirAll(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "bulwark-cli", "--pin", "4321", "--so-pin", "8765").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v: %s", err, out)
	}
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte("4321\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rootDir := filepath.Join(dir, "root")
	hsm := []string{"--pkcs11-module", module, "--pkcs11-token", "bulwark-cli", "--pkcs11-pin-file", pinFile}

	var out, errOut bytes.Buffer
	if code := runCACommand(append([]string{"init", "--out", rootDir}, hsm...), &out, &errOut); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut.String())
	}
	if _, err := os.Stat(filepath.Join(rootDir, ca.RootKeyFileName)); !os.IsNotExist(err) {
		t.Fatalf("a root key file was written for a PKCS#11 root: %v", err)
	}
	rootCert := filepath.Join(rootDir, ca.RootCertFileName)
	raw, err := os.ReadFile(rootCert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}

	refused := []struct {
		name string
		args []string
		code int
	}{
		{"init again: the key exists", append([]string{"init", "--out", filepath.Join(dir, "again")}, hsm...), 1},
		{"module without token", []string{"init", "--out", filepath.Join(dir, "x"), "--pkcs11-module", module}, 2},
	}
	for _, tt := range refused {
		out.Reset()
		errOut.Reset()
		if code := runCACommand(tt.args, &out, &errOut); code != tt.code {
			t.Fatalf("%s: exit %d, want %d: %s", tt.name, code, tt.code, errOut.String())
		}
	}

	env := newCPEnv(t)
	if code, o, e := env.runCA(t, append([]string{"rotate", "--root-cert", rootCert, "--root-key", "x.key"}, hsm...)...); code != 2 {
		t.Fatalf("rotate with both a key file and a token: exit %d\n%s%s", code, o, e)
	}
	if code, o, e := env.runCA(t, append([]string{"rotate", "--root-cert", rootCert}, hsm...)...); code != 0 || !strings.Contains(o, "rotated: 2 intermediate") {
		t.Fatalf("rotate with the PKCS#11 root: exit %d\n%s%s", code, o, e)
	}
	signed := 0
	for _, c := range env.srv.CA().X509Authorities() {
		if c.CheckSignatureFrom(root) == nil {
			signed++
		}
	}
	if signed != 1 {
		t.Fatalf("%d trusted intermediates signed by the PKCS#11 root, want 1", signed)
	}
}
