package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
)

func (env *caEnv) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(env.td, env.a.X509Authorities())
}

func TestSignX509SVID(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		id, agent := env.id("/ns/payments/sa/api"), env.id("/agent/node-1")
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name      string
			csr       []byte
			ttl       time.Duration
			wantUsage x509.KeyUsage
			wantTTL   time.Duration
		}{
			{"P-256 without SAN, default TTL", csrFor(t, newP256(t), nil), 0, x509.KeyUsageDigitalSignature, time.Hour},
			{"P-256 naming its ID, 10 minutes", csrWithURI(t, newP256(t), id.String()), 10 * time.Minute, x509.KeyUsageDigitalSignature, 10 * time.Minute},
			{"RSA-2048", csrFor(t, rsaKey, nil), 0, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, time.Hour},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				iss, err := env.a.SignX509SVID(ctx, tc.csr, id, tc.ttl, agent)
				if err != nil {
					t.Fatal(err)
				}
				gotID, _, err := x509svid.Verify(iss.Certificates, env.bundle(), x509svid.WithTime(env.clock.Now()))
				if err != nil || gotID != id {
					t.Fatalf("Verify = %v, %v; want %v", gotID, err, id)
				}
				leaf := iss.Certificates[0]
				if len(iss.Certificates) != 2 || !iss.Certificates[1].Equal(env.a.state.Load().signer.cert) {
					t.Fatal("chain is not [leaf, signing intermediate]")
				}
				if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
					t.Fatalf("SANs: URIs %v DNS %v IP %v email %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
				}
				if leaf.IsCA || leaf.KeyUsage != tc.wantUsage {
					t.Fatalf("IsCA %v, KeyUsage %v; want false, %v", leaf.IsCA, leaf.KeyUsage, tc.wantUsage)
				}
				if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
					t.Fatalf("ExtKeyUsage %v", leaf.ExtKeyUsage)
				}
				if got := leaf.NotAfter.Sub(env.clock.Now()); got > tc.wantTTL || got < tc.wantTTL-time.Minute {
					t.Fatalf("lifetime left %v; want about %v", got, tc.wantTTL)
				}
				if leaf.SerialNumber.BitLen() > 128 || leaf.SerialNumber.Text(16) != iss.Serial || !iss.ExpiresAt.Equal(leaf.NotAfter) {
					t.Fatalf("serial %x (%s), expires %v", leaf.SerialNumber, iss.Serial, iss.ExpiresAt)
				}
			})
		}
		certs, err := env.a.Certificates(ctx, 10)
		if err != nil || len(certs) != len(tests) {
			t.Fatalf("inventory: %d records, %v; want %d", len(certs), err, len(tests))
		}
		if certs[0].SPIFFEID != id.String() || certs[0].Agent != agent.String() || certs[0].Authority == "" {
			t.Fatalf("inventory record %+v", certs[0])
		}
		if n := env.countEvents(classEntityManagement, actCreate, audit.StatusSuccess); n < len(tests) {
			t.Fatalf("%d issuance events; want at least %d", n, len(tests))
		}
	})
}

func TestSVIDLifetimeCappedByIntermediate(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db, func(c *Config) { c.IntermediateTTL = 2 * time.Hour })
		inter := env.a.state.Load().signer.cert
		env.clock.Advance(90 * time.Minute)
		iss, err := env.a.SignX509SVID(context.Background(), csrFor(t, newP256(t), nil), env.id("/ns/a/sa/b"), 0, spiffeid.ID{})
		if err != nil {
			t.Fatal(err)
		}
		if !iss.Certificates[0].NotAfter.Equal(inter.NotAfter) {
			t.Fatalf("NotAfter %v; want the intermediate's %v", iss.Certificates[0].NotAfter, inter.NotAfter)
		}
		env.clock.Advance(time.Hour)
		if _, err := env.a.SignX509SVID(context.Background(), csrFor(t, newP256(t), nil), env.id("/ns/a/sa/b"), 0, spiffeid.ID{}); err == nil {
			t.Fatal("issued under an expired intermediate")
		}
	})
}

