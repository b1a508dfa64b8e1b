package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func TestOfflineRootRotation(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		rootCert, rootKey, err := InitRoot(env.td, 365*24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		before := env.a.state.Load().signer.cert

		// Refusals of the offline signing step.
		csr, err := env.a.IntermediateCSR(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, strangerKey, err := InitRoot(env.td, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for name, run := range map[string]func() error{
			"garbage CSR": func() error {
				_, err := SignIntermediateCSR(env.td, rootKey, rootCert, []byte("x"), time.Hour)
				return err
			},
			"bad signature": func() error {
				_, err := SignIntermediateCSR(env.td, rootKey, rootCert, corrupt(csr), time.Hour)
				return err
			},
			"no lifetime": func() error { _, err := SignIntermediateCSR(env.td, rootKey, rootCert, csr, 0); return err },
			"foreign key": func() error { _, err := SignIntermediateCSR(env.td, strangerKey, rootCert, csr, time.Hour); return err },
			"other td root": func() error {
				_, err := SignIntermediateCSR(spiffeid.RequireTrustDomainFromString("o.test"), rootKey, rootCert, csr, time.Hour)
				return err
			},
			"Ed25519 as CSR": func() error {
				_, err := SignIntermediateCSR(env.td, rootKey, rootCert, csrFor(t, edKey(t), nil), time.Hour)
				return err
			},
		} {
			if err := run(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("%s: %v; want ErrInvalid", name, err)
			}
		}

		cert, err := SignIntermediateCSR(env.td, rootKey, rootCert, csr, 720*time.Hour)
		if err != nil {
			t.Fatal(err)
		}

		// Refusals of the install step: nothing changes.
		otherRoot, _, err := InitRoot(env.td, time.Hour*24)
		if err != nil {
			t.Fatal(err)
		}
		notPending, _, err := newIntermediateCert(env.td, rootKey, rootCert, time.Hour*24, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		unconstrained := func() *x509.Certificate {
			c, err := x509.ParseCertificateRequest(csr)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := &x509.Certificate{SerialNumber: randomSerial128(), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now().Add(-time.Minute),
				NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, rootCert, c.PublicKey, rootKey)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := x509.ParseCertificate(der)
			return out
		}()
		tests := []struct {
			name       string
			cert, root *x509.Certificate
			want       error
		}{
			{"no certificate", nil, rootCert, ErrInvalid},
			{"no root", cert, nil, ErrInvalid},
			{"another root", cert, otherRoot, ErrInvalid},
			{"no name constraint", unconstrained, rootCert, ErrInvalid},
			{"key never made here", notPending, rootCert, ErrNotFound},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if err := env.a.InstallIntermediate(ctx, tc.cert, tc.root); !errors.Is(err, tc.want) {
					t.Fatalf("err = %v; want %v", err, tc.want)
				}
			})
		}
		if !env.a.state.Load().signer.cert.Equal(before) {
			t.Fatal("a refused install changed the signing intermediate")
		}
		if n := env.countEvents(classEntityManagement, actCreate, audit.StatusFailure); n != len(tests) {
			t.Fatalf("%d refused installs audited; want %d", n, len(tests))
		}

		if err := env.a.InstallIntermediate(ctx, cert, rootCert); err != nil {
			t.Fatal(err)
		}
		if !env.a.state.Load().signer.cert.Equal(cert) {
			t.Fatal("the installed intermediate does not sign")
		}
		if n := len(env.a.X509Authorities()); n != 2 {
			t.Fatalf("%d authorities during the overlap; want 2", n)
		}
		iss, err := env.a.SignX509SVID(ctx, csrFor(t, newP256(t), nil), env.id("/ns/a/sa/b"), 0, spiffeid.ID{})
		if err != nil || !iss.Certificates[1].Equal(cert) {
			t.Fatalf("SVID after install: %v", err)
		}
		if err := env.a.InstallIntermediate(ctx, cert, rootCert); !errors.Is(err, ErrNotFound) {
			t.Fatalf("installing twice: %v; want ErrNotFound", err)
		}
	})
}
