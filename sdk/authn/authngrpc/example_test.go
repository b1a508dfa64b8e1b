package authngrpc_test

import (
	"context"
	"log"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/authn/authngrpc"
)

// A gRPC server verifies every call's access token; methods read the caller
// from the context.
func Example() {
	ctx := context.Background() // the server's lifetime
	v, err := authn.New(ctx, authn.Config{Issuer: "https://id.example.com", Audience: "https://ledger.example.com"})
	if err != nil {
		log.Print(err) // no issuer at that address in this example
		return
	}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(authngrpc.UnaryServerInterceptor(v)),
		grpc.StreamInterceptor(authngrpc.StreamServerInterceptor(v)),
	)
	_ = srv // register services, then srv.Serve(listener)
}

// appendEntry is how a method checks the caller's scopes.
func appendEntry(ctx context.Context) error {
	p, ok := authn.FromContext(ctx)
	if !ok || !p.HasScope("ledger:write") {
		return status.Error(codes.PermissionDenied, "insufficient_scope")
	}
	return nil
}

var _ = appendEntry
