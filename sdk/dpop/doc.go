// Package dpop creates and verifies DPoP proofs (OAuth 2.0 Demonstrating
// Proof of Possession, RFC 9449).
//
// A DPoP proof is a short-lived JWT, signed with a key the client holds,
// that binds one HTTP request (method and URL) and, when it accompanies an
// access token, that token (the ath claim) to the key. An authorization
// server issues tokens bound to the key's RFC 7638 thumbprint (cnf.jkt);
// a resource server accepts such a token only with a fresh proof signed by
// that key.
//
// # Clients
//
// Create a [Signer] once per key and call [Signer.Proof] for each request,
// or let [Transport] do it for every request an [http.Client] sends:
//
//	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
//	signer, _ := dpop.NewSigner(key)
//	client := &http.Client{Transport: &dpop.Transport{Signer: signer}}
//
// # Servers
//
// [Verify] checks a proof against the request it came with. It does not
// remember proofs: detecting a replayed jti, and checking a server-issued
// nonce, are the caller's job.
//
//	proof, err := dpop.Verify(r.Header.Get("DPoP"), dpop.VerifyOptions{
//		Method: r.Method,
//		URL:    "https://api.example.com" + r.URL.Path,
//	})
//
// Only asymmetric algorithms are ever accepted: EdDSA, ES256 and PS256 by
// default. "none" and HMAC algorithms are refused even when asked for.
package dpop
