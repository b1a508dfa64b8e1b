package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// serverCert is the TLS certificate both the gateway and HAProxy serve:
// a self-signed ECDSA P-256 certificate for 127.0.0.1.
type serverCert struct {
	certFile, keyFile string
	// bundleFile is the certificate followed by its key, HAProxy's form.
	bundleFile string
}

// writeServerCert generates the serving certificate into dir.
func writeServerCert(dir string) (serverCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return serverCert{}, fmt.Errorf("server key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return serverCert{}, fmt.Errorf("server certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "bulwark bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return serverCert{}, fmt.Errorf("server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return serverCert{}, fmt.Errorf("server key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	sc := serverCert{
		certFile:   filepath.Join(dir, "server.crt"),
		keyFile:    filepath.Join(dir, "server.key"),
		bundleFile: filepath.Join(dir, "haproxy.pem"),
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{sc.certFile, certPEM}, {sc.keyFile, keyPEM}, {sc.bundleFile, append(append([]byte(nil), certPEM...), keyPEM...)}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return serverCert{}, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return sc, nil
}

// haproxyParams fill haproxyConfig.
type haproxyParams struct {
	Listen, Upstream   string
	CertBundle, JWTKey string
	Issuer, Audience   string
	Threads            int
}

// haproxyConfig is the reference: TLS termination, the JWT checks HAProxy
// 2.6 can do natively (alg, ES256 signature with jwt_verify, expiry,
// issuer, audience), then forwarding to the echo service. Any check that
// fails answers 401.
var haproxyConfig = template.Must(template.New("haproxy.cfg").Parse(`global
    nbthread {{.Threads}}
    maxconn 4096
    log stderr format raw local0 err

defaults
    mode http
    log global
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend api
    bind {{.Listen}} ssl crt {{.CertBundle}} alpn http/1.1 ssl-min-ver TLSv1.2
    http-request deny deny_status 401 unless { req.hdr(authorization) -m beg "Bearer " }
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny deny_status 401 unless { var(txn.alg) -m str ES256 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"{{.JWTKey}}") -m int 1 }
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('$.iss') -m str {{.Issuer}} }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('$.aud') -m str {{.Audience}} }
    default_backend echo

backend echo
    http-reuse always
    server echo {{.Upstream}}
`))

// freeLoopbackAddr returns a 127.0.0.1 address that was free a moment ago,
// for a child that cannot be handed a listener.
func freeLoopbackAddr() (string, error) {
	ln, err := listenLoopback()
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	return addr, nil
}

// startHAProxy writes the reference config into dir, checks it and runs
// HAProxy in the foreground as a child process until stop.
func startHAProxy(ctx context.Context, dir string, p haproxyParams) (*child, string, error) {
	var buf bytes.Buffer
	if err := haproxyConfig.Execute(&buf, p); err != nil {
		return nil, "", fmt.Errorf("haproxy config: %w", err)
	}
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, buf.Bytes(), 0o600); err != nil {
		return nil, "", fmt.Errorf("write haproxy config: %w", err)
	}
	if out, err := exec.CommandContext(ctx, "haproxy", "-c", "-q", "-f", cfgFile).CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("haproxy refuses %s: %w: %s", cfgFile, err, strings.TrimSpace(string(out)))
	}
	logFile := filepath.Join(dir, "haproxy.log")
	logOut, err := os.Create(logFile)
	if err != nil {
		return nil, "", fmt.Errorf("haproxy log: %w", err)
	}
	defer logOut.Close() // the child has its own descriptor
	cmd := exec.Command("haproxy", "-db", "-f", cfgFile)
	// Should the bench die without stopping it, HAProxy goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	cmd.Stdout, cmd.Stderr = logOut, logOut
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start haproxy: %w", err)
	}
	logged := func() string {
		b, _ := os.ReadFile(logFile)
		return strings.TrimSpace(string(b))
	}
	c := &child{cmd: cmd, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	// Ready when it accepts connections.
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", p.Listen, time.Second)
		if err == nil {
			_ = conn.Close()
			return c, "https://" + p.Listen, nil
		}
		select {
		case werr := <-c.done:
			c.done <- werr
			return nil, "", fmt.Errorf("haproxy exited: %v: %s", werr, logged())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, "", errors.New("haproxy did not accept connections within 10s: " + logged())
		}
	}
}
