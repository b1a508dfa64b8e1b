package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/policy"
)

// The policy commands that call the control plane's policy repository.

func newPolicyPushCommand() *cobra.Command {
	var (
		flags   adminFlags
		comment string
	)
	cmd := &cobra.Command{
		Use:   "push DIR",
		Short: "Push the *.cedar files of DIR to the control plane as the new active policy version",
		Long: "Send every *.cedar file of DIR to the control plane, which validates the set against the schema\n" +
			"and, if it is valid, makes it the new active version and signs a bundle for the enforcement points.\n" +
			"A refused set changes nothing: each problem is printed as file:line:col: message and the command exits 1.",
		Args: dirArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := policy.ReadDir(args[0])
			if err != nil {
				return err
			}
			c, err := flags.connect(cmd)
			if err != nil {
				return err
			}
			var info policy.VersionInfo
			err = c.do(cmd.Context(), http.MethodPost, policy.PathVersions, policy.PushRequest{Files: files, Comment: comment}, &info)
			var pe *adminAPIError
			if errors.As(err, &pe) && len(pe.Problems) > 0 {
				out := cmd.OutOrStdout()
				for _, p := range pe.Problems {
					fmt.Fprintln(out, policy.Problem{File: p.File, Line: p.Line, Column: p.Column, Message: p.Message})
				}
				return fmt.Errorf("%w: the control plane refused the policy set: %d problem(s)", errPolicyFailed, len(pe.Problems))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pushed version %d (%d policies)\n", info.Version, info.Policies)
			return nil
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "a comment recorded with the version")
	flags.register(cmd)
	return cmd
}

func newPolicyVersionsCommand() *cobra.Command {
	var (
		flags adminFlags
		out   string
	)
	cmd := &cobra.Command{
		Use:   "versions",
		Short: "List the policy versions of the control plane, oldest first; * marks the active one",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out != "table" && out != "json" {
				return &usageError{fmt.Errorf("-o must be table or json, got %q", out)}
			}
			c, err := flags.connect(cmd)
			if err != nil {
				return err
			}
			var list policy.VersionList
			if err := c.do(cmd.Context(), http.MethodGet, policy.PathVersions, nil, &list); err != nil {
				return err
			}
			if out == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tCREATED\tAUTHOR\tPOLICIES\tROLLBACK OF\tCOMMENT")
			for _, v := range list.Versions {
				mark, rb := " ", "-"
				if v.Active {
					mark = "*"
				}
				if v.RollbackOf > 0 {
					rb = strconv.FormatInt(v.RollbackOf, 10)
				}
				fmt.Fprintf(tw, "%s%d\t%s\t%s\t%d\t%s\t%s\n", mark, v.Version, v.CreatedAt.UTC().Format("2006-01-02T15:04:05Z"),
					printableCut(v.Author, 80), v.Policies, rb, printableCut(v.Comment, 80))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "table", "output format: table or json")
	flags.register(cmd)
	return cmd
}

func newPolicyRollbackCommand() *cobra.Command {
	var (
		flags adminFlags
		to    int64
	)
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Make an earlier policy version active again (default: the version before the active one)",
		Long: "Roll the control plane back to an earlier policy version. The rollback is a new version with the\n" +
			"old files, so the history stays linear and versions only grow.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to < 0 {
				return &usageError{fmt.Errorf("--to must be a positive version, got %d", to)}
			}
			c, err := flags.connect(cmd)
			if err != nil {
				return err
			}
			var info policy.VersionInfo
			if err := c.do(cmd.Context(), http.MethodPost, policy.PathRollback, policy.RollbackRequest{To: to}, &info); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rolled back to version %d as version %d (%d policies)\n", info.RollbackOf, info.Version, info.Policies)
			return nil
		},
	}
	cmd.Flags().Int64Var(&to, "to", 0, "the version to restore (default: the one before the active version)")
	flags.register(cmd)
	return cmd
}

