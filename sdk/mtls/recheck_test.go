package mtls_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// TestRecheckMemory checks the memory of verified chains that makes
// re-checking a resumed session cheap: a remembered chain passes without
// being verified again only while verification would pass (its authority
// still in the bundle, every certificate still valid), and authorization
// is asked every time.
func TestRecheckMemory(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "bulwark.test")
	now := time.Now()
	svid := ca.svidAt(t, checkoutID, now.Add(-time.Minute), now.Add(time.Hour))
	leaf := svid.Certificates[0].Raw
	errMustNotParse := errors.New("verified again: the memory was not used")
	remembered := func() ([]*x509.Certificate, error) { return nil, errMustNotParse }
	chain := func() ([]*x509.Certificate, error) { return svid.Certificates, nil }

	type step struct {
		name  string
		at    time.Duration // from now
		parse func() ([]*x509.Certificate, error)
		allow bool   // the authorizer's answer
		drop  bool   // remove the CA from the bundle before the step
		want  string // substring of the error; "" = accepted
	}
	steps := []step{
		{name: "first sight: verified", parse: chain, allow: true},
		{name: "remembered", at: 10 * time.Minute, parse: remembered, allow: true},
		{name: "remembered but no longer authorized", at: 10 * time.Minute, parse: remembered, allow: false, want: "peer not authorized"},
		{name: "leaf expired: verified again and refused", at: time.Hour + time.Second, parse: chain, allow: true, want: "expired"},
		{name: "not yet valid: verified again and refused", at: -2 * time.Minute, parse: chain, allow: true, want: "not yet valid"},
		{name: "authority left the bundle: verified again and refused", at: 10 * time.Minute, parse: chain, allow: true, drop: true, want: "unknown authority"},
	}
	bundle := ca.bundle()
	var allow atomic.Bool
	var clock atomic.Int64
	recheck := mtls.RecheckAt(bundle, switchable(checkout, &allow), func() time.Time { return time.Unix(0, clock.Load()) })
	for _, s := range steps {
		allow.Store(s.allow)
		clock.Store(now.Add(s.at).UnixNano())
		if s.drop {
			bundle.RemoveX509Authority(ca.crt)
		}
		err := recheck(leaf, s.parse)
		switch {
		case s.want == "" && err != nil:
			t.Fatalf("%s: refused: %v", s.name, err)
		case s.want != "" && (err == nil || !strings.Contains(err.Error(), s.want)):
			t.Fatalf("%s: error %v, want one containing %q", s.name, err, s.want)
		case errors.Is(err, errMustNotParse):
			t.Fatalf("%s: %v", s.name, err)
		}
	}
}
