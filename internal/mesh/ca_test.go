package mesh_test

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/sdk/mtls/mtlstest"
)

type tb = mtlstest.TB

// testCA is sdk/mtls/mtlstest's CA with the short names these tests use.
type testCA struct{ ca *mtlstest.CA }

func newCA(t tb, td string) *testCA {
	t.Helper()
	return &testCA{ca: mtlstest.NewCA(t, td)}
}

func (ca *testCA) bundle() *x509bundle.Bundle { return ca.ca.Bundle() }

func (ca *testCA) svid(t tb, id string) *x509svid.SVID {
	t.Helper()
	return ca.ca.SVID(t, id)
}

// staticSource serves one SVID and one trust bundle.
type staticSource struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

func (s staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != s.bundle.TrustDomain() {
		return nil, fmt.Errorf("no bundle for trust domain %q", td)
	}
	return s.bundle, nil
}

func (ca *testCA) source(t tb, id string) staticSource {
	t.Helper()
	return staticSource{svid: ca.svid(t, id), bundle: ca.bundle()}
}
