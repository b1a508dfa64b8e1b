package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/mtls/mtlstest"
)

// The workloads of the bench: the demo bank's names (contract §7) in the
// trust domain of the reference bank policies.
const (
	trustDomain = "bulwark.local"
	gatewayName = "gateway"
	// paymentsName is the service behind the gateway, and the caller of
	// the agent hop.
	paymentsName = "payments"
	// ledgerName is the callee of the agent hop (payments may call ledger
	// under the reference bank policies).
	ledgerName = "ledger"
)

// workloadID is the SPIFFE ID of a demo bank workload.
func workloadID(name string) spiffeid.ID {
	return spiffeid.RequireFromString("spiffe://" + trustDomain + "/ns/bank/sa/" + name)
}

// fatalTB adapts mtlstest's helpers to a program: Fatal panics with an
// error that main recovers and reports.
type fatalTB struct{}

func (fatalTB) Helper() {}

func (fatalTB) Fatal(args ...any) { panic(fatalError{fmt.Sprint(args...)}) }

// fatalError is what fatalTB panics with.
type fatalError struct{ msg string }

// writeSVIDs makes a throwaway CA for the trust domain and writes the trust
// bundle and an SVID for each name into dir: bundle.pem, <name>.crt,
// <name>.key. The CA's keys stay in this process.
func writeSVIDs(dir string, names ...string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(fatalError)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("test CA: %s", fe.msg)
		}
	}()
	ca := mtlstest.NewCA(fatalTB{}, trustDomain)
	bundlePEM, err := ca.Bundle().Marshal()
	if err != nil {
		return fmt.Errorf("marshal trust bundle: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bundle.pem"), bundlePEM, 0o600); err != nil {
		return fmt.Errorf("write trust bundle: %w", err)
	}
	for _, n := range names {
		certs, key, err := ca.SVID(fatalTB{}, workloadID(n).String()).Marshal()
		if err != nil {
			return fmt.Errorf("marshal SVID of %s: %w", n, err)
		}
		if err := os.WriteFile(filepath.Join(dir, n+".crt"), certs, 0o600); err != nil {
			return fmt.Errorf("write SVID of %s: %w", n, err)
		}
		if err := os.WriteFile(filepath.Join(dir, n+".key"), key, 0o600); err != nil {
			return fmt.Errorf("write SVID key of %s: %w", n, err)
		}
	}
	return nil
}

// staticSource serves one SVID and one trust bundle: a mesh.SVIDSource.
type staticSource struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

var _ mesh.SVIDSource = staticSource{}

// GetX509SVID returns the SVID.
func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

// GetX509BundleForTrustDomain returns the bundle of the trust domain.
func (s staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != s.bundle.TrustDomain() {
		return nil, fmt.Errorf("no trust bundle for trust domain %q", td)
	}
	return s.bundle, nil
}

// loadSource reads the SVID of name and the trust bundle from dir.
func loadSource(dir, name string) (staticSource, error) {
	svid, err := x509svid.Load(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil {
		return staticSource{}, fmt.Errorf("load SVID of %s: %w", name, err)
	}
	bundle, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString(trustDomain), filepath.Join(dir, "bundle.pem"))
	if err != nil {
		return staticSource{}, fmt.Errorf("load trust bundle: %w", err)
	}
	return staticSource{svid: svid, bundle: bundle}, nil
}

// staticResolver is a service directory in a map: a mesh.Resolver.
type staticResolver map[string]resolved

// resolved is one directory entry.
type resolved struct {
	id        spiffeid.ID
	endpoints []string
}

var _ mesh.Resolver = staticResolver{}

// Resolve returns the SPIFFE ID and endpoints of name.
func (r staticResolver) Resolve(_ context.Context, name string) (spiffeid.ID, []string, error) {
	e, ok := r[name]
	if !ok {
		return spiffeid.ID{}, nil, fmt.Errorf("resolve %q: %w", name, mesh.ErrUnknownService)
	}
	return e.id, e.endpoints, nil
}
