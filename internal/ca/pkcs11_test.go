//go:build cgo

package ca

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

// softHSMModule is SoftHSM's PKCS#11 library (Debian package softhsm2).
const softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// newSoftHSMToken makes an empty SoftHSM token in a temporary directory.
// SOFTHSM2_CONF is process-wide, so tests using it do not run in parallel.
func newSoftHSMToken(t *testing.T) PKCS11Config {
	t.Helper()
	if _, err := os.Stat(softHSMModule); err != nil {
		t.Fatalf("SoftHSM is required for the PKCS#11 tests (apt-get install softhsm2): %v", err)
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
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "bulwark-test", "--pin", "1234", "--so-pin", "5678").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util: %v: %s", err, out)
	}
	return PKCS11Config{Module: softHSMModule, TokenLabel: "bulwark-test", PIN: "1234"}
}

// TestPKCS11Root runs on SQLite only: SOFTHSM2_CONF is process-wide, which
// rules out the parallel backends of storetest.ForEachBackend, and the
// rotation's storage is covered on both by TestRotateWithOfflineRoot.
func TestPKCS11Root(t *testing.T) {
	cfg := newSoftHSMToken(t)
	env := newCAEnv(t, storetest.Open(t, store.SQLite))
	cert, err := InitPKCS11Root(env.td, 24*time.Hour, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitPKCS11Root(env.td, 24*time.Hour, cfg); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second init: %v; want ErrInvalid (key exists)", err)
	}
	// Refusals first: PKCS#11 logins are per process, so while a session
	// is open a wrong PIN would not be noticed.
	other, _, err := InitRoot(env.td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]PKCS11Config{
		"wrong PIN":     {Module: cfg.Module, TokenLabel: cfg.TokenLabel, PIN: "0000"},
		"unknown token": {Module: cfg.Module, TokenLabel: "nope", PIN: "1234"},
		"no module":     {TokenLabel: cfg.TokenLabel, PIN: "1234"},
		"unknown label": {Module: cfg.Module, TokenLabel: cfg.TokenLabel, PIN: "1234", KeyLabel: "other"},
	} {
		if r, err := OpenPKCS11Root(c, cert); err == nil {
			r.Close()
			t.Errorf("%s: opened", name)
		}
	}
	if _, err := OpenPKCS11Root(cfg, other); !errors.Is(err, ErrInvalid) {
		t.Fatalf("certificate of another root: %v; want ErrInvalid", err)
	}
	root, err := OpenPKCS11Root(cfg, cert)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := env.a.Rotate(context.Background(), root.Signer(), cert); err != nil {
		t.Fatal(err)
	}
	if err := env.a.state.Load().signer.cert.CheckSignatureFrom(cert); err != nil {
		t.Fatalf("the intermediate is not signed by the token's root: %v", err)
	}
}
