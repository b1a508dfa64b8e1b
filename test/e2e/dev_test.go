package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevReadyWithin10s is the README's first command: `bulwark dev` on a
// fresh data directory answers /readyz within 10 s, writes dev.json (0600),
// shows the admin credential once, and stops cleanly on Ctrl-C.
func TestDevReadyWithin10s(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	var credential string
	for run := 0; run < 2; run++ {
		start := time.Now()
		p := startProc(t, "dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0")
		devJSON := filepath.Join(dataDir, "dev.json")
		if run == 1 {
			// dev.json from the first run exists: wait for the new one.
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(p.stdout.String(), "dev platform is running") && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
		var info struct {
			ControlPlaneURL     string `json:"control_plane_url"`
			AdminCredentialFile string `json:"admin_credential_file"`
			CACertFile          string `json:"ca_cert_file"`
			AuditPublicKey      string `json:"audit_public_key"`
		}
		if err := json.Unmarshal(waitFile(t, devJSON, 10*time.Second), &info); err != nil {
			t.Fatal(err)
		}
		if info.ControlPlaneURL == "" || info.AdminCredentialFile == "" || info.AuditPublicKey == "" {
			t.Fatalf("dev.json lacks required keys: %+v", info)
		}
		if fi, err := os.Stat(devJSON); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("dev.json mode: %v %v", fi.Mode().Perm(), err)
		}
		ep := newEndpoint(t, info.ControlPlaneURL, info.CACertFile, info.AdminCredentialFile)
		ep.waitReady(t, 10*time.Second-time.Since(start))
		t.Logf("run %d: ready %s after start", run, time.Since(start).Round(time.Millisecond))

		out := p.stdout.String()
		switch run {
		case 0:
			credential = ep.credential
			if !strings.Contains(out, credential) {
				t.Fatal("first start did not show the admin credential")
			}
		case 1:
			if strings.Contains(out, credential) {
				t.Fatal("second start showed the admin credential again")
			}
			if ep.credential != credential {
				t.Fatal("admin credential changed across restarts")
			}
		}
		if strings.Contains(p.stderr.String(), credential) {
			t.Fatal("the admin credential reached the logs")
		}
		if err := p.stop(t, syscall.SIGINT, 15*time.Second); !exitedCleanly(err) {
			t.Fatalf("dev did not exit cleanly on SIGINT: %v", err)
		}
	}
}
