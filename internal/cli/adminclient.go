package cli

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/devinfo"
)

// adminFlags locate a control plane and the admin credential, for the
// commands that call its admin JSON APIs. Each defaults to the matching
// dev.json key, like the audit commands' flags.
type adminFlags struct {
	server, devJSON, credFile, caCert string
}

// register adds the flags to cmd and its subcommands.
func (f *adminFlags) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", "", "control plane URL (default: control_plane_url from dev.json)")
	pf.StringVar(&f.devJSON, "dev-json", filepath.Join(".bulwark", devinfo.FileName), "dev.json to take defaults from")
	pf.StringVar(&f.credFile, "credential-file", "", "file holding the bwk_ admin credential (default: admin_credential_file from dev.json)")
	pf.StringVar(&f.caCert, "ca-cert", "", "PEM CA certificate to trust for the server (default: ca_cert_file from dev.json, else the system roots)")
}

// devInfo reads dev.json (see readDevInfo).
func (f *adminFlags) devInfo(cmd *cobra.Command) (*devinfo.Info, error) {
	return readDevInfo(cmd, f.devJSON)
}

// readDevInfo reads the dev.json at path: a missing file at the default
// path (--dev-json not given) means no defaults, at a path given
// explicitly it is an error. Relative paths in it are relative to its
// directory.
func readDevInfo(cmd *cobra.Command, path string) (*devinfo.Info, error) {
	info, err := devinfo.Read(path)
	if err == nil {
		dir := filepath.Dir(path)
		for _, p := range []*string{&info.AdminCredentialFile, &info.CACertFile} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(dir, *p)
			}
		}
		return info, nil
	}
	if errors.Is(err, os.ErrNotExist) && !cmd.Flags().Changed("dev-json") {
		return &devinfo.Info{}, nil
	}
	return nil, err
}

// connect returns a client of the control plane's admin APIs.
func (f *adminFlags) connect(cmd *cobra.Command) (*adminClient, error) {
	info, err := f.devInfo(cmd)
	if err != nil {
		return nil, err
	}
	server := firstOf(f.server, info.ControlPlaneURL)
	if server == "" {
		return nil, devinfo.ErrNoDevInfo
	}
	base, err := url.Parse(strings.TrimSpace(server))
	if err != nil || base.Host == "" || (base.Scheme != "https" && base.Scheme != "http") {
		return nil, fmt.Errorf("server URL %q must be https://host[:port]", server)
	}
	if base.User != nil || base.RawQuery != "" || base.Fragment != "" {
		return nil, errors.New("server URL must not carry user info, a query or a fragment")
	}
	if base.Scheme == "http" && !loopbackHost(base.Hostname()) {
		return nil, fmt.Errorf("refusing to send the admin credential over plain HTTP to %s; use https", base.Host)
	}
	base.Path = strings.TrimRight(base.Path, "/")
	var caPEM []byte
	if ca := firstOf(f.caCert, info.CACertFile); ca != "" {
		if caPEM, err = readBounded(ca, 1<<20); err != nil {
			return nil, fmt.Errorf("CA certificate: %w", err)
		}
	}
	hc, err := audit.NewHTTPClient(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	path := firstOf(f.credFile, info.AdminCredentialFile)
	if path == "" {
		return nil, errors.New("no admin credential: pass --credential-file, or run `bulwark dev` to create dev.json")
	}
	cred, err := readCredential(cmd.ErrOrStderr(), path)
	if err != nil {
		return nil, err
	}
	return &adminClient{base: base, hc: hc, credential: cred}, nil
}

func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// adminClient calls a control plane's admin JSON APIs with the admin
// credential. The credential never appears in an error.
type adminClient struct {
	base       *url.URL
	hc         *http.Client
	credential string
}

// maxAdminAnswer bounds what the client reads from the server.
const maxAdminAnswer = 16 << 20

// adminAPIError is an error answer of an admin API: the status and the
// stable code, message and request ID of its JSON error body, and the
// problems of a refused policy push or entity change.
type adminAPIError struct {
	Method, Path string
	Status       int
	Code         string
	Message      string
	RequestID    string
	Problems     []apiProblem
}

// apiProblem is one problem of an error body that lists them (a refused
// policy set: file, line and column; refused entities: a message).
type apiProblem struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Message string `json:"message"`
}

// apiErrorBody is httpapi.ErrorBody with the optional list of problems.
type apiErrorBody struct {
	Error struct {
		Code      string       `json:"code"`
		Message   string       `json:"message"`
		RequestID string       `json:"request_id"`
		Problems  []apiProblem `json:"problems"`
	} `json:"error"`
}

func (e *adminAPIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d", e.Method, e.Path, e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.RequestID != "" {
		b.WriteString(" (request ID " + e.RequestID + ")")
	}
	return b.String()
}

// do sends in (if not nil) as JSON and decodes a 2xx answer into out (if
// not nil). Any other answer is an *adminAPIError. path is appended to the
// base URL as is: it may carry escaped segments (entity IDs such as SPIFFE
// IDs) and a query.
func (c *adminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "bulwark-cli")
	req.Header.Set("Authorization", "Bearer "+c.credential)
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminAnswer+1))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if len(raw) > maxAdminAnswer {
		return fmt.Errorf("%s %s: answer larger than %d bytes", method, path, maxAdminAnswer)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &adminAPIError{Method: method, Path: path, Status: resp.StatusCode, RequestID: printableCut(resp.Header.Get("X-Request-ID"), 64)}
		var eb apiErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			e.Code, e.Message = printableCut(eb.Error.Code, 64), printableCut(eb.Error.Message, 2048)
			for _, p := range eb.Error.Problems {
				e.Problems = append(e.Problems, apiProblem{File: printableCut(p.File, 256), Line: p.Line, Column: p.Column,
					Message: printableCut(p.Message, 2048)})
			}
			if eb.Error.RequestID != "" {
				e.RequestID = printableCut(eb.Error.RequestID, 64)
			}
		} else {
			e.Message = http.StatusText(resp.StatusCode)
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// printableCut cuts s to n bytes and drops control characters, so that a
// server cannot write terminal escapes through a message.
func printableCut(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

// Key material for client registrations, shared by `clients` and `dev`.

// writeNewFile creates path with data; an existing file is an error, so
// that no key is ever overwritten.
func writeNewFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; refusing to overwrite a key", path)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// privateKeyPEM encodes key as a PKCS #8 PEM block.
func privateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// clientCertValidity is the lifetime of generated client certificates.
const clientCertValidity = 365 * 24 * time.Hour

// selfSignedClientCert returns a self-signed TLS client certificate for
// key, for self_signed_tls_client_auth (RFC 8705 §2.2), as parsed and as
// PEM.
func selfSignedClientCert(key crypto.Signer, commonName string, now time.Time) (*x509.Certificate, []byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(clientCertValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create client certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse client certificate: %w", err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
