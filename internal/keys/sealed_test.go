package keys_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwarksec/bulwark/internal/keys"
)

func TestSealedRoundTripAndPermissions(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys")
	s, err := keys.OpenSealed(dir)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("checkpoint signing key material")
	got, err := s.LoadOrCreate("audit-signer", func() ([]byte, error) { return secret, nil })
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("LoadOrCreate = %q, %v", got, err)
	}
	// A second open sees the same key and does not regenerate it.
	s2, err := keys.OpenSealed(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err = s2.LoadOrCreate("audit-signer", func() ([]byte, error) { return []byte("other"), nil })
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("reopened LoadOrCreate = %q, %v", got, err)
	}
	for _, name := range []string{"kek", "audit-signer.sealed"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %04o, want 0600", name, fi.Mode().Perm())
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "audit-signer.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, secret) {
		t.Fatal("sealed file contains the key in clear")
	}
}

func TestSealedRefusesAttacks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		attack func(t *testing.T, dir string)
		want   string
	}{
		{"flipped ciphertext byte", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "k.sealed")
			b, _ := os.ReadFile(p)
			b[len(b)-1] ^= 1
			writeMode(t, p, b, 0o600)
		}, "authentication failed"},
		{"sealed file renamed to another key", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "other.sealed"))
			os.Remove(filepath.Join(dir, "k.sealed"))
			writeMode(t, filepath.Join(dir, "k.sealed"), b, 0o600)
		}, "authentication failed"},
		{"world-readable key file", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, "k.sealed"), 0o644)
		}, "must not be accessible"},
		{"symlinked key file", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "k.sealed")
			os.Rename(p, p+".real")
			os.Symlink(p+".real", p)
		}, "symbolic link"},
		{"not a sealed file", func(t *testing.T, dir string) {
			writeMode(t, filepath.Join(dir, "k.sealed"), []byte("hello"), 0o600)
		}, "not a sealed key file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "keys")
			s, err := keys.OpenSealed(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Store("k", []byte("key-k")); err != nil {
				t.Fatal(err)
			}
			if err := s.Store("other", []byte("key-other")); err != nil {
				t.Fatal(err)
			}
			tt.attack(t, dir)
			_, err = s.Load("k")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load after attack: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestSealedRules(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys")
	s, err := keys.OpenSealed(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Store("../escape", []byte("x")); err == nil {
		t.Fatal("path traversal in key name accepted")
	}
	if err := s.Store("k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Store("k", []byte("2")); !errors.Is(err, os.ErrExist) {
		t.Fatalf("overwrite: %v, want ErrExist", err)
	}
	if _, err := s.Load("missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing key: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.OpenSealed(dir); err == nil || !strings.Contains(err.Error(), "must not be accessible") {
		t.Fatalf("open of a group-readable keystore: %v", err)
	}
}

func writeMode(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestSealOpenBlob(t *testing.T) {
	t.Parallel()
	ks, err := keys.OpenSealed(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := keys.OpenSealed(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := ks.Seal([]byte("private key"), "identity_signing_keys/k1")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ks.Open(blob, "identity_signing_keys/k1"); err != nil || string(got) != "private key" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	flipped := append([]byte(nil), blob...)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name    string
		ks      *keys.Sealed
		blob    []byte
		context string
	}{
		{"other context", ks, blob, "identity_signing_keys/k2"},
		{"other key-encryption key", other, blob, "identity_signing_keys/k1"},
		{"tampered", ks, flipped, "identity_signing_keys/k1"},
		{"truncated", ks, blob[:20], "identity_signing_keys/k1"},
		{"not a blob", ks, []byte("plaintext"), "identity_signing_keys/k1"},
	}
	for _, tt := range tests {
		if _, err := tt.ks.Open(tt.blob, tt.context); err == nil {
			t.Errorf("%s: Open succeeded", tt.name)
		}
	}
}
