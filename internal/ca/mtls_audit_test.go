package ca

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/store"
	"github.com/bulwarksec/bulwark/internal/store/storetest"
	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// svidFrom issues an X.509-SVID for id from env's CA, with ttl.
func (env *caEnv) svidFrom(t *testing.T, id spiffeid.ID, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	key := newP256(t)
	iss, err := env.a.SignX509SVID(t.Context(), csrFor(t, key, nil), id, ttl, spiffeid.ID{})
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: iss.ID, Certificates: iss.Certificates, PrivateKey: key}
}

// TestMTLSRefusalsAreAudited attacks a workload that serves mTLS with
// sdk/mtls and SVIDs of this CA: a certificate from another CA of the same
// trust domain, an expired SVID and an unauthorized SPIFFE ID are each
// refused, and each refusal lands in the audit log through
// AuditMTLSRefusals.
func TestMTLSRefusalsAreAudited(t *testing.T) {
	t.Parallel()
	storetest.ForEachBackend(t, func(t *testing.T, db *store.DB) {
		env := newCAEnv(t, db)
		impostor := newCAEnv(t, storetest.Open(t, store.SQLite)) // same trust domain, another CA
		payments, checkout, cart := env.id("/ns/bank/sa/payments"), env.id("/ns/bank/sa/checkout"), env.id("/ns/bank/sa/cart")

		server := mtls.ServerConfig(env.svidFrom(t, payments, 0), env.bundle(), mtls.AuthorizeID(checkout),
			mtls.WithRefusalHook(AuditMTLSRefusals(env.audit, nil)))
		ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func(c net.Conn) {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					line, err := bufio.NewReader(c).ReadString('\n')
					if err == nil {
						_, _ = c.Write([]byte(line))
					}
				}(c)
			}
		}()
		call := func(svid *x509svid.SVID) error {
			cfg := mtls.ClientConfig(svid, env.bundle(), mtls.AuthorizeID(payments))
			c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("ping\n")); err != nil {
				return err
			}
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return err
			}
			if got != "ping\n" {
				return errors.New("bad echo")
			}
			return nil
		}
		if err := call(env.svidFrom(t, checkout, 0)); err != nil {
			t.Fatalf("authorized peer refused: %v", err)
		}

		expired := env.svidFrom(t, checkout, time.Second)
		time.Sleep(time.Until(expired.Certificates[0].NotAfter) + 100*time.Millisecond)
		attacks := []struct {
			name   string
			svid   *x509svid.SVID
			detail string
		}{
			{"certificate from another CA", impostor.svidFrom(t, checkout, 0), "verify"},
			{"expired certificate", expired, "expired"},
			{"unauthorized SPIFFE ID", env.svidFrom(t, cart, 0), "is not"},
		}
		for _, a := range attacks {
			if err := call(a.svid); err == nil {
				t.Errorf("%s: accepted", a.name)
			}
		}
		// The server's refusals are in the audit log, each with the
		// certificate's serial and claimed ID.
		deadline := time.Now().Add(5 * time.Second)
		for {
			var found []string
			for _, e := range env.events() {
				if e.Metadata.Product == "bulwark mtls" && e.StatusID == audit.StatusFailure && len(e.Resources) == 1 {
					found = append(found, e.Resources[0].UID+" "+e.StatusDetail)
				}
			}
			missing := ""
			for _, a := range attacks {
				serial := a.svid.Certificates[0].SerialNumber.Text(16)
				ok := false
				for _, f := range found {
					ok = ok || (strings.HasPrefix(f, serial+" ") && strings.Contains(f, a.detail))
				}
				if !ok {
					missing += a.name + "; "
				}
			}
			if missing == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("refusals not audited: %s(found %q)", missing, found)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
