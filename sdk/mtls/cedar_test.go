package mtls_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwarksec/bulwark/sdk/authz"
	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// cedarSchema is the part of Bulwark's schema the test policies need.
const cedarSchema = `namespace Bulwark {
  type RequestContext = { time: { epoch: Long, hour: Long }, zone: String, region: String,
    amount?: Long, mfa: Bool, riskScore: Long, tokenScopes: Set<String> };
  entity Service { namespace: String, trustDomain: String };
  action "call" appliesTo { principal: [Service], resource: [Service], context: RequestContext };
}`

// TestHandshakeAuthorizedByCedar: a server authorizes its peers with a
// Cedar policy from a signed bundle (sdk/authz), on every handshake:
// checkout may call payments, cart may not; and once the bundle is stale
// (the control plane is gone), nobody gets in.
func TestHandshakeAuthorizedByCedar(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	bundle, err := authz.SignBundle(authz.BundleContent{
		Version: 1, PolicyVersion: 1, Issuer: "test", IssuedAt: now, ExpiresAt: now.Add(time.Hour),
		Policies: map[string]string{"calls.cedar": `@id("checkout-calls-payments")
permit (
    principal == Bulwark::Service::"` + checkoutID + `",
    action == Bulwark::Action::"call",
    resource == Bulwark::Service::"` + paymentsID + `"
);`},
		Schema: cedarSchema,
	}, priv)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(bundle)
	if err != nil {
		t.Fatal(err)
	}
	cp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") == `"`+strconv.Itoa(1)+`"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `"1"`)
		_, _ = w.Write(raw)
	}))
	var clock atomicTime
	clock.set(now)
	client, err := authz.New(authz.Config{
		URL: cp.URL, HTTPClient: cp.Client(), TrustedKeys: []ed25519.PublicKey{pub},
		MaxStaleness: time.Minute, PollWait: time.Second, Now: clock.get,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- client.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := client.WaitVersion(wctx, 1); err != nil {
		t.Fatal(err)
	}

	ca := newCA(t, "bulwark.test")
	server := serve(t, mtls.ServerConfig(ca.svid(t, paymentsID), ca.bundle(),
		mtls.AuthorizeFunc(client.PeerAuthorizer("call", payments, nil))))
	// dial returns the server's handshake error (nil: it accepted the peer).
	dial := func(id string) error {
		_, _ = roundtrip(server.addr, mtls.ClientConfig(ca.svid(t, id), ca.bundle(), mtls.AuthorizeID(payments)))
		return server.next(t).err
	}
	if err := dial(checkoutID); err != nil {
		t.Fatalf("checkout -> payments, permitted by policy: %v", err)
	}
	if err := dial(cartID); !errors.Is(err, mtls.ErrUnauthorized) {
		t.Fatalf("cart -> payments, permitted by no policy: %v, want ErrUnauthorized", err)
	}
	// The control plane goes away; past the staleness limit nobody gets in.
	cp.Close()
	clock.set(now.Add(2 * time.Minute))
	if err := dial(checkoutID); !errors.Is(err, mtls.ErrUnauthorized) {
		t.Fatalf("checkout -> payments with a stale bundle: %v, want ErrUnauthorized", err)
	}
}

// atomicTime is a settable clock safe for concurrent use.
type atomicTime struct{ ns atomic.Int64 }

func (a *atomicTime) set(t time.Time) { a.ns.Store(t.UnixNano()) }
func (a *atomicTime) get() time.Time  { return time.Unix(0, a.ns.Load()) }