func newPolicyEntitiesCommand() *cobra.Command {
	var flags adminFlags
	cmd := &cobra.Command{
		Use:   "entities",
		Short: "Manage the entity store of the control plane (roles, memberships, attributes)",
		Long: "Manage the entities that policies are evaluated with. FILE holds a Cedar JSON entity array\n" +
			"(\"-\" reads standard input); every entity is validated against the schema and a refused file\n" +
			"changes nothing. TYPE is an entity type such as User or Bulwark::User.",
		Args: noArgs,
	}
	flags.register(cmd)
	put := func(use, short string, replace bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " FILE",
			Short: short,
			Args:  namedArgs("FILE"),
			RunE: func(cmd *cobra.Command, args []string) error {
				body, err := readEntitiesArg(cmd, args[0])
				if err != nil {
					return err
				}
				c, err := flags.connect(cmd)
				if err != nil {
					return err
				}
				method := http.MethodPost
				if replace {
					method = http.MethodPut
				}
				var res policy.EntitiesResult
				if err := c.do(cmd.Context(), method, policy.PathEntities, json.RawMessage(body), &res); err != nil {
					var pe *adminAPIError
					if errors.As(err, &pe) && len(pe.Problems) > 0 {
						for _, p := range pe.Problems {
							fmt.Fprintln(cmd.OutOrStdout(), p.Message)
						}
						return fmt.Errorf("%w: the control plane refused the entities: %d problem(s)", errPolicyFailed, len(pe.Problems))
					}
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "entities version %d (bundle %d)\n", res.EntitiesVersion, res.BundleVersion)
				return nil
			},
		}
	}
	var typ string
	list := &cobra.Command{
		Use:   "list",
		Short: "Print the stored entities as a Cedar JSON entity array",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := flags.connect(cmd)
			if err != nil {
				return err
			}
			path := policy.PathEntities
			if typ != "" {
				path += "?type=" + url.QueryEscape(typ)
			}
			var raw json.RawMessage
			if err := c.do(cmd.Context(), http.MethodGet, path, nil, &raw); err != nil {
				return err
			}
			return printEntityJSON(cmd, raw)
		},
	}
	list.Flags().StringVar(&typ, "type", "", "only entities of this type")
	one := func(use, short, method string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " TYPE ID",
			Short: short,
			Args:  namedArgs("TYPE", "ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := flags.connect(cmd)
				if err != nil {
					return err
				}
				path := policy.PathEntities + "/" + url.PathEscape(args[0]) + "/" + url.PathEscape(args[1])
				if method == http.MethodDelete {
					var res policy.EntitiesResult
					if err := c.do(cmd.Context(), method, path, nil, &res); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "deleted; entities version %d (bundle %d)\n", res.EntitiesVersion, res.BundleVersion)
					return nil
				}
				var raw json.RawMessage
				if err := c.do(cmd.Context(), method, path, nil, &raw); err != nil {
					return err
				}
				return printEntityJSON(cmd, raw)
			},
		}
	}
	cmd.AddCommand(
		put("put", "Insert or update the entities of FILE (a Cedar JSON entity array)", false),
		put("replace", "Replace the whole entity store with the entities of FILE", true),
		list,
		one("get", "Print one entity as Cedar JSON", http.MethodGet),
		one("delete", "Delete one entity", http.MethodDelete),
	)
	return cmd
}

// namedArgs accepts exactly the named arguments.
func namedArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return &usageError{fmt.Errorf("%s: expected %s, got %d argument(s)", cmd.CommandPath(), strings.Join(names, " "), len(args))}
		}
		return nil
	}
}

// readEntitiesArg reads an entities file, or standard input for "-".
func readEntitiesArg(cmd *cobra.Command, path string) ([]byte, error) {
	if path != "-" {
		return readBounded(path, policy.MaxEntitiesBytes)
	}
	b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), policy.MaxEntitiesBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read standard input: %w", err)
	}
	if len(b) > policy.MaxEntitiesBytes {
		return nil, fmt.Errorf("standard input is larger than %d bytes", policy.MaxEntitiesBytes)
	}
	return b, nil
}

func printEntityJSON(cmd *cobra.Command, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	buf.WriteByte('\n')
	_, err := cmd.OutOrStdout().Write(buf.Bytes())
	return err
}
