package cli

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/ca"
)

// caFlags are the flags every `ca` subcommand that calls the server shares.
type caFlags struct {
	adminFlags
	output string
}

// checkOutput refuses an unknown --output.
func (f *caFlags) checkOutput() error {
	if f.output != "table" && f.output != "json" {
		return &usageError{fmt.Errorf("--output %q: must be table or json", f.output)}
	}
	return nil
}

func newCACommand() *cobra.Command {
	f := &caFlags{}
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage the workload certificate authority: registration entries, join tokens, revocation",
		Long: "Manage the SPIFFE workload CA of the control plane through its admin API (/v1/ca): register\n" +
			"workloads, create agent join tokens, revoke certificates, quarantine identities, list issued\n" +
			"certificates and rotate the intermediate. `ca init` creates an offline root and needs no server.\n" +
			"Flags default to the values in dev.json. See docs/workload-identity.md.",
		Args: noArgs,
	}
	f.register(cmd)
	cmd.PersistentFlags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	cmd.AddCommand(newCAInitCommand(), newCARotateCommand(f), newCAEntryCommand(f), newCAJoinTokenCommand(f),
		newCARevokeCommand(f), newCAQuarantineCommand(f), newCACertsCommand(f))
	return cmd
}

func newCAInitCommand() *cobra.Command {
	var (
		out, td string
		ttl     time.Duration
		hsm     pkcs11Flags
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create an offline root CA: writes root.crt and root.key (0600) to --out",
		Long: "Create a self-signed root certificate and key (ECDSA P-256) whose URI name constraint limits\n" +
			"it to the trust domain. Keep root.key offline: the server holds only intermediates.\n" +
			"With --pkcs11-*, the key is generated inside a PKCS#11 token and never leaves it; only root.crt\n" +
			"is written.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return &usageError{errors.New("init: --out is required")}
			}
			trust, err := spiffeid.TrustDomainFromString(td)
			if err != nil {
				return &usageError{fmt.Errorf("--trust-domain %q: %w", td, err)}
			}
			if ttl <= 0 {
				return &usageError{fmt.Errorf("--ttl %s: must be positive", ttl)}
			}
			if hsm.set() {
				c, err := hsm.config()
				if err != nil {
					return err
				}
				cert, err := ca.InitPKCS11Root(trust, ttl, c)
				if err != nil {
					return fmt.Errorf("create root: %w", err)
				}
				certPath, err := writeRootCert(out, cert)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s; the root key %q stays in PKCS#11 token %q (root of %s, expires %s)\n",
					certPath, c.KeyLabel, c.TokenLabel, trust.IDString(), cert.NotAfter.UTC().Format(time.RFC3339))
				return err
			}
			cert, key, err := ca.InitRoot(trust, ttl)
			if err != nil {
				return fmt.Errorf("create root: %w", err)
			}
			certPath, keyPath, err := ca.WriteRootFiles(out, cert, key)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s (root of %s, expires %s)\n",
				certPath, keyPath, trust.IDString(), cert.NotAfter.UTC().Format(time.RFC3339))
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to write root.crt and root.key to (existing files are never overwritten)")
	cmd.Flags().StringVar(&td, "trust-domain", "bulwark.local", "SPIFFE trust domain of the root")
	cmd.Flags().DurationVar(&ttl, "ttl", 87600*time.Hour, "lifetime of the root certificate")
	hsm.register(cmd)
	return cmd
}

// pkcs11Flags name a root key held in a PKCS#11 token. The PIN is read from
// a file, never from a flag or the environment.
type pkcs11Flags struct {
	module, token, pinFile, keyLabel string
}

func (p *pkcs11Flags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.module, "pkcs11-module", "", "PKCS#11 library holding the root key, e.g. /usr/lib/softhsm/libsofthsm2.so")
	cmd.Flags().StringVar(&p.token, "pkcs11-token", "", "label of the PKCS#11 token")
	cmd.Flags().StringVar(&p.pinFile, "pkcs11-pin-file", "", "file holding the token's user PIN")
	cmd.Flags().StringVar(&p.keyLabel, "pkcs11-key-label", ca.DefaultPKCS11KeyLabel, "label of the root key in the token")
}

func (p *pkcs11Flags) set() bool { return p.module != "" || p.token != "" || p.pinFile != "" }

