package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/directory"
)

// The `bulwark services` commands: the control plane's service directory.

func newServicesCommand() *cobra.Command {
	var flags adminFlags
	cmd := &cobra.Command{
		Use:   "services",
		Short: "Show and manage the control plane's service directory",
		Long: "The service directory is the control plane's catalog of services: SPIFFE ID, endpoints, owner,\n" +
			"data classes held and region. Agents and gateways resolve destinations through it.",
		Args: noArgs,
	}
	flags.register(cmd)
	cmd.AddCommand(newServicesListCommand(&flags), newServicesGetCommand(&flags), newServicesPutCommand(&flags),
		newServicesDeleteCommand(&flags))
	return cmd
}

func newServicesListCommand(flags *adminFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the services of the directory, by name",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out != "table" && out != "json" {
				return &usageError{fmt.Errorf("-o must be table or json, got %q", out)}
			}
			c, err := flags.connect(cmd)
			if err != nil {
				return err
			}
			var list directory.ServiceList
			if err := c.do(cmd.Context(), http.MethodGet, directory.PathServices, nil, &list); err != nil {
				return err
			}
			if out == "json" {
				return svcPrintJSON(cmd, list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSPIFFE ID\tENDPOINTS\tOWNER\tDATA CLASSES\tREGION")
			for _, s := range list.Services {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", printableCut(s.Name, 63), printableCut(s.ID, 120),
					printableCut(svcOrDash(strings.Join(s.Endpoints, ",")), 200), printableCut(s.Owner, 80),
					printableCut(svcOrDash(strings.Join(s.DataClasses, ",")), 120), printableCut(svcOrDash(s.Region), 64))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "table", "output format: table or json")
	return cmd
}

func newServicesGetCommand(flags *adminFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get ID|NAME",
		Short: "Show one service, by SPIFFE ID (spiffe://...) or by name",
		Args:  namedArgs("ID|NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out != "text" && out != "json" {
				return &usageError{fmt.Errorf("-o must be text or json, got %q", out)}
			}
			c, err := flags.connect(cmd)
			if err != nil {
				return err
			}
			s, err := svcGet(cmd, c, args[0])
			if err != nil {
				return err
			}
			if out == "json" {
				return svcPrintJSON(cmd, s)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			for _, kv := range [][2]string{
				{"id", s.ID}, {"name", s.Name}, {"endpoints", strings.Join(s.Endpoints, ", ")}, {"owner", s.Owner},
				{"data classes", svcOrDash(strings.Join(s.DataClasses, ", "))}, {"region", svcOrDash(s.Region)},
				{"created", s.CreatedAt.UTC().Format("2006-01-02T15:04:05Z")}, {"updated", s.UpdatedAt.UTC().Format("2006-01-02T15:04:05Z")},
			} {
				fmt.Fprintf(tw, "%s:\t%s\n", kv[0], printableCut(kv[1], 2048))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "text", "output format: text or json")
	return cmd
}

// svcGet fetches a service by SPIFFE ID or, for anything else, by name.
func svcGet(cmd *cobra.Command, c *adminClient, arg string) (directory.Service, error) {
	if strings.HasPrefix(arg, "spiffe://") {
		var s directory.Service
		err := c.do(cmd.Context(), http.MethodGet, svcPath(arg), nil, &s)
		return s, err
	}
	var list directory.ServiceList
	if err := c.do(cmd.Context(), http.MethodGet, directory.PathServices+"?name="+url.QueryEscape(arg), nil, &list); err != nil {
		return directory.Service{}, err
	}
	if len(list.Services) != 1 {
		return directory.Service{}, fmt.Errorf("no service named %q", printableCut(arg, 64))
	}
	return list.Services[0], nil
}

func newServicesPutCommand(flags *adminFlags) *cobra.Command {
	var s directory.Service
	cmd := &cobra.Command{
		Use:   "put --id spiffe://... --name NAME --endpoint HOST:PORT [--endpoint ...] --owner OWNER",
		Short: "Create a service, or replace the one with the same SPIFFE ID",
		Long: "Create or replace a service of the directory. Every field is replaced: give all endpoints and\n" +
			"data classes the service has. The control plane validates the service and names any bad field.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, f := range []string{"id", "name", "endpoint", "owner"} {
				if !cmd.Flags().Changed(f) {
					return &usageError{fmt.Errorf("--%s is required", f)}
				}
			}
			if s.DataClasses == nil {
				s.DataClasses = []string{}
			}
			c, err := flags.connect(cmd)
			if err != nil {
				return err
			}
			var got directory.Service
			if err := c.do(cmd.Context(), http.MethodPut, svcPath(s.ID), s, &got); err != nil {
				return err
			}
			verb := "updated"
			if got.CreatedAt.Equal(got.UpdatedAt) {
				verb = "created"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s service %s (%s)\n", verb, printableCut(got.Name, 63), printableCut(got.ID, 2048))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&s.ID, "id", "", "the service's SPIFFE ID (spiffe://<trust domain>/...)")
	f.StringVar(&s.Name, "name", "", "the service's unique name, a DNS label (payments)")
	f.StringArrayVar(&s.Endpoints, "endpoint", nil, "a host:port of the service's agent (repeat for several, at most 16)")
	f.StringVar(&s.Owner, "owner", "", "the team or person responsible for the service")
	f.StringArrayVar(&s.DataClasses, "data-class", nil, "a class of data the service holds, such as public or restricted (repeatable)")
	f.StringVar(&s.Region, "region", "", "where the service runs (eu)")
	return cmd
}

func newServicesDeleteCommand(flags *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a service from the directory, by SPIFFE ID",
		Args:  namedArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !strings.HasPrefix(args[0], "spiffe://") {
				return &usageError{errors.New("ID must be a SPIFFE ID (spiffe://...); `bulwark services get NAME` shows it")}
			}
			c, err := flags.connect(cmd)
			if err != nil {
				return err
			}
			if err := c.do(cmd.Context(), http.MethodDelete, svcPath(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted service %s\n", printableCut(args[0], 2048))
			return nil
		},
	}
}

// svcPath is the API path of the service with SPIFFE ID id.
func svcPath(id string) string { return directory.PathServices + "/" + url.PathEscape(id) }

// svcOrDash shows an empty value as "-".
func svcOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// svcPrintJSON prints v as indented JSON.
func svcPrintJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
