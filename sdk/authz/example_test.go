package authz_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulwarksec/bulwark/sdk/authz"
)

// A service embeds the evaluator: it fetches the control plane's signed
// bundle, then decides locally. Here an in-process TLS server stands in
// for the control plane.
func Example() {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	bundle, _ := authz.SignBundle(authz.BundleContent{
		Version: 1, Issuer: "example", IssuedAt: now, ExpiresAt: now.Add(time.Hour),
		Policies: map[string]string{"payments.cedar": `
@id("payments-call-ledger")
permit (
    principal == Bulwark::Service::"spiffe://bank.example/payments",
    action == Bulwark::Action::"call",
    resource == Bulwark::Service::"spiffe://bank.example/ledger"
);`},
		Schema: `namespace Bulwark {
  entity Service;
  action "call" appliesTo { principal: [Service], resource: [Service] };
}`,
	}, priv)
	raw, _ := json.Marshal(bundle)
	controlPlane := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") == `"1"` {
			w.WriteHeader(http.StatusNotModified) // a real server holds the request up to ?wait=
			return
		}
		w.Header().Set("ETag", `"1"`)
		_, _ = w.Write(raw)
	}))
	defer controlPlane.Close()

	client, err := authz.New(authz.Config{
		URL:         controlPlane.URL,
		HTTPClient:  controlPlane.Client(), // in production: mTLS with the workload's SVID
		TrustedKeys: []ed25519.PublicKey{pub},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- client.Run(ctx) }()
	defer func() { cancel(); <-done }()

	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := client.WaitVersion(wctx, 1); err != nil {
		fmt.Println(err)
		return
	}
	for _, caller := range []string{"payments", "notifications"} {
		d := client.Decide(authz.Request{
			Principal: cedar.NewEntityUID("Bulwark::Service", cedar.String("spiffe://bank.example/"+caller)),
			Action:    cedar.NewEntityUID("Bulwark::Action", "call"),
			Resource:  cedar.NewEntityUID("Bulwark::Service", "spiffe://bank.example/ledger"),
			Context:   authz.Context{Time: time.Now(), Hour: -1, Zone: "internal", Region: "eu"}.Record(),
		})
		fmt.Printf("%s -> ledger: allowed=%v reasons=%v bundle=%d\n", caller, d.Allowed, d.Reasons, d.BundleVersion)
	}
	// Output:
	// payments -> ledger: allowed=true reasons=[payments-call-ledger] bundle=1
	// notifications -> ledger: allowed=false reasons=[] bundle=1
}
