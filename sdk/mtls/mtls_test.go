package mtls_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/sdk/mtls"
)

const (
	paymentsID = "spiffe://bulwark.test/ns/payments/sa/api"
	checkoutID = "spiffe://bulwark.test/ns/shop/sa/checkout"
	cartID     = "spiffe://bulwark.test/ns/shop/sa/cart"
)

var (
	payments = spiffeid.RequireFromString(paymentsID)
	checkout = spiffeid.RequireFromString(checkoutID)
)

// handshake is what the test server saw of one connection.
type handshake struct {
	state tls.ConnectionState
	err   error
}

// echoServer is a real TLS server on 127.0.0.1 that completes the
// handshake, reports it, and echoes what the client sends.
type echoServer struct {
	addr       string
	handshakes chan handshake
}

func serve(t *testing.T, cfg *tls.Config) *echoServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	s := &echoServer{addr: ln.Addr().String(), handshakes: make(chan handshake, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.handle(c.(*tls.Conn))
		}
	}()
	return s
}

func (s *echoServer) handle(c *tls.Conn) {
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	err := c.Handshake()
	s.handshakes <- handshake{state: c.ConnectionState(), err: err}
	if err != nil {
		return
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return
	}
	_, _ = c.Write(buf[:n])
}

// next returns the server's view of the next connection.
func (s *echoServer) next(t *testing.T) handshake {
	t.Helper()
	select {
	case h := <-s.handshakes:
		return h
	case <-time.After(5 * time.Second):
		t.Fatal("server saw no handshake")
		return handshake{}
	}
}

