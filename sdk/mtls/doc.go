// Package mtls builds mutual-TLS configurations from SPIFFE workload
// identities, so that every service-to-service hop authenticates both ends
// with short-lived X.509-SVIDs.
//
// A workload gets its SVID and the trust bundle from the Workload API that
// the Bulwark agent serves on a unix socket ([Source]); [ServerConfig] and
// [ClientConfig] turn them into a [tls.Config] for crypto/tls, net/http or
// gRPC. The configurations are those of go-spiffe's spiffetls/tlsconfig
// (MTLSServerConfig, MTLSClientConfig), with Bulwark's defaults:
//
//   - TLS 1.2 is the minimum, TLS 1.3 is negotiated whenever the peer has it;
//   - session resumption is on: servers issue session tickets and clients
//     keep them in a [tls.ClientSessionCache], so that a reconnect costs a
//     resumed handshake instead of a full one;
//   - the peer's SVID is verified against the current trust bundle and
//     authorized by an [Authorizer] on every handshake, resumed ones
//     included (see below).
//
// # Servers and clients
//
//	source, err := mtls.Source(ctx, mtls.SourceOptions{})
//	if err != nil { ... }
//	defer source.Close()
//
//	// payments accepts only the checkout service
//	checkout := spiffeid.RequireFromString("spiffe://bulwark.local/ns/shop/sa/checkout")
//	srv := &http.Server{TLSConfig: mtls.ServerConfig(source, source, mtls.AuthorizeID(checkout))}
//
//	// checkout talks only to payments
//	payments := spiffeid.RequireFromString("spiffe://bulwark.local/ns/payments/sa/api")
//	client := &http.Client{Transport: &http.Transport{
//		TLSClientConfig: mtls.ClientConfig(source, source, mtls.AuthorizeID(payments)),
//	}}
//
// Reuse connections (an [http.Transport] does) and reuse the client
// configuration, which holds the session cache: a full TLS 1.3 mutual
// handshake costs hundreds of microseconds, a request over an open
// connection a few.
//
// # Authorization and session resumption
//
// A resumed TLS session skips certificate verification: crypto/tls does not
// call VerifyPeerCertificate, where go-spiffe verifies and authorizes the
// peer, when a session ticket is accepted. A ticket would then carry a past
// decision into a new connection, after the peer was quarantined, after its
// intermediate left the trust bundle, after the authorization policy
// changed, or at another server that shares the ticket keys but authorizes
// other peers. The configurations built here re-check the peer of every
// resumed session, against the current bundle at the current time, and ask
// the [Authorizer] again:
//
//   - a server keeps the client's certificate chain in the session ticket
//     and checks it before it resumes (UnwrapSession). If the check fails,
//     it ignores the ticket and falls back to a full handshake, in which the
//     client presents its current SVID: a client whose authorization was
//     withdrawn is refused there, and one whose SVID was renewed under a new
//     intermediate gets in instead of failing on a stale ticket;
//   - both ends also check in VerifyConnection, which crypto/tls calls on
//     resumed handshakes too. A client that refuses a resumed session fails
//     that connection; crypto/tls then drops the ticket, and the next
//     connection is a full handshake.
//
// The re-check does not verify signatures again when it can avoid it: each
// configuration remembers the chains it has verified (by leaf hash, at most
// 4,096), with the bundle authority each verified to and the period in
// which every certificate of the path is valid. A remembered chain passes
// only while that authority is still in the bundle and the time is inside
// that period, which is exactly when verification would pass again;
// otherwise the chain is verified in full. Authorization is never
// remembered.
//
// # Authorizers
//
// [AuthorizeID], [AuthorizeOneOf] and [AuthorizeMemberOf] decide by SPIFFE
// ID or trust domain. [AuthorizeFunc] is the hook for any other decision,
// such as one by Bulwark's policy engine (Cedar, in a later release): it is
// called with the peer's verified SPIFFE ID during the handshake and must
// answer quickly from local state, since the handshake waits for it and has
// no request context. Decisions that need the request (method, path,
// headers) belong in the handler, which finds the peer with [PeerID].
package mtls
