package mtls_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/sdk/mtls"
)

// exampleT lets the examples use the test CA helpers.
type exampleT struct{}

func (exampleT) Helper()           {}
func (exampleT) Fatal(args ...any) { log.Fatal(args...) }

// A payments API that only the checkout service may call, and checkout's
// client that only talks to the payments API. In a deployment both sides
// get their SVID and bundle from the agent: source, err :=
// mtls.Source(ctx, mtls.SourceOptions{}), passed as both sources.
func Example() {
	ca := newCA(exampleT{}, "bulwark.test")
	paymentsSVID, checkoutSVID := ca.svid(exampleT{}, paymentsID), ca.svid(exampleT{}, checkoutID)
	bundle := ca.bundle()

	checkout := spiffeid.RequireFromString("spiffe://bulwark.test/ns/shop/sa/checkout")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", mtls.ServerConfig(paymentsSVID, bundle, mtls.AuthorizeID(checkout)))
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, err := mtls.PeerID(r.TLS)
		if err != nil {
			http.Error(w, "no peer identity", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "hello %s", peer)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()

	payments := spiffeid.RequireFromString("spiffe://bulwark.test/ns/payments/sa/api")
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: mtls.ClientConfig(checkoutSVID, bundle, mtls.AuthorizeID(payments)),
	}}
	resp, err := client.Get("https://" + ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: hello spiffe://bulwark.test/ns/shop/sa/checkout
}

// A policy decision as the authorizer: the hook where Bulwark's policy
// engine plugs in. It runs during every handshake, resumed ones included.
func ExampleAuthorizeFunc() {
	quarantined := map[spiffeid.ID]bool{
		spiffeid.RequireFromString("spiffe://bulwark.test/ns/shop/sa/cart"): true,
	}
	authz := mtls.AuthorizeFunc(func(id spiffeid.ID) error {
		if !id.MemberOf(spiffeid.RequireTrustDomainFromString("bulwark.test")) || quarantined[id] {
			return fmt.Errorf("policy denies %s", id)
		}
		return nil
	})
	fmt.Println(authz(spiffeid.RequireFromString("spiffe://bulwark.test/ns/shop/sa/checkout")))
	fmt.Println(authz(spiffeid.RequireFromString("spiffe://bulwark.test/ns/shop/sa/cart")))
	// Output:
	// <nil>
	// mtls: peer not authorized: spiffe://bulwark.test/ns/shop/sa/cart: policy denies spiffe://bulwark.test/ns/shop/sa/cart
}
