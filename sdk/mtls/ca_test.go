package mtls_test

import (
	"crypto/x509"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/sdk/mtls/mtlstest"
)

// tb is the part of testing.TB the CA helpers use, so that examples can
// use them too.
type tb = mtlstest.TB

// testCA is mtlstest's CA with the short names these tests use.
type testCA struct {
	td  spiffeid.TrustDomain
	crt *x509.Certificate // the intermediate
	ca  *mtlstest.CA
}

func newCA(t tb, td string) *testCA {
	t.Helper()
	ca := mtlstest.NewCA(t, td)
	return &testCA{td: ca.TrustDomain, crt: ca.Intermediate, ca: ca}
}

// bundle returns a new bundle that trusts the CA's intermediate.
func (ca *testCA) bundle() *x509bundle.Bundle { return ca.ca.Bundle() }

// svidAt issues an X.509-SVID for id valid from notBefore to notAfter.
func (ca *testCA) svidAt(t tb, id string, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	return ca.ca.SVIDAt(t, id, notBefore, notAfter)
}

func (ca *testCA) svid(t tb, id string) *x509svid.SVID {
	t.Helper()
	return ca.ca.SVID(t, id)
}