// config checks the flags and reads the PIN.
func (p *pkcs11Flags) config() (ca.PKCS11Config, error) {
	if p.module == "" || p.token == "" || p.pinFile == "" {
		return ca.PKCS11Config{}, &usageError{errors.New("--pkcs11-module, --pkcs11-token and --pkcs11-pin-file go together")}
	}
	pin, err := os.ReadFile(p.pinFile)
	if err != nil {
		return ca.PKCS11Config{}, fmt.Errorf("read --pkcs11-pin-file: %w", err)
	}
	return ca.PKCS11Config{Module: p.module, TokenLabel: p.token, PIN: strings.TrimSpace(string(pin)), KeyLabel: p.keyLabel}, nil
}

// writeRootCert writes the root certificate (public) as PEM to dir,
// refusing to overwrite.
func writeRootCert(dir string, cert *x509.Certificate) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, ca.RootCertFileName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", fmt.Errorf("write root certificate: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}); err != nil {
		f.Close()
		return "", fmt.Errorf("write root certificate: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write root certificate: %w", err)
	}
	return path, nil
}

func newCARotateCommand(f *caFlags) *cobra.Command {
	var (
		rootCert, rootKey string
		ttl               time.Duration
		hsm               pkcs11Flags
	)
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new signing intermediate; the old one stays trusted for ca.rotation_overlap",
		Long: "Rotate the signing intermediate.\n\n" +
			"With --root-cert and --root-key (an offline root from `bulwark ca init`), the server makes a new\n" +
			"intermediate key and sends its CSR; this command signs it here with the root and sends back the\n" +
			"certificate. The root key never leaves this machine.\n\n" +
			"Without them, the server rotates with its own sealed root (dev mode and servers that never\n" +
			"installed an offline-root intermediate).",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			switch {
			case hsm.set() && (rootCert == "" || rootKey != ""):
				return &usageError{errors.New("rotate: with --pkcs11-*, give --root-cert and not --root-key")}
			case !hsm.set() && (rootCert == "") != (rootKey == ""):
				return &usageError{errors.New("rotate: give both --root-cert and --root-key, or neither")}
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var ans ca.RotateAnswer
			if rootCert == "" {
				if err := conn.do(ctx, http.MethodPost, ca.PathRotate, nil, &ans); err != nil {
					return err
				}
			} else {
				cert, key, closeRoot, err := loadRootSigner(rootCert, rootKey, &hsm)
				if err != nil {
					return err
				}
				defer closeRoot()
				var bundle ca.BundleAnswer
				if err := conn.do(ctx, http.MethodGet, ca.PathBundle, nil, &bundle); err != nil {
					return err
				}
				td, err := spiffeid.TrustDomainFromString(bundle.TrustDomain)
				if err != nil {
					return fmt.Errorf("rotate: the server's trust domain %q: %w", bundle.TrustDomain, err)
				}
				var csr ca.IntermediateCSRAnswer
				if err := conn.do(ctx, http.MethodPost, ca.PathIntermediateCSR, nil, &csr); err != nil {
					return err
				}
				inter, err := ca.SignIntermediateCSR(td, key, cert, csr.CSR, ttl)
				if err != nil {
					return fmt.Errorf("rotate: %w", err)
				}
				req := ca.InstallIntermediateRequest{Certificate: inter.Raw, RootCertificate: cert.Raw}
				if err := conn.do(ctx, http.MethodPost, ca.PathIntermediates, req, &ans); err != nil {
					return err
				}
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), ans)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "rotated: %d intermediate(s) trusted\n", len(ans.X509Authorities))
			return err
		},
	}
	cmd.Flags().StringVar(&rootCert, "root-cert", "", "offline root certificate (PEM, from `bulwark ca init`)")
	cmd.Flags().StringVar(&rootKey, "root-key", "", "offline root key (PEM, from `bulwark ca init`); it is used here and never sent")
	cmd.Flags().DurationVar(&ttl, "ttl", 720*time.Hour, "lifetime of the new intermediate (with --root-cert/--root-key)")
	hsm.register(cmd)
	return cmd
}

