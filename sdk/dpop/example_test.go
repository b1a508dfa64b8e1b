package dpop_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net/http"

	"github.com/bulwarksec/bulwark/sdk/dpop"
)

// A client signs a proof for each request; the server verifies it and
// compares the thumbprint with the token's cnf.jkt.
func Example() {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	signer, err := dpop.NewSigner(key)
	if err != nil {
		panic(err)
	}
	proof, err := signer.Proof(http.MethodGet, "https://api.example.com/v1/accounts?page=2", "", "the-access-token")
	if err != nil {
		panic(err)
	}

	// On the server, with the request's method and URL:
	p, err := dpop.Verify(proof, dpop.VerifyOptions{
		Method:      http.MethodGet,
		URL:         "https://api.example.com/v1/accounts",
		AccessToken: "the-access-token",
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Thumbprint == signer.Thumbprint())
	// Output: true
}

// Transport adds proofs to every request of an http.Client and follows the
// server's DPoP-Nonce.
func ExampleTransport() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, _ := dpop.NewSigner(key)
	client := &http.Client{Transport: &dpop.Transport{Signer: signer}}
	_ = client // client.Get("https://api.example.com/v1/accounts") ...
}
