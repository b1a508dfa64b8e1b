package mtls

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// SourceOptions configure [Source]. The zero value is the documented
// default.
type SourceOptions struct {
	// SocketPath is the absolute path of the Workload API's unix socket, the
	// agent's agent.socket_path. Empty means the address in the
	// SPIFFE_ENDPOINT_SOCKET environment variable.
	SocketPath string
}

// Source connects to the Workload API of the local agent and returns a
// source of the workload's X.509-SVID and trust bundles, kept up to date as
// the agent rotates them. It waits until the first SVID arrives or ctx is
// done. The source serves both arguments of [ServerConfig] and
// [ClientConfig]; close it when done.
func Source(ctx context.Context, opts SourceOptions) (*workloadapi.X509Source, error) {
	var o []workloadapi.X509SourceOption
	if opts.SocketPath != "" {
		if !filepath.IsAbs(opts.SocketPath) {
			return nil, fmt.Errorf("mtls: workload API socket path %q is not absolute", opts.SocketPath)
		}
		o = append(o, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+opts.SocketPath)))
	}
	src, err := workloadapi.NewX509Source(ctx, o...)
	if err != nil {
		return nil, fmt.Errorf("mtls: workload API X.509 source: %w", err)
	}
	return src, nil
}
