package mtls_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// switchable returns an authorizer that allows want while *allow is true:
// a decision that changes between two connections, as a policy engine's
// does when a service is quarantined or a rule changes.
func switchable(want spiffeid.ID, allow *atomic.Bool) mtls.Authorizer {
	return mtls.AuthorizeFunc(func(id spiffeid.ID) error {
		if id != want || !allow.Load() {
			return errors.New("denied by policy")
		}
		return nil
	})
}

// TestResumption checks that session resumption works, and that a session
// ticket never carries an old decision into a new connection. The attacker
// holds a valid ticket (and its resumption secret) from a connection that
// was allowed; then its authorization is withdrawn, its CA leaves the
// bundle, or it presents the ticket to another server that shares the
// ticket keys but authorizes other peers. crypto/tls skips
// VerifyPeerCertificate on resumption. The server therefore re-checks the
// chain kept in the ticket before resuming and, if the check fails, ignores
// the ticket: the handshake becomes a full one, which refuses the attacker
// and lets in an honest client whose SVID has been renewed since.
func TestResumption(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "bulwark.test")
	serverSVID := ca.svid(t, paymentsID)
	clientSVID := ca.svid(t, checkoutID)

	type setup struct {
		first, second *echoServer // the second connection goes to second
		client        *tls.Config
		change        func() // between the two connections
	}
	tests := []struct {
		name string
		make func(t *testing.T, version uint16) setup
		// wantServer is a substring of the server's error on the second
		// connection; "" means it must succeed.
		wantServer       string
		wantUnauthorized bool
		// wantFull means the second connection must be a full handshake
		// (the ticket ignored), not a resumption.
		wantFull bool
		// wantClient is a substring of the client's error when the client
		// detects the refusal itself. When the server refuses after the
		// client's last handshake flight, the client sees either the
		// server's alert or a broken pipe, so only an error is required.
		wantClient string
	}{
		{
			name: "resumes and authorizes",
			make: func(t *testing.T, v uint16) setup {
				srv := serve(t, mtls.ServerConfig(serverSVID, ca.bundle(), mtls.AuthorizeID(checkout)))
				return setup{first: srv, second: srv, client: pin(mtls.ClientConfig(clientSVID, ca.bundle(), mtls.AuthorizeID(payments)), v)}
			},
		},
		{
			name: "server withdraws the client's authorization",
			make: func(t *testing.T, v uint16) setup {
				var allow atomic.Bool
				allow.Store(true)
				srv := serve(t, mtls.ServerConfig(serverSVID, ca.bundle(), switchable(checkout, &allow)))
				return setup{first: srv, second: srv, change: func() { allow.Store(false) },
					client: pin(mtls.ClientConfig(clientSVID, ca.bundle(), mtls.AuthorizeID(payments)), v)}
			},
			wantServer: "mtls: peer not authorized: " + checkoutID + ": denied by policy", wantUnauthorized: true, wantFull: true,
		},
		{
			name: "client's CA leaves the server's bundle",
			make: func(t *testing.T, v uint16) setup {
				bundle := ca.bundle()
				srv := serve(t, mtls.ServerConfig(serverSVID, bundle, mtls.AuthorizeID(checkout)))
				return setup{first: srv, second: srv, change: func() { bundle.RemoveX509Authority(ca.crt) },
					client: pin(mtls.ClientConfig(clientSVID, ca.bundle(), mtls.AuthorizeID(payments)), v)}
			},
			wantServer: "x509svid: could not verify leaf certificate", wantFull: true,
		},
		{
			name: "ticket presented to another server with the same ticket keys",
			make: func(t *testing.T, v uint16) setup {
				var key [32]byte
				if _, err := rand.Read(key[:]); err != nil {
					t.Fatal(err)
				}
				open := mtls.ServerConfig(serverSVID, ca.bundle(), mtls.AuthorizeID(checkout))
				closed := mtls.ServerConfig(serverSVID, ca.bundle(), mtls.AuthorizeID(spiffeid.RequireFromString(cartID)))
				open.SetSessionTicketKeys([][32]byte{key})
				closed.SetSessionTicketKeys([][32]byte{key})
				return setup{first: serve(t, open), second: serve(t, closed),
					client: pin(mtls.ClientConfig(clientSVID, ca.bundle(), mtls.AuthorizeOneOf(payments)), v)}
			},
			wantServer: "mtls: peer not authorized: " + checkoutID + " is not " + cartID, wantUnauthorized: true, wantFull: true,
		},
		{
			name: "stale ticket after the client's SVID moved to a new intermediate",
			make: func(t *testing.T, v uint16) setup {
				oldIssuer, newIssuer := newCA(t, "bulwark.test"), newCA(t, "bulwark.test")
				bundle := x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.crt, oldIssuer.crt})
				svid := &rotatingSVID{}
				svid.cur.Store(oldIssuer.svid(t, checkoutID))
				srv := serve(t, mtls.ServerConfig(serverSVID, bundle, mtls.AuthorizeID(checkout)))
				return setup{first: srv, second: srv,
					change: func() {
						bundle.AddX509Authority(newIssuer.crt)
						bundle.RemoveX509Authority(oldIssuer.crt)
						svid.cur.Store(newIssuer.svid(t, checkoutID))
					},
					client: pin(mtls.ClientConfig(svid, ca.bundle(), mtls.AuthorizeID(payments)), v)}
			},
			wantFull: true,
		},
		{
			name: "without the ticket hook, VerifyConnection still refuses",
			make: func(t *testing.T, v uint16) setup {
				var allow atomic.Bool
				allow.Store(true)
				cfg := mtls.ServerConfig(serverSVID, ca.bundle(), switchable(checkout, &allow))
				cfg.UnwrapSession = nil // as if replaced: crypto/tls decrypts the ticket itself
				srv := serve(t, cfg)
				return setup{first: srv, second: srv, change: func() { allow.Store(false) },
					client: pin(mtls.ClientConfig(clientSVID, ca.bundle(), mtls.AuthorizeID(payments)), v)}
			},
			wantServer: "resumed session: mtls: peer not authorized", wantUnauthorized: true,
		},
		{
			name: "client withdraws the server's authorization",
			make: func(t *testing.T, v uint16) setup {
				var allow atomic.Bool
				allow.Store(true)
				srv := serve(t, mtls.ServerConfig(serverSVID, ca.bundle(), mtls.AuthorizeID(checkout)))
				return setup{first: srv, second: srv, change: func() { allow.Store(false) },
					client: pin(mtls.ClientConfig(clientSVID, ca.bundle(), switchable(payments, &allow)), v)}
			},
			wantServer: "bad certificate", wantClient: "resumed session: mtls: peer not authorized",
		},
	}
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/%s", tls.VersionName(v), tt.name), func(t *testing.T) {
				t.Parallel()
				s := tt.make(t, v)
				if _, err := roundtrip(s.first.addr, s.client); err != nil {
					t.Fatalf("first connection: %v", err)
				}
				if h := s.first.next(t); h.err != nil || h.state.DidResume {
					t.Fatalf("first connection: server error %v, resumed %v", h.err, h.state.DidResume)
				}
				if s.change != nil {
					s.change()
				}
				state, err := roundtrip(s.second.addr, s.client)
				got := s.second.next(t)
				if tt.wantServer == "" {
					if err != nil || got.err != nil {
						t.Fatalf("second connection refused: client %v, server %v", err, got.err)
					}
					if state.Version != v || state.DidResume == tt.wantFull || got.state.DidResume == tt.wantFull {
						t.Fatalf("second connection: resumed %v (server %v), version %x; want resumed %v with %s", state.DidResume, got.state.DidResume, state.Version, !tt.wantFull, tls.VersionName(v))
					}
					if id, err := mtls.PeerID(&got.state); err != nil || id != checkout {
						t.Fatalf("server sees peer %v, %v", id, err)
					}
					return
				}
				if tt.wantFull && strings.Contains(got.err.Error(), "resumed session") {
					t.Errorf("server error %q: the stale ticket was resumed, want a full handshake", got.err)
				}
				if err == nil || got.err == nil {
					t.Fatalf("resumed connection accepted (client error %v, server error %v)", err, got.err)
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
}

