package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/policy"
)

// errPolicyFailed is returned (exit 1) after a policy command has printed
// what is wrong.
var errPolicyFailed = errors.New("policy check failed")

func newPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Work with Cedar policy sets: validate, test and fmt offline; push, roll back and manage entities",
		Long: "Check, test and format a directory of Cedar policies (*.cedar) against Bulwark's schema with\n" +
			"validate, test and fmt, which need no server. push, versions, rollback and entities manage the\n" +
			"control plane's versioned policy set and entity store through its admin API (--server,\n" +
			"--credential-file and --ca-cert default to the values in dev.json). See docs/policy.md.",
		Args: noArgs,
	}
	cmd.AddCommand(newPolicyValidateCommand(), newPolicyTestCommand(), newPolicyFmtCommand(),
		newPolicyPushCommand(), newPolicyVersionsCommand(), newPolicyRollbackCommand(), newPolicyEntitiesCommand())
	return cmd
}

// dirArg accepts exactly one argument: the policy directory.
func dirArg(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return &usageError{fmt.Errorf("%s: expected one argument, the policy directory, got %d", cmd.CommandPath(), len(args))}
	}
	return nil
}

func newPolicyValidateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "validate DIR",
		Short: "Parse and type-check every *.cedar file of DIR against the Bulwark schema",
		Long: "Parse every *.cedar file of DIR and validate the policies against Bulwark's Cedar schema in\n" +
			"strict mode. Prints each problem as file:line:col: message and exits 1 if there is any.",
		Args: dirArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := policy.DefaultSchema()
			if err != nil {
				return err
			}
			set, problems, err := policy.CheckDir(args[0], s)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, p := range problems {
				fmt.Fprintln(out, p)
			}
			if len(problems) > 0 {
				return fmt.Errorf("%w: %d problem(s)", errPolicyFailed, len(problems))
			}
			fmt.Fprintf(out, "%d policies valid\n", set.Len())
			return nil
		},
	}
}

func newPolicyTestCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "test DIR",
		Short: "Run the policy tests (*.test.json) of DIR against its policies",
		Long: "Load and validate the policies of DIR, then run every case of every *.test.json file of DIR.\n" +
			"Prints a PASS or FAIL line per case and exits 1 if any case fails.",
		Args: dirArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := policy.RunTests(args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, r := range rep.Results {
				if r.Passed {
					fmt.Fprintf(out, "PASS %s: %s\n", r.File, r.Name)
					continue
				}
				fmt.Fprintf(out, "FAIL %s: %s: %s\n", r.File, r.Name, r.Failure)
			}
			fmt.Fprintf(out, "%d passed, %d failed\n", rep.Passed, rep.Failed)
			if rep.Failed > 0 {
				return fmt.Errorf("%w: %d test case(s) failed", errPolicyFailed, rep.Failed)
			}
			return nil
		},
	}
}

func newPolicyFmtCommand() *cobra.Command {
	var check bool
	cmd := &cobra.Command{
		Use:   "fmt DIR",
		Short: "Rewrite every *.cedar file of DIR in cedar-go's canonical formatting",
		Long: "Rewrite every *.cedar file of DIR in cedar-go's canonical formatting. Comments between policies\n" +
			"are kept; a file with a comment inside a policy statement is reported and left alone, because\n" +
			"the formatter would drop it. With --check nothing is written: the files that would change are\n" +
			"listed and the command exits 1 if there is any.",
		Args: dirArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			names, err := policy.PolicyFiles(dir)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var changed, failed int
			for _, name := range names {
				path := filepath.Join(dir, name)
				info, err := os.Stat(path)
				if err != nil {
					return err
				}
				if info.Size() > policy.MaxFileSize {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: larger than %d bytes, skipped\n", name, policy.MaxFileSize)
					failed++
					continue
				}
				text, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				formatted, err := policy.Format(name, text)
				if err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					failed++
					continue
				}
				if string(formatted) == string(text) {
					continue
				}
				changed++
				fmt.Fprintln(out, name)
				if check {
					continue
				}
				if err := os.WriteFile(path, formatted, info.Mode().Perm()); err != nil {
					return fmt.Errorf("write %s: %w", name, err)
				}
			}
			switch {
			case failed > 0:
				return fmt.Errorf("%w: %d file(s) could not be formatted", errPolicyFailed, failed)
			case check && changed > 0:
				return fmt.Errorf("%w: %d file(s) not formatted", errPolicyFailed, changed)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "list the files that would change and exit 1 if any, without writing")
	return cmd
}
