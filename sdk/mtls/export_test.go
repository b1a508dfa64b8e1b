package mtls

import (
	"crypto/x509"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
)

// RecheckAt exposes the re-check of resumed sessions, with a clock the
// test controls.
func RecheckAt(bundles x509bundle.Source, authz Authorizer, now func() time.Time) func(leafDER []byte, parse func() ([]*x509.Certificate, error)) error {
	p := newPeerCheck(bundles, authz)
	p.now = now
	return p.recheck
}