// corrupt returns der with its last byte (in the signature) flipped.
func corrupt(der []byte) []byte {
	out := slices.Clone(der)
	out[len(out)-1] ^= 0x01
	return out
}

func TestSignX509SVIDRefusesBadCSRs(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		id := env.id("/ns/payments/sa/api")
		rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k := newP256(t)
		other, _ := url.Parse("spiffe://example.test/ns/payments/sa/admin")
		self, _ := url.Parse(id.String())
		tests := []struct {
			name string
			csr  []byte
		}{
			{"empty", nil},
			{"garbage", []byte("not a CSR")},
			{"bad signature", corrupt(csrFor(t, k, nil))},
			{"RSA-1024", csrFor(t, rsa1024, nil)},
			{"P-224", csrFor(t, p224, nil)},
			{"DNS SAN", csrFor(t, k, &x509.CertificateRequest{DNSNames: []string{"payments.internal"}})},
			{"IP SAN", csrFor(t, k, &x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}})},
			{"email SAN", csrFor(t, k, &x509.CertificateRequest{EmailAddresses: []string{"a@example.test"}})},
			{"two URI SANs", csrFor(t, k, &x509.CertificateRequest{URIs: []*url.URL{self, other}})},
			{"another workload's ID", csrFor(t, k, &x509.CertificateRequest{URIs: []*url.URL{other}})},
			{"own ID plus DNS SAN", csrFor(t, k, &x509.CertificateRequest{URIs: []*url.URL{self}, DNSNames: []string{"x"}})},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := env.a.SignX509SVID(ctx, tc.csr, id, 0, spiffeid.ID{}); !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v; want ErrInvalid", err)
				}
			})
		}
		if certs, _ := env.a.Certificates(ctx, 100); len(certs) != 0 {
			t.Fatalf("%d certificates recorded after refusals", len(certs))
		}
		if n := env.countEvents(classEntityManagement, actCreate, audit.StatusFailure); n != len(tests) {
			t.Fatalf("%d refusal events; want %d", n, len(tests))
		}
		// Outside the trust domain, TTL out of range.
		foreign := spiffeid.RequireFromString("spiffe://evil.test/ns/a/sa/b")
		if _, err := env.a.SignX509SVID(ctx, csrFor(t, k, nil), foreign, 0, spiffeid.ID{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("foreign trust domain: %v", err)
		}
		if _, err := env.a.SignX509SVID(ctx, csrFor(t, k, nil), id, 48*time.Hour, spiffeid.ID{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("48h TTL: %v", err)
		}
	})
}

func TestSignRefusesDenied(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		id, agent, bad := env.id("/ns/a/sa/b"), env.id("/agent/node-1"), env.id("/agent/node-2")
		if err := env.a.Quarantine(ctx, id, "compromised"); err != nil {
			t.Fatal(err)
		}
		if err := env.a.Quarantine(ctx, bad, "stolen node"); err != nil {
			t.Fatal(err)
		}
		if _, err := env.a.SignX509SVID(ctx, csrFor(t, newP256(t), nil), id, 0, agent); !errors.Is(err, ErrDenied) {
			t.Fatalf("quarantined ID: %v; want ErrDenied", err)
		}
		if _, err := env.a.SignX509SVID(ctx, csrFor(t, newP256(t), nil), env.id("/ns/a/sa/c"), 0, bad); !errors.Is(err, ErrDenied) {
			t.Fatalf("through a quarantined agent: %v; want ErrDenied", err)
		}
		if _, err := env.a.SignJWTSVID(ctx, id, []string{"x"}, 0); !errors.Is(err, ErrDenied) {
			t.Fatalf("JWT-SVID of a quarantined ID: %v; want ErrDenied", err)
		}
		if n := env.countEvents(classEntityManagement, actCreate, audit.StatusFailure); n != 3 {
			t.Fatalf("%d refusal events; want 3", n)
		}
	})
}

