// Package authngrpc verifies access tokens on a gRPC server with an
// [authn.Verifier]: interceptors read the "authorization" metadata
// ("Bearer <token>" or "DPoP <token>"), check a DPoP proof from the "dpop"
// metadata or the client certificate of the TLS connection when the token
// is sender-constrained, and put the verified [authn.Principal] in the
// context, where [authn.FromContext] finds it. A refused call fails with
// codes.Unauthenticated and a message that is only the OAuth error code.
//
// # Usage
//
//	v, err := authn.New(ctx, authn.Config{Issuer: issuer, Audience: "https://ledger.example.com"})
//	if err != nil { ... }
//	srv := grpc.NewServer(
//		grpc.Creds(creds),
//		grpc.UnaryInterceptor(authngrpc.UnaryServerInterceptor(v)),
//		grpc.StreamInterceptor(authngrpc.StreamServerInterceptor(v)),
//	)
//
// and in a method:
//
//	p, _ := authn.FromContext(ctx)
//	if !p.HasScope("ledger:write") {
//		return nil, status.Error(codes.PermissionDenied, "insufficient_scope")
//	}
//
// A DPoP proof for a gRPC call is made for method POST and URL
// "https://" + the call's :authority + its full method name, for example
// "https://ledger.example.com:443/bulwark.ledger.v1.Ledger/Append".
package authngrpc

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/bulwarksec/bulwark/sdk/authn"
)

// UnaryServerInterceptor returns an interceptor that verifies the access
// token of every unary call with v.
func UnaryServerInterceptor(v *authn.Verifier) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := authenticate(ctx, v, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor returns an interceptor that verifies the access
// token of every streaming call with v, once, when the stream opens.
func StreamServerInterceptor(v *authn.Verifier) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := authenticate(ss.Context(), v, info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &stream{ServerStream: ss, ctx: ctx})
	}
}

// stream is a ServerStream whose context carries the principal.
type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

// authenticate verifies what the call presents and returns ctx with the
// principal.
func authenticate(ctx context.Context, v *authn.Verifier, fullMethod string) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	pr := authn.Presentation{
		Authorization: md.Get("authorization"),
		DPoP:          md.Get("dpop"),
		Method:        "POST",
		Path:          fullMethod,
	}
	if authority := md.Get(":authority"); len(authority) == 1 {
		pr.URL = "https://" + authority[0] + fullMethod
	}
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			pr.RemoteAddr = p.Addr.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			pr.ClientCertificate = ti.State.PeerCertificates[0]
		}
	}
	p, err := v.Verify(ctx, pr)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, message(err))
	}
	return authn.NewContext(ctx, p), nil
}

// message is the OAuth error code of a refusal: all a client is told.
func message(err error) string {
	var e *authn.Error
	if !errors.As(err, &e) {
		return "invalid_token"
	}
	switch e.Reason {
	case authn.ReasonMissingToken:
		return "missing access token"
	case authn.ReasonInvalidRequest:
		return "invalid_request"
	case authn.ReasonDPoPInvalid, authn.ReasonDPoPReplay:
		return "invalid_dpop_proof"
	}
	return "invalid_token"
}
