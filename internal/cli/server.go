package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/config"

	"github.com/bulwarksec/bulwark/internal/controlplane"
)

func newServerCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane (audit log, admin API) from a configuration file",
		Long: `Run the Bulwark control plane. Every setting comes from the YAML file given
with --config (see docs/configuration.md); without one, the documented safe
defaults apply. No secret is read from the environment or the file: keys are
generated at first start and sealed in the data directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			cfg.ResolvePaths()
			logger := newLogger(cmd.ErrOrStderr(), cfg.Log)
			srv, err := controlplane.New(cmd.Context(), &cfg, logger)
			if err != nil {
				return err
			}
			if srv.NewAdminCredential != "" {
				// Shown on the terminal once, never logged.
				fmt.Fprintf(cmd.OutOrStdout(), "A new admin credential was created and saved (0600) in %s\n", srv.AdminCredentialPath())
			}
			logger.Info("control plane listening", "url", srv.URL(), "data_dir", cfg.DataDir, "store", cfg.Store.Driver)
			return srv.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML configuration file")
	return cmd
}

// loadConfig returns the configuration in path, or the defaults when path
// is empty.
func loadConfig(path string) (config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	loaded, err := config.Load(path)
	if err != nil {
		return config.Config{}, err
	}
	return *loaded, nil
}
