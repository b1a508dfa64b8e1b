package mtls_test

import (
	"crypto/tls"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// rotatingSVID is an x509svid.Source whose SVID changes, as the Workload
// API source's does when the agent renews it.
type rotatingSVID struct{ cur atomic.Pointer[x509svid.SVID] }

func (r *rotatingSVID) GetX509SVID() (*x509svid.SVID, error) { return r.cur.Load(), nil }

// TestCARotation follows a CA rotation through one server configuration:
// during the overlap the bundle holds both intermediates and SVIDs of
// either are accepted; after it only the new intermediate's are, including
// on resumption of a session made with an old SVID.
//
// In a deployment the overlap outlasts every SVID of the old intermediate,
// and crypto/tls never resumes a session whose peer certificate has
// expired. This test ends the overlap early (as an emergency removal of an
// intermediate would), so a client still holds a session with the server's
// old certificate: its next connection fails (the client refuses the
// resumed session and crypto/tls drops the ticket), the one after that is
// a full handshake.
func TestCARotation(t *testing.T) {
	t.Parallel()
	oldIssuer := newCA(t, "bulwark.test")
	newIssuer := newCA(t, "bulwark.test")
	bundle := oldIssuer.bundle()
	serverSVID := &rotatingSVID{}
	serverSVID.cur.Store(oldIssuer.svid(t, paymentsID))
	srv := serve(t, mtls.ServerConfig(serverSVID, bundle, mtls.AuthorizeID(checkout)))

	// Clients share the server's bundle (as the agent gives both the same).
	oldClient := mtls.ClientConfig(oldIssuer.svid(t, checkoutID), bundle, mtls.AuthorizeID(payments))
	newClient := mtls.ClientConfig(newIssuer.svid(t, checkoutID), bundle, mtls.AuthorizeID(payments))
	steps := []struct {
		name   string
		change func()
		client *tls.Config
		ok     bool
	}{
		{name: "before rotation, old SVID", client: oldClient, ok: true},
		{name: "before rotation, new intermediate unknown", client: newClient, ok: false},
		{name: "overlap: old SVID still accepted", change: func() { bundle.AddX509Authority(newIssuer.crt) }, client: oldClient, ok: true},
		{name: "overlap: new SVID accepted", client: newClient, ok: true},
		{name: "overlap: server rotates its own SVID", change: func() { serverSVID.cur.Store(newIssuer.svid(t, paymentsID)) }, client: oldClient, ok: true},
		{name: "after overlap: old SVID refused, even resuming", change: func() { bundle.RemoveX509Authority(oldIssuer.crt) }, client: oldClient, ok: false},
		{name: "after overlap: client's session with the server's old certificate refused", client: newClient, ok: false},
		{name: "after overlap: new SVID accepted, full handshake", client: newClient, ok: true},
	}
	for _, s := range steps {
		if s.change != nil {
			s.change()
		}
		_, err := roundtrip(srv.addr, s.client)
		got := srv.next(t)
		if accepted := err == nil && got.err == nil; accepted != s.ok {
			t.Fatalf("%s: accepted %v, want %v (client %v, server %v)", s.name, accepted, s.ok, err, got.err)
		}
	}
}
