// Package cli wires Bulwark's components into the cobra subcommands of the
// bulwark binary. It holds no domain logic: every command parses its flags,
// builds the components it needs and runs them.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Main runs the bulwark command line with args and returns the process exit
// code: 0 on success, 1 on a failure, 2 on a usage error.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	root := NewRootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "bulwark: %v\n", err)
		var u *usageError
		if errors.As(err, &u) {
			return 2
		}
		return 1
	}
	return 0
}

// usageError marks an error in the way a command was called.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// NewRootCommand returns the bulwark root command with every subcommand.
func NewRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "bulwark",
		Short:         "Bulwark: one identity, one policy, one audit trail for financial microservices",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(
		newVersionCommand(),
		newConfigCommand(),
		newServerCommand(),
		newDevCommand(),
		newAuditCommand(),
		newClientsCommand(),
		newCACommand(),
		newAgentCommand(),
		newPolicyCommand(),
		newServicesCommand(),
		newLoginCommand(),
		newGatewayCommand(),
	)
	return root
}