// loadRootSigner returns the offline root: from PEM files, or its
// certificate from a file and its key in a PKCS#11 token.
func loadRootSigner(certFile, keyFile string, hsm *pkcs11Flags) (*x509.Certificate, crypto.Signer, func(), error) {
	if !hsm.set() {
		cert, key, err := ca.LoadRoot(certFile, keyFile)
		return cert, key, func() {}, err
	}
	c, err := hsm.config()
	if err != nil {
		return nil, nil, nil, err
	}
	raw, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read --root-cert: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, nil, fmt.Errorf("--root-cert %s: not a PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--root-cert %s: %w", certFile, err)
	}
	root, err := ca.OpenPKCS11Root(c, cert)
	if err != nil {
		return nil, nil, nil, err
	}
	return cert, root.Signer(), func() { _ = root.Close() }, nil
}

func newCAEntryCommand(f *caFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "entry",
		Short: "Register workloads: map a SPIFFE ID to the selectors a process must match",
		Args:  noArgs,
	}
	var spiffeID, parentID, ttl string
	var selectors []string
	create := &cobra.Command{
		Use:   "create",
		Short: "Register a workload",
		Long: "Register a workload:\n\n" +
			"  bulwark ca entry create --spiffe-id spiffe://bulwark.local/ns/bank/sa/payments \\\n" +
			"      --selector unix:uid:1001 --selector unix:path:/usr/bin/payments\n\n" +
			"Selectors: unix:uid:N, unix:gid:N, unix:path:/abs/path, unix:sha256:HEX. A process gets the\n" +
			"SVID only when it matches every selector.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			if spiffeID == "" || len(selectors) == 0 {
				return &usageError{errors.New("entry create: --spiffe-id and at least one --selector are required")}
			}
			for _, s := range selectors {
				if _, err := ca.ParseSelector(s); err != nil {
					return &usageError{fmt.Errorf("--selector %q: %w", s, err)}
				}
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			var e ca.EntryJSON
			req := ca.CreateEntryRequest{SPIFFEID: spiffeID, ParentID: parentID, Selectors: selectors, TTL: ttl}
			if err := conn.do(cmd.Context(), http.MethodPost, ca.PathEntries, req, &e); err != nil {
				return err
			}
			return f.printEntries(cmd.OutOrStdout(), []ca.EntryJSON{e}, false)
		},
	}
	create.Flags().StringVar(&spiffeID, "spiffe-id", "", "SPIFFE ID to issue, e.g. spiffe://bulwark.local/ns/NS/sa/SERVICE")
	create.Flags().StringVar(&parentID, "parent-id", "", "only this agent (spiffe://TD/agent/NAME) may serve the entry (default: any agent)")
	create.Flags().StringArrayVar(&selectors, "selector", nil, "selector the process must match (repeatable), e.g. unix:uid:1001")
	create.Flags().StringVar(&ttl, "ttl", "", "SVID lifetime, e.g. 1h (default: ca.svid_ttl)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List registration entries",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			var ans ca.EntryList
			if err := conn.do(cmd.Context(), http.MethodGet, ca.PathEntries, nil, &ans); err != nil {
				return err
			}
			return f.printEntries(cmd.OutOrStdout(), ans.Entries, true)
		},
	}
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a registration entry (SVIDs already issued stay valid until they expire)",
		Args:  oneArg("the entry ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			if err := conn.do(cmd.Context(), http.MethodDelete, ca.PathEntries+"/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), map[string]any{"id": args[0], "deleted": true})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "deleted entry %s\n", args[0])
			return err
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// oneArg requires exactly one argument, described by what.
func oneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(1)(cmd, args); err != nil {
			return &usageError{fmt.Errorf("%s: %w (%s)", cmd.CommandPath(), err, what)}
		}
		return nil
	}
}

