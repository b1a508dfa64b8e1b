// Package devinfo reads and writes dev.json, the file `bulwark dev` leaves
// in its data directory so that scripts, tests and the CLI find the running
// platform. Its keys are an interface: later components add theirs, none is
// renamed.
package devinfo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// FileName is the name of the file in the data directory.
const FileName = "dev.json"

// Info is the content of dev.json.
type Info struct {
	// ControlPlaneURL is the HTTPS base URL of the control plane.
	ControlPlaneURL string `json:"control_plane_url"`
	// AdminCredentialFile holds the admin bearer credential (0600).
	AdminCredentialFile string `json:"admin_credential_file"`
	// CACertFile is the PEM CA certificate that signs the control plane's
	// serving certificate.
	CACertFile string `json:"ca_cert_file"`
	// DataDir is the data directory.
	DataDir string `json:"data_dir"`
	// AuditOrigin and AuditPublicKey identify the audit log and the
	// signed-note key its checkpoints verify with.
	AuditOrigin    string `json:"audit_origin"`
	AuditPublicKey string `json:"audit_public_key"`
	// MetricsURL is the Prometheus endpoint.
	MetricsURL string `json:"metrics_url"`
	// Issuer is the OAuth 2.0 / OpenID Connect issuer identifier; its
	// discovery document is at <issuer>/.well-known/openid-configuration.
	Issuer string `json:"issuer,omitempty"`
	// DemoUser is the user `bulwark dev` creates for trying logins.
	DemoUser *DemoUser `json:"demo_user,omitempty"`
	// DemoClient is the confidential client `bulwark dev` registers.
	DemoClient *DemoClient `json:"demo_client,omitempty"`
	// TrustDomain is the SPIFFE trust domain of workload identities.
	TrustDomain string `json:"trust_domain,omitempty"`
	// WorkloadAPISocket is the unix socket path of the SPIFFE Workload API
	// served by the in-process agent of `bulwark dev`; go-spiffe finds it
	// as SPIFFE_ENDPOINT_SOCKET=unix://<path>.
	WorkloadAPISocket string `json:"workload_api_socket,omitempty"`
	// AuthZENURL is the base URL of the OpenID AuthZEN decision API: its
	// metadata is at <authzen_url>/.well-known/authzen-configuration.
	AuthZENURL string `json:"authzen_url,omitempty"`
	// ExtAuthzAddr is host:port of the Envoy ext_authz v3 gRPC service
	// (mutual TLS with X.509-SVIDs).
	ExtAuthzAddr string `json:"ext_authz_addr,omitempty"`
	// GatewayURL is the HTTPS base URL of the edge gateway in front of the
	// demo bank.
	GatewayURL string `json:"gateway_url,omitempty"`
	// GatewayCACertFile is the PEM certificate that verifies the gateway's
	// serving certificate.
	GatewayCACertFile string `json:"gateway_ca_cert_file,omitempty"`
	// DemoAPIPaths are the demo bank's public API paths, served under
	// GatewayURL.
	DemoAPIPaths []string `json:"demo_api_paths,omitempty"`
}

// DemoUser is the demo user's name and the file holding its password.
type DemoUser struct {
	Username string `json:"username"`
	// PasswordFile holds the password (0600), generated at first start.
	PasswordFile string `json:"password_file"`
}

// DemoClient is the demo client: a FAPI 2.0 client that authenticates
// with its self-signed certificate (self_signed_tls_client_auth) and gets
// tokens bound to it.
type DemoClient struct {
	ClientID string `json:"client_id"`
	// PrivateKeyFile is the client's PEM private key (0600).
	PrivateKeyFile string `json:"private_key_file"`
	// CertificateFile is the client's self-signed PEM certificate.
	CertificateFile string `json:"certificate_file"`
}

// maxBytes bounds the file read.
const maxBytes = 1 << 20

// Write stores info as dir/dev.json with mode 0600, atomically.
func Write(dir string, info Info) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", FileName, err)
	}
	return WriteFileAtomic(filepath.Join(dir, FileName), append(b, '\n'), 0o600)
}

// Read loads a dev.json file.
func Read(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxBytes {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, maxBytes)
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if info.ControlPlaneURL == "" {
		return nil, fmt.Errorf("parse %s: no control_plane_url", path)
	}
	return &info, nil
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory, synced and renamed into place, so a reader never sees a
// partial file and a crash leaves the old one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ErrNoDevInfo is returned when no dev.json is found.
var ErrNoDevInfo = errors.New("no dev.json found: start `bulwark dev` or pass --server")
