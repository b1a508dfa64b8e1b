package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/config"
)

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with bulwark configuration files",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newConfigCheckCommand())
	return cmd
}

func newConfigCheckCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a configuration file and print the effective configuration",
		Long: "Check loads and validates FILE without starting anything. On success it prints\n" +
			"\"FILE: ok\" and the effective configuration, defaults filled in, as YAML.\n" +
			"On failure it lists every problem, one a line, as file:line:column: key: message.",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.ExactArgs(1)(cmd, args); err != nil {
				return &usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			cfg, err := config.Load(file)
			if err != nil {
				var cerr *config.Error
				if errors.As(err, &cerr) && len(cerr.Problems) > 1 {
					return fmt.Errorf("%s: %d problems:\n%w", file, len(cerr.Problems), err)
				}
				return err
			}
			out, err := cfg.YAML()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if _, err := fmt.Fprintf(w, "%s: ok\n", file); err != nil {
				return err
			}
			_, err = w.Write(out)
			return err
		},
	}
}