// TestBareTLSConfigResumesWithoutAuthorizing shows the hole that
// ServerConfig closes, so that TestResumption is known to exercise it:
// go-spiffe's configuration alone lets a resumed session in after the
// authorizer has turned the client away.
func TestBareTLSConfigResumesWithoutAuthorizing(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "bulwark.test")
	var allow atomic.Bool
	allow.Store(true)
	authz := switchable(checkout, &allow)
	srv := serve(t, tlsconfig.MTLSServerConfig(ca.svid(t, paymentsID), ca.bundle(),
		func(id spiffeid.ID, _ [][]*x509.Certificate) error { return authz(id) }))
	client := mtls.ClientConfig(ca.svid(t, checkoutID), ca.bundle(), mtls.AuthorizeID(payments))
	if _, err := roundtrip(srv.addr, client); err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	allow.Store(false)
	state, err := roundtrip(srv.addr, client)
	if h := srv.next(t); err != nil || h.err != nil || !state.DidResume {
		t.Fatalf("bare go-spiffe config: client %v, server %v, resumed %v; expected the resumed session to be let in", err, h.err, state.DidResume)
	}
}

// pin restricts cfg to one TLS version.
func pin(cfg *tls.Config, v uint16) *tls.Config {
	cfg.MinVersion, cfg.MaxVersion = v, v
	return cfg
}