// roundtrip connects with cfg, sends a message and reads the echo: it
// succeeds only if both ends accepted the handshake.
func roundtrip(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer func() { _ = c.Close() }()
	tc := c.(*tls.Conn)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("ping")
	if _, err := tc.Write(msg); err != nil {
		return tc.ConnectionState(), err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(tc, got); err != nil {
		return tc.ConnectionState(), err
	}
	if !bytes.Equal(got, msg) {
		return tc.ConnectionState(), errors.New("echo mismatch")
	}
	return tc.ConnectionState(), nil
}

func TestHandshake(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "bulwark.test")
	evil := newCA(t, "evil.test")
	impostor := newCA(t, "bulwark.test") // another CA claiming our trust domain
	serverSVID := ca.svid(t, paymentsID)
	clientSVID := ca.svid(t, checkoutID)
	now := time.Now()

	withVersions := func(cfg *tls.Config, lo, hi uint16) *tls.Config {
		cfg.MinVersion, cfg.MaxVersion = lo, hi
		return cfg
	}
	defaultServer := func() *tls.Config {
		return mtls.ServerConfig(serverSVID, ca.bundle(), mtls.AuthorizeID(checkout))
	}
	defaultClient := func() *tls.Config {
		return mtls.ClientConfig(clientSVID, ca.bundle(), mtls.AuthorizeID(payments))
	}
	tests := []struct {
		name   string
		server *tls.Config
		client *tls.Config
		// wantServer is a substring of the server's handshake error; ""
		// means the connection must succeed.
		wantServer       string
		wantUnauthorized bool // the server's error wraps ErrUnauthorized
		// wantClient is a substring of the client's error when the client
		// detects the refusal itself. When the server refuses after the
		// client's last handshake flight, the client sees either the
		// server's alert or a broken pipe, so only an error is required.
		wantClient  string
		wantVersion uint16
	}{
		{
			name: "authorized peers use TLS 1.3", server: defaultServer(), client: defaultClient(),
			wantVersion: tls.VersionTLS13,
		},
		{
			name: "a TLS 1.2 client is accepted", server: defaultServer(),
			client:      withVersions(defaultClient(), tls.VersionTLS12, tls.VersionTLS12),
			wantVersion: tls.VersionTLS12,
		},
		{
			name: "wrong SPIFFE ID", server: defaultServer(),
			client:     mtls.ClientConfig(ca.svid(t, cartID), ca.bundle(), mtls.AuthorizeID(payments)),
			wantServer: "is not " + checkoutID, wantUnauthorized: true,
		},
		{
			name:       "wrong trust domain, federated bundle",
			server:     mtls.ServerConfig(serverSVID, x509bundle.NewSet(ca.bundle(), evil.bundle()), mtls.AuthorizeMemberOf(ca.td)),
			client:     mtls.ClientConfig(evil.svid(t, "spiffe://evil.test/ns/shop/sa/checkout"), ca.bundle(), mtls.AuthorizeID(payments)),
			wantServer: `not a member of trust domain "bulwark.test"`, wantUnauthorized: true,
		},
		{
			name: "wrong trust domain, unknown bundle", server: defaultServer(),
			client:     mtls.ClientConfig(evil.svid(t, "spiffe://evil.test/ns/shop/sa/checkout"), ca.bundle(), mtls.AuthorizeID(payments)),
			wantServer: "could not get X509 bundle",
		},
		{
			name: "certificate from another CA", server: defaultServer(),
			client:     mtls.ClientConfig(impostor.svid(t, checkoutID), ca.bundle(), mtls.AuthorizeID(payments)),
			wantServer: "could not verify leaf certificate",
		},
		{
			name: "expired certificate", server: defaultServer(),
			client:     mtls.ClientConfig(ca.svidAt(t, checkoutID, now.Add(-2*time.Hour), now.Add(-time.Minute)), ca.bundle(), mtls.AuthorizeID(payments)),
			wantServer: "expired",
		},
		{
			name: "certificate not yet valid", server: defaultServer(),
			client:     mtls.ClientConfig(ca.svidAt(t, checkoutID, now.Add(time.Hour), now.Add(2*time.Hour)), ca.bundle(), mtls.AuthorizeID(payments)),
			wantServer: "not yet valid",
		},
		{
			name: "no client certificate", server: defaultServer(),
			client:     &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // the attacker's client
			wantServer: "client didn't provide a certificate",
		},
		{
			name: "TLS 1.1 client", server: defaultServer(),
			client:     withVersions(defaultClient(), tls.VersionTLS10, tls.VersionTLS11),
			wantServer: "offered only unsupported versions", wantClient: "protocol version",
		},
		{
			name:       "TLS 1.1 server",
			server:     withVersions(defaultServer(), tls.VersionTLS10, tls.VersionTLS11),
			client:     defaultClient(),
			wantServer: "offered only unsupported versions", wantClient: "protocol version",
		},
		{
			name:       "client refuses a server with the wrong SPIFFE ID",
			server:     mtls.ServerConfig(ca.svid(t, cartID), ca.bundle(), mtls.AuthorizeID(checkout)),
			client:     defaultClient(),
			wantServer: "bad certificate", wantClient: "is not " + paymentsID,
		},
		{
			name:       "client refuses a server from another CA",
			server:     mtls.ServerConfig(impostor.svid(t, paymentsID), impostor.bundle(), mtls.AuthorizeID(checkout)),
			client:     defaultClient(),
			wantServer: "bad certificate", wantClient: "could not verify leaf certificate",
		},
		{
			name:   "nil authorizer refuses every client",
			server: mtls.ServerConfig(serverSVID, ca.bundle(), nil), client: defaultClient(),
			wantServer: "no authorizer configured", wantUnauthorized: true,
		},
		{
			name:   "nil sources fail closed",
			server: mtls.ServerConfig(nil, nil, mtls.AuthorizeID(checkout)), client: defaultClient(),
			wantServer: "no X.509-SVID source configured", wantClient: "internal error",
		},
		{
			name:   "client with nil bundle source trusts no server",
			server: defaultServer(), client: mtls.ClientConfig(clientSVID, nil, mtls.AuthorizeID(payments)),
			wantServer: "bad certificate", wantClient: "bundleSource is required",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := serve(t, tt.server)
			state, err := roundtrip(srv.addr, tt.client)
			got := srv.next(t)
			if tt.wantServer == "" {
				if err != nil || got.err != nil {
					t.Fatalf("connection refused: client %v, server %v", err, got.err)
				}
				if state.Version != tt.wantVersion {
					t.Errorf("TLS version %x, want %x", state.Version, tt.wantVersion)
				}
				if id, err := mtls.PeerID(&got.state); err != nil || id != checkout {
					t.Errorf("server sees peer %v, %v; want %s", id, err, checkout)
				}
				if id, err := mtls.PeerID(&state); err != nil || id != payments {
					t.Errorf("client sees peer %v, %v; want %s", id, err, payments)
				}
				return
			}
			if err == nil || got.err == nil {
				t.Fatalf("connection accepted (client error %v, server error %v)", err, got.err)
			}
			if !strings.Contains(got.err.Error(), tt.wantServer) {
				t.Errorf("server error %q, want it to contain %q", got.err, tt.wantServer)
			}
			if tt.wantUnauthorized && !errors.Is(got.err, mtls.ErrUnauthorized) {
				t.Errorf("server error %q does not wrap ErrUnauthorized", got.err)
			}
			if tt.wantClient != "" && !strings.Contains(err.Error(), tt.wantClient) {
				t.Errorf("client error %q, want it to contain %q", err, tt.wantClient)
			}
		})
	}
}

func TestPeerID(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "bulwark.test")
	nonSPIFFE := ca.svid(t, checkoutID).Certificates[1] // the intermediate: no URI SAN
	tests := []struct {
		name string
		cs   *tls.ConnectionState
		want string
	}{
		{name: "nil state", cs: nil, want: "no peer certificate"},
		{name: "no certificates", cs: &tls.ConnectionState{}, want: "no peer certificate"},
		{name: "certificate without SPIFFE ID", cs: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{nonSPIFFE}}, want: "peer certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if id, err := mtls.PeerID(tt.cs); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("PeerID = %v, %v; want an error containing %q", id, err, tt.want)
			}
		})
	}
}

func TestSource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts mtls.SourceOptions
		want string
	}{
		{name: "relative socket path", opts: mtls.SourceOptions{SocketPath: "agent.sock"}, want: "not absolute"},
		{name: "no agent listening", opts: mtls.SourceOptions{SocketPath: t.TempDir() + "/agent.sock"}, want: "workload API X.509 source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			src, err := mtls.Source(ctx, tt.opts)
			if err == nil {
				_ = src.Close()
				t.Fatal("Source succeeded without an agent")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}
