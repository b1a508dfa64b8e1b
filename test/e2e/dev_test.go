package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevReadyWithin10s is the README's first command: `bulwark dev` on a
// fresh data directory answers /readyz within 10 s, writes dev.json (0600)
// with the issuer and the demo user and client, shows the admin credential
// and the demo password once, prints a curl command that gets a token, and
// stops cleanly on Ctrl-C.
func TestDevReadyWithin10s(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	var credential, password string
	for run := 0; run < 2; run++ {
		start := time.Now()
		p := startProc(t, "dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0")
		devJSON := filepath.Join(dataDir, "dev.json")
		// dev.json from the first run exists on the second: wait for the
		// whole banner, which is printed once dev.json is written.
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(p.stdout.String(), "Press Ctrl-C to stop.") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		var info struct {
			ControlPlaneURL     string `json:"control_plane_url"`
			AdminCredentialFile string `json:"admin_credential_file"`
			CACertFile          string `json:"ca_cert_file"`
			AuditPublicKey      string `json:"audit_public_key"`
			Issuer              string `json:"issuer"`
			DemoUser            struct {
				Username     string `json:"username"`
				PasswordFile string `json:"password_file"`
			} `json:"demo_user"`
			DemoClient struct {
				ClientID        string `json:"client_id"`
				PrivateKeyFile  string `json:"private_key_file"`
				CertificateFile string `json:"certificate_file"`
			} `json:"demo_client"`
		}
		if err := json.Unmarshal(waitFile(t, devJSON, 10*time.Second), &info); err != nil {
			t.Fatal(err)
		}
		if info.ControlPlaneURL == "" || info.AdminCredentialFile == "" || info.AuditPublicKey == "" || info.Issuer != info.ControlPlaneURL ||
			info.DemoUser.Username != "demo" || info.DemoUser.PasswordFile == "" || info.DemoClient.ClientID != "demo-client" ||
			info.DemoClient.PrivateKeyFile == "" || info.DemoClient.CertificateFile == "" {
			t.Fatalf("dev.json lacks required keys: %+v", info)
		}
		if fi, err := os.Stat(devJSON); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("dev.json mode: %v %v", fi.Mode().Perm(), err)
		}
		ep := newEndpoint(t, info.ControlPlaneURL, info.CACertFile, info.AdminCredentialFile)
		ep.waitReady(t, 10*time.Second-time.Since(start))
		t.Logf("run %d: ready %s after start", run, time.Since(start).Round(time.Millisecond))

		out := p.stdout.String()
		pw, err := os.ReadFile(info.DemoUser.PasswordFile)
		if err != nil {
			t.Fatal(err)
		}
		switch run {
		case 0:
			credential, password = ep.credential, strings.TrimSpace(string(pw))
			if !strings.Contains(out, credential) {
				t.Fatal("first start did not show the admin credential")
			}
			if password == "" || !strings.Contains(out, password) {
				t.Fatal("first start did not show the demo user's password")
			}
		case 1:
			if strings.Contains(out, credential) {
				t.Fatal("second start showed the admin credential again")
			}
			if ep.credential != credential {
				t.Fatal("admin credential changed across restarts")
			}
			if strings.Contains(out, password) || strings.TrimSpace(string(pw)) != password {
				t.Fatal("second start showed or changed the demo user's password")
			}
		}
		if strings.Contains(p.stderr.String(), credential) || strings.Contains(p.stderr.String(), password) {
			t.Fatal("the admin credential or the demo password reached the logs")
		}

		// The banner's curl command, run as printed, gets a token.
		curl := bannerTokenCommand(t, out)
		cmd := exec.Command("sh", "-c", curl+" --silent --show-error")
		var curlOut, curlErr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &curlOut, &curlErr
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s%s", curl, err, curlOut.String(), curlErr.String())
		}
		var tok struct {
			AccessToken string `json:"access_token"`
			TokenType   string `json:"token_type"`
			ExpiresIn   int    `json:"expires_in"`
		}
		if err := json.Unmarshal(curlOut.Bytes(), &tok); err != nil || tok.AccessToken == "" || tok.ExpiresIn <= 0 {
			t.Fatalf("%s: no token: %v\n%s", curl, err, curlOut.String())
		}
		if strings.Contains(p.stderr.String(), tok.AccessToken) {
			t.Fatal("the access token reached the logs")
		}
		if err := p.stop(t, syscall.SIGINT, 15*time.Second); !exitedCleanly(err) {
			t.Fatalf("dev did not exit cleanly on SIGINT: %v", err)
		}
	}
}

// bannerTokenCommand returns the curl command line the dev banner prints
// for getting a token.
func bannerTokenCommand(t *testing.T, banner string) string {
	t.Helper()
	for _, line := range strings.Split(banner, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "curl ") && strings.Contains(line, "/oauth2/token") {
			return line
		}
	}
	t.Fatalf("the banner shows no curl command for a token:\n%s", banner)
	return ""
}