func TestSignJWTSVID(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		ctx := context.Background()
		id := env.id("/ns/a/sa/b")
		tok, err := env.a.SignJWTSVID(ctx, id, []string{"spiffe://example.test/ns/a/sa/db", "other"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		bundle := jwtbundle.FromJWTAuthorities(env.td, env.a.JWTAuthorities())
		svid, err := jwtsvid.ParseAndValidate(tok, bundle, []string{"other"})
		if err != nil {
			t.Fatal(err)
		}
		if svid.ID != id || time.Until(svid.Expiry) > 5*time.Minute || time.Until(svid.Expiry) < 4*time.Minute {
			t.Fatalf("JWT-SVID %v expiring %v", svid.ID, svid.Expiry)
		}
		if _, err := jwtsvid.ParseAndValidate(tok, bundle, []string{"someone else"}); err == nil {
			t.Fatal("accepted for the wrong audience")
		}
		// A bundle of another CA does not verify it.
		other := newCAEnv(t, storetest.Open(t, db.Driver()))
		if _, err := jwtsvid.ParseAndValidate(tok, jwtbundle.FromJWTAuthorities(env.td, other.a.JWTAuthorities()), []string{"other"}); err == nil {
			t.Fatal("verified with another CA's keys")
		}
		for _, aud := range [][]string{nil, {""}} {
			if _, err := env.a.SignJWTSVID(ctx, id, aud, 0); !errors.Is(err, ErrInvalid) {
				t.Fatalf("audience %q: %v; want ErrInvalid", aud, err)
			}
		}
		if b := env.a.Bundle(); len(b.JWTAuthorities()) != 1 || len(b.X509Authorities()) != 1 {
			t.Fatalf("bundle: %d JWT, %d X.509 authorities", len(b.JWTAuthorities()), len(b.X509Authorities()))
		}
	})
}

// BenchmarkSignX509SVID measures issuance (CSR check, signature, inventory
// row, audit event) on SQLite, in parallel.
func BenchmarkSignX509SVID(b *testing.B) {
	for _, d := range storetest.Backends {
		b.Run(string(d), func(b *testing.B) {
			env := newCAEnv(b, storetest.Open(b, d))
			csr := csrFor(b, newP256(b), nil)
			id, agent := env.id("/ns/bench/sa/svc"), env.id("/agent/bench")
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := env.a.SignX509SVID(ctx, csr, id, 0, agent); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "svids/s")
		})
	}
}

// BenchmarkSignX509SVIDs measures batched issuance (100 SVIDs a call, as
// an agent's renewal request carries), in parallel.
func BenchmarkSignX509SVIDs(b *testing.B) {
	for _, d := range storetest.Backends {
		b.Run(string(d), func(b *testing.B) {
			env := newCAEnv(b, storetest.Open(b, d))
			csr := csrFor(b, newP256(b), nil)
			agent := env.id("/agent/bench")
			reqs := make([]SVIDRequest, 100)
			for i := range reqs {
				reqs[i] = SVIDRequest{ID: env.id("/ns/bench/sa/svc"), CSR: csr}
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					for _, r := range env.a.SignX509SVIDs(ctx, agent, reqs) {
						if r.Err != nil {
							b.Error(r.Err)
							return
						}
					}
				}
			})
			b.ReportMetric(float64(b.N*len(reqs))/b.Elapsed().Seconds(), "svids/s")
		})
	}
}

// TestCSRCannotAskForCA: extensions requested in a CSR (here CA:true and
// certificate signing) are ignored; the SVID is never a CA.
func TestCSRCannotAskForCA(t *testing.T) {
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		bc, err := asn1.Marshal(struct {
			IsCA bool `asn1:"optional"`
		}{true})
		if err != nil {
			t.Fatal(err)
		}
		ku, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x06}, BitLength: 7}) // keyCertSign, cRLSign
		if err != nil {
			t.Fatal(err)
		}
		csr := csrFor(t, newP256(t), &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
			{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: true, Value: ku},
		}})
		iss, err := env.a.SignX509SVID(context.Background(), csr, env.id("/ns/a/sa/b"), 0, spiffeid.ID{})
		if err != nil {
			t.Fatal(err)
		}
		leaf := iss.Certificates[0]
		if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Fatalf("IsCA %v, KeyUsage %v", leaf.IsCA, leaf.KeyUsage)
		}
	})
}
