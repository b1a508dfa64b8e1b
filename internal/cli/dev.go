package cli

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/controlplane"
	"github.com/bulwarksec/bulwark/internal/devinfo"
)

func newDevCommand() *cobra.Command {
	var (
		dataDir    string
		listen     string
		configPath string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform in one process on loopback, for development",
		Long: `Run the Bulwark platform in one process on 127.0.0.1 with an embedded SQLite
store in the data directory. Keys are generated on first start and sealed on
disk; the admin credential is printed once. <data-dir>/dev.json tells scripts
and tests where everything is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			abs, err := filepath.Abs(dataDir)
			if err != nil {
				return fmt.Errorf("data directory: %w", err)
			}
			if cmd.Flags().Changed("data-dir") || configPath == "" {
				cfg.DataDir = abs
				if cfg.Store.Driver == config.DriverSQLite {
					cfg.Store.Path = ""
				}
			}
			if cmd.Flags().Changed("listen") || configPath == "" {
				cfg.Listen = listen
			}
			cfg.ResolvePaths()
			if err := cfg.Validate(); err != nil {
				return err
			}
			logger := newLogger(cmd.ErrOrStderr(), cfg.Log)
			srv, err := controlplane.New(cmd.Context(), &cfg, logger)
			if err != nil {
				return err
			}
			info := devinfo.Info{
				ControlPlaneURL:     srv.URL(),
				AdminCredentialFile: srv.AdminCredentialPath(),
				CACertFile:          srv.CAFile(),
				DataDir:             cfg.DataDir,
				AuditOrigin:         srv.AuditLog().Origin(),
				AuditPublicKey:      srv.AuditLog().VerifierKey(),
				MetricsURL:          srv.URL() + "/metrics",
			}
			if err := devinfo.Write(cfg.DataDir, info); err != nil {
				return err
			}
			printDevBanner(cmd.OutOrStdout(), info, srv.NewAdminCredential)
			return srv.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", ".bulwark", "directory for the database, sealed keys and dev.json")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8443", "control plane listen address (port 0 picks a free port)")
	cmd.Flags().StringVar(&configPath, "config", "", "optional YAML configuration file; --data-dir and --listen override it")
	return cmd
}

func printDevBanner(w io.Writer, info devinfo.Info, newCredential string) {
	fmt.Fprintf(w, `
Bulwark dev platform is running.

  control plane   %s
  health          %s/healthz   readiness %s/readyz
  metrics         %s
  audit log       %s/v1/audit/checkpoint  (origin %s)
  audit key       %s
  TLS CA          %s
  dev.json        %s
`, info.ControlPlaneURL, info.ControlPlaneURL, info.ControlPlaneURL, info.MetricsURL,
		info.ControlPlaneURL, info.AuditOrigin, info.AuditPublicKey, info.CACertFile,
		filepath.Join(info.DataDir, devinfo.FileName))
	if newCredential != "" {
		fmt.Fprintf(w, `
  admin credential (shown once; saved 0600 in %s):
    %s
`, info.AdminCredentialFile, newCredential)
	} else {
		fmt.Fprintf(w, "\n  admin credential  in %s\n", info.AdminCredentialFile)
	}
	fmt.Fprintf(w, `
Try it:
  curl --cacert %s -H "Authorization: Bearer $(cat %s)" \
       -H 'Content-Type: application/json' \
       -d '{"events":[{"class_name":"Authentication","activity_name":"Logon","status_id":1,"actor":{"user":{"name":"alice"}}}]}' \
       %s/v1/audit/events
  curl --cacert %s %s/v1/audit/checkpoint
  go run ./cmd/bulwark audit verify

Press Ctrl-C to stop.
`, info.CACertFile, info.AdminCredentialFile, info.ControlPlaneURL, info.CACertFile, info.ControlPlaneURL)
}
