package cli

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/config"
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
key and cached SVIDs sealed in <data_dir>/agent.`,
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
			logger.Info("agent starting", "server_url", wcfg.ServerURL, "socket", agent.SocketPath())
			return agent.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML configuration file")
	cmd.Flags().StringVar(&tokenFile, "join-token-file", "", "file holding the one-time join token (first start only; overrides agent.join_token_file)")
	return cmd
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
