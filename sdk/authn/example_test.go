package authn_test

import (
	"context"
	"fmt"
	"log"
	"net/http"

	"github.com/bulwarksec/bulwark/sdk/authn"
)

// A resource server verifies every request's access token and requires a
// scope; the handler reads the caller from the context.
func Example() {
	ctx := context.Background() // the server's lifetime
	v, err := authn.New(ctx, authn.Config{
		Issuer:   "https://id.example.com",
		Audience: "https://payments.example.com",
		OnRefusal: func(_ context.Context, r authn.Refusal) {
			log.Printf("refused: %s (client %q)", r.Reason, r.ClientID)
		},
	})
	if err != nil {
		log.Print(err) // no issuer at that address in this example
		return
	}
	transfers := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := authn.FromContext(r.Context())
		fmt.Fprintf(w, "hello %s via %s", p.Subject, p.ClientID)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /v1/transfers", v.Middleware(v.RequireScopes("payments:write")(transfers)))
	log.Fatal(http.ListenAndServe("127.0.0.1:8443", mux))
}