func (f *caFlags) printEntries(w io.Writer, entries []ca.EntryJSON, list bool) error {
	if f.output == "json" {
		if list {
			return printJSON(w, ca.EntryList{Entries: entries})
		}
		return printJSON(w, entries[0])
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENTRY ID\tSPIFFE ID\tPARENT\tSELECTORS\tTTL")
	for _, e := range entries {
		sels := make([]string, len(e.Selectors))
		for i, s := range e.Selectors {
			sels[i] = s.Type + ":" + s.Value
		}
		ttl := "default"
		if e.TTLSeconds > 0 {
			ttl = (time.Duration(e.TTLSeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.ID, e.SPIFFEID, firstOf(e.ParentID, "any agent"), strings.Join(sels, ","), ttl)
	}
	return tw.Flush()
}

func newCAJoinTokenCommand(f *caFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "join-token",
		Short: "Create one-time join tokens for agents",
		Args:  noArgs,
	}
	var agent, out string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a one-time, short-lived join token for agent NAME",
		Long: "Create a join token for `bulwark agent`. The token is shown once: with --out it is written to a\n" +
			"new file (0600) and not printed, so that it stays out of terminal scrollback and logs.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			if agent == "" {
				return &usageError{errors.New("join-token create: --agent is required")}
			}
			if ttl < 0 {
				return &usageError{fmt.Errorf("--ttl %s: must not be negative", ttl)}
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			req := ca.JoinTokenRequest{Agent: agent}
			if ttl > 0 {
				req.TTL = ttl.String()
			}
			var ans ca.JoinTokenAnswer
			if err := conn.do(cmd.Context(), http.MethodPost, ca.PathJoinTokens, req, &ans); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if out != "" {
				if err := writeNewFile(out, []byte(ans.Token+"\n"), 0o600); err != nil {
					return fmt.Errorf("--out: %w", err)
				}
				ans.Token = ""
			}
			if f.output == "json" {
				return printJSON(w, ans)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			if out != "" {
				fmt.Fprintf(tw, "token file\t%s\n", out)
			} else {
				fmt.Fprintf(tw, "token\t%s\n", ans.Token)
			}
			fmt.Fprintf(tw, "agent id\t%s\nexpires\t%s\n", ans.AgentID, ans.ExpiresAt.UTC().Format(time.RFC3339))
			return tw.Flush()
		},
	}
	create.Flags().StringVar(&agent, "agent", "", "agent name: the agent's SPIFFE ID becomes spiffe://TD/agent/NAME")
	create.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default: ca.join_token_ttl)")
	create.Flags().StringVar(&out, "out", "", "write the token to this new file (0600) instead of printing it")
	cmd.AddCommand(create)
	return cmd
}

func newCARevokeCommand(f *caFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke SERIAL",
		Short: "Revoke a certificate by serial number (hex): agents stop serving and trusting it within seconds",
		Args:  oneArg("the certificate serial number in hex"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.deny(cmd, ca.PathRevoke, ca.RevokeRequest{Serial: args[0], Reason: reason})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
	return cmd
}

func newCAQuarantineCommand(f *caFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "quarantine SPIFFE_ID",
		Short: "Deny a SPIFFE ID everywhere: no renewal, and agents drop its SVIDs within seconds",
		Args:  oneArg("the SPIFFE ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := spiffeid.FromString(args[0]); err != nil {
				return &usageError{fmt.Errorf("quarantine: %q: %w", args[0], err)}
			}
			return f.deny(cmd, ca.PathQuarantine, ca.QuarantineRequest{SPIFFEID: args[0], Reason: reason})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
	return cmd
}

// deny posts a revocation or quarantine and prints the answer.
func (f *caFlags) deny(cmd *cobra.Command, path string, req any) error {
	if err := f.checkOutput(); err != nil {
		return err
	}
	conn, err := f.connect(cmd)
	if err != nil {
		return err
	}
	var ans ca.DenyAnswer
	if err := conn.do(cmd.Context(), http.MethodPost, path, req, &ans); err != nil {
		return err
	}
	if f.output == "json" {
		return printJSON(cmd.OutOrStdout(), ans)
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "denied %s %s\n", strings.ReplaceAll(ans.Kind, "_", " "), ans.Value)
	return err
}

func newCACertsCommand(f *caFlags) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "List issued certificates, soonest expiry first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			if limit < 1 {
				return &usageError{fmt.Errorf("--limit %d: must be at least 1", limit)}
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			var ans ca.CertList
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if err := conn.do(cmd.Context(), http.MethodGet, ca.PathCertificates+"?"+q.Encode(), nil, &ans); err != nil {
				return err
			}
			slices.SortStableFunc(ans.Certificates, func(a, b ca.CertJSON) int { return a.NotAfter.Compare(b.NotAfter) })
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), ans)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERIAL\tSPIFFE ID\tAGENT\tNOT AFTER\tISSUED")
			for _, c := range ans.Certificates {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Serial, c.SPIFFEID, firstOf(c.Agent, "-"),
					c.NotAfter.UTC().Format(time.RFC3339), c.IssuedAt.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many certificates")
	return cmd
}
