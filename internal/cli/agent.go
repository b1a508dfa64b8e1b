package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/internal/mesh/node"
	"github.com/bulwarksec/bulwark/internal/workload"
)

// maxJoinTokenFile bounds the join token file.
const maxJoinTokenFile = 4096

func newAgentCommand() *cobra.Command {
	var configPath, tokenFile string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: attest local workloads and serve them the SPIFFE Workload API",
		Long: `Run the Bulwark node agent. On its first start it joins the control plane
(agent.server_url, verified with agent.server_ca_file) with the one-time join
token read from --join-token-file or agent.join_token_file; afterwards it
renews its own identity and needs no token. It serves the SPIFFE Workload API
on agent.socket_path (default <data_dir>/agent/workload.sock) and keeps its
key and cached SVIDs sealed in <data_dir>/agent.

With agent.proxy_file set it also runs the mTLS proxy of the local services
the file names (see docs/mesh.md), once the agent is ready: an inbound mTLS
listener in front of each service, authorized by the Cedar service-to-service
policy, and a loopback outbound listener per service that presents the
service's own SVID. Its audit events are spooled in agent.spool_dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			cfg.ResolvePaths()
			if tokenFile != "" {
				cfg.Agent.JoinTokenFile = tokenFile
			}
			wcfg, err := agentConfig(&cfg)
			if err != nil {
				return err
			}
			logger := newLogger(cmd.ErrOrStderr(), cfg.Log)
			agent, err := workload.New(wcfg, workload.Deps{Logger: logger})
			if err != nil {
				return err
			}
			var proxy *node.Node
			if cfg.Agent.ProxyFile != "" {
				if proxy, err = newAgentProxy(&cfg, agent, logger); err != nil {
					return err
				}
			}
			logger.Info("agent starting", "server_url", wcfg.ServerURL, "socket", agent.SocketPath())
			return runAgentAndProxy(cmd.Context(), agent, proxy, logger)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML configuration file")
	cmd.Flags().StringVar(&tokenFile, "join-token-file", "", "file holding the one-time join token (first start only; overrides agent.join_token_file)")
	return cmd
}

// newAgentProxy builds the mTLS proxy of agent.proxy_file; its listeners
// are bound at once, so that a conflict stops the agent before it starts.
func newAgentProxy(cfg *config.Config, agent *workload.Agent, logger *slog.Logger) (*node.Node, error) {
	pf, err := node.LoadProxyFile(cfg.Agent.ProxyFile)
	if err != nil {
		return nil, fmt.Errorf("agent.proxy_file: %w", err)
	}
	services, err := pf.ServiceConfigs()
	if err != nil {
		return nil, fmt.Errorf("agent.proxy_file %s: %w", cfg.Agent.ProxyFile, err)
	}
	issuer := pf.Issuer
	if issuer == "" {
		issuer = cfg.Agent.ServerURL
	}
	n, err := node.New(node.Config{
		ServerURL:          cfg.Agent.ServerURL,
		Issuer:             issuer,
		AuditAllowed:       pf.AuditAllowed,
		SpoolDir:           cfg.Agent.SpoolDir,
		CacheDir:           filepath.Join(cfg.DataDir, "agent", "proxy"),
		PolicyMaxStaleness: time.Duration(cfg.Agent.PolicyMaxStaleness),
		Services:           services,
	}, node.Deps{
		Sources:    func(id spiffeid.ID) mesh.SVIDSource { return agent.SVIDSource(id) },
		HTTPClient: agent.ControlPlaneClient(),
		Denied:     agent.IsDenied,
		Logger:     logger,
	})
	if err != nil {
		return nil, fmt.Errorf("agent proxy: %w", err)
	}
	return n, nil
}

// agentReadyPoll is how often runAgentAndProxy looks whether the agent is ready.
const agentReadyPoll = 50 * time.Millisecond

// runAgentAndProxy runs the agent and, once it is ready, the proxy (if any), until
// ctx ends (SIGTERM) or one of them fails; both stop cleanly.
func runAgentAndProxy(ctx context.Context, agent *workload.Agent, proxy *node.Node, logger *slog.Logger) error {
	if proxy == nil {
		return agent.Run(ctx)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := agent.Run(gctx)
		if err == nil && ctx.Err() == nil {
			err = errors.New("agent stopped")
		}
		return err
	})
	g.Go(func() error {
		t := time.NewTicker(agentReadyPoll)
		defer t.Stop()
		for !agent.Ready() {
			select {
			case <-gctx.Done():
				return proxy.Close()
			case <-t.C:
			}
		}
		logger.Info("agent proxy starting")
		return proxy.Run(gctx)
	})
	return g.Wait()
}

// agentConfig turns the process configuration into the agent's.
func agentConfig(cfg *config.Config) (workload.Config, error) {
	wcfg := workload.Config{
		ServerURL:  cfg.Agent.ServerURL,
		DataDir:    cfg.DataDir,
		SocketPath: cfg.Agent.SocketPath,
	}
	if f := cfg.Agent.ServerCAFile; f != "" {
		pemData, err := os.ReadFile(f)
		if err != nil {
			return wcfg, fmt.Errorf("agent.server_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return wcfg, fmt.Errorf("agent.server_ca_file %s: no PEM certificate found", f)
		}
		wcfg.ServerCAs = pool
	}
	if f := cfg.Agent.JoinTokenFile; f != "" {
		token, err := readJoinToken(f)
		if err != nil {
			return wcfg, err
		}
		wcfg.JoinToken = token
	}
	return wcfg, nil
}

// readJoinToken reads the join token in path. A missing file is no error:
// an agent that has joined needs no token.
func readJoinToken(path string) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("join token file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJoinTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("join token file %s: %w", path, err)
	}
	if len(b) > maxJoinTokenFile {
		return "", fmt.Errorf("join token file %s: larger than %d bytes", path, maxJoinTokenFile)
	}
	token := strings.TrimSpace(string(b))
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("join token file %s: want one token on one line", path)
	}
	return token, nil
}
