package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/devinfo"
)

// auditFlags are the flags every audit subcommand shares. Each defaults to
// the matching dev.json key.
type auditFlags struct {
	server, devJSON, credFile, caCert, key, origin string
}

func newAuditCommand() *cobra.Command {
	f := &auditFlags{}
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify, follow, prove and export the audit trail",
		Long: "Work with the audit trail: a Merkle-tree log whose signed checkpoints let anyone check\n" +
			"that no event was altered, removed or reordered. Flags default to the values in dev.json.",
		Args: cobra.NoArgs,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", "", "control plane URL (default: control_plane_url from dev.json)")
	pf.StringVar(&f.devJSON, "dev-json", filepath.Join(".bulwark", devinfo.FileName), "dev.json to take defaults from")
	pf.StringVar(&f.credFile, "credential-file", "", "file holding the bwk_ admin credential (default: admin_credential_file from dev.json)")
	pf.StringVar(&f.caCert, "ca-cert", "", "PEM CA certificate to trust for the server (default: ca_cert_file from dev.json, else the system roots)")
	pf.StringVar(&f.key, "key", "", "the log's signed-note verifier key (default: audit_public_key from dev.json)")
	pf.StringVar(&f.origin, "origin", "", "the log's checkpoint origin (default: audit_origin from dev.json, else the key's name)")
	cmd.AddCommand(newAuditVerifyCommand(f), newAuditTailCommand(f), newAuditProveCommand(f), newAuditExportCommand(f))
	return cmd
}

// auditConn is what the flags resolve to.
type auditConn struct {
	client *audit.Client
	key    string // "" when neither --key nor dev.json gave one
	origin string
}

// devInfo reads dev.json (see readDevInfo).
func (f *auditFlags) devInfo(cmd *cobra.Command) (*devinfo.Info, error) {
	return readDevInfo(cmd, f.devJSON)
}

// keyAndOrigin resolves the verifier key and origin from flags and
// dev.json, without the network.
func (f *auditFlags) keyAndOrigin(info *devinfo.Info) (key, origin string) {
	key, origin = firstOf(f.key, info.AuditPublicKey), firstOf(f.origin, info.AuditOrigin)
	if origin == "" && key != "" {
		if v, err := note.NewVerifier(key); err == nil {
			origin = v.Name()
		}
	}
	return key, origin
}

func (f *auditFlags) connect(cmd *cobra.Command) (*auditConn, error) {
	info, err := f.devInfo(cmd)
	if err != nil {
		return nil, err
	}
	server := firstOf(f.server, info.ControlPlaneURL)
	if server == "" {
		return nil, devinfo.ErrNoDevInfo
	}
	var caPEM []byte
	if ca := firstOf(f.caCert, info.CACertFile); ca != "" {
		if caPEM, err = readBounded(ca, 1<<20); err != nil {
			return nil, fmt.Errorf("CA certificate: %w", err)
		}
	}
	hc, err := audit.NewHTTPClient(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	var cred string
	if path := firstOf(f.credFile, info.AdminCredentialFile); path != "" {
		if cred, err = readCredential(cmd.ErrOrStderr(), path); err != nil {
			return nil, err
		}
	}
	c, err := audit.NewClient(server, hc, cred)
	if err != nil {
		return nil, err
	}
	key, origin := f.keyAndOrigin(info)
	return &auditConn{client: c, key: key, origin: origin}, nil
}

// verifier returns the key to check checkpoints with (as a verifier and as
// text) and the origin: the configured key, else the one pinned in the
// default state file, else the server's, with a warning.
func (a *auditConn) verifier(ctx context.Context, stderr io.Writer) (note.Verifier, string, string, error) {
	statePath := ""
	if a.origin != "" {
		statePath, _ = audit.DefaultStatePath(a.origin)
	}
	key, tofu, err := audit.ResolveVerifierKey(ctx, audit.HTTPSource(a.client), a.key, statePath)
	if err != nil {
		return nil, "", "", err
	}
	if tofu {
		fmt.Fprintf(stderr, "warning: no verifier key given (--key or dev.json): trusting the key the server publishes: %s\n", key)
	}
	v, err := note.NewVerifier(key)
	if err != nil {
		return nil, "", "", fmt.Errorf("verifier key: %w", err)
	}
	return v, key, firstOf(a.origin, v.Name()), nil
}

func newAuditVerifyCommand(f *auditFlags) *cobra.Command {
	var (
		statePath, bundle   string
		payloads, showProgr bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Verify the whole log against its signed checkpoint",
		Long: "Verify checks the latest signed checkpoint, proves it extends the one verified last time\n" +
			"(kept in the state file), recomputes the Merkle tree from every entry and compares it leaf by\n" +
			"leaf with the signed tree. It names the first entry that does not match. With --bundle it\n" +
			"verifies an exported bundle offline.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			stderr := cmd.ErrOrStderr()
			bar := newProgress(stderr, showProgr, "verifying")
			defer bar.done()
			opts := audit.VerifyOptions{
				Payloads: payloads, Progress: bar.update,
				Warn: func(m string) { bar.clear(); fmt.Fprintln(stderr, "warning: "+m) },
			}
			var (
				res *audit.VerifyResult
				err error
			)
			if bundle != "" {
				info, err := f.devInfo(cmd)
				if err != nil {
					return err
				}
				opts.VerifierKey, opts.Origin = f.keyAndOrigin(info)
				opts.StatePath = statePath // only when asked for: a bundle is a snapshot
				res, err = audit.VerifyBundle(ctx, bundle, opts)
				if err != nil {
					return err
				}
			} else {
				conn, err := f.connect(cmd)
				if err != nil {
					return err
				}
				opts.VerifierKey, opts.Origin, opts.StatePath = conn.key, conn.origin, statePath
				if opts.StatePath == "" {
					if opts.StatePath, err = defaultStatePath(ctx, conn); err != nil {
						return err
					}
				}
				if res, err = audit.Verify(ctx, audit.HTTPSource(conn.client), opts); err != nil {
					return err
				}
			}
			bar.done()
			_, err = fmt.Fprintln(cmd.OutOrStdout(), res.Summary())
			return err
		},
	}
	cmd.Flags().StringVar(&statePath, "state", "", "witness state file (default: <user config dir>/bulwark/audit-state/<origin>.json)")
	cmd.Flags().StringVar(&bundle, "bundle", "", "verify an exported bundle (directory or .tar.gz) offline instead of the server")
	cmd.Flags().BoolVar(&payloads, "payloads", false, "also fetch and check the payload of every oversized event")
	cmd.Flags().BoolVar(&showProgr, "progress", false, "show a progress bar even when stderr is not a terminal")
	return cmd
}

// defaultStatePath names the state file after the log's origin, asking
// the server for its key when nothing else names the log.
func defaultStatePath(ctx context.Context, conn *auditConn) (string, error) {
	origin := conn.origin
	if origin == "" {
		key, err := conn.client.Key(ctx)
		if err != nil {
			return "", fmt.Errorf("fetch the log's verifier key: %w", err)
		}
		v, err := note.NewVerifier(key)
		if err != nil {
			return "", fmt.Errorf("the log publishes an invalid verifier key: %w", err)
		}
		origin = v.Name()
	}
	return audit.DefaultStatePath(origin)
}

func newAuditTailCommand(f *auditFlags) *cobra.Command {
	var (
		n      int
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Print the last entries as JSON lines, and follow new ones with -f",
		Long: "Tail prints the last entries of the log, one event JSON a line. With -f it keeps polling\n" +
			"every second for new entries until interrupted. It does not verify: use verify or prove.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 0 {
				return &usageError{errors.New("tail: -n must not be negative")}
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			return conn.client.Tail(cmd.Context(), n, follow, time.Second, func(e audit.EntryJSON) error {
				line := []byte(e.Event)
				if len(line) == 0 {
					line, _ = json.Marshal(struct {
						Index int64  `json:"index"`
						Data  []byte `json:"data"`
					}{e.Index, e.Data})
				}
				_, err := fmt.Fprintf(out, "%s\n", line)
				return err
			})
		},
	}
	cmd.Flags().IntVarP(&n, "lines", "n", 10, "how many of the last entries to print")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new entries until interrupted")
	return cmd
}

func newAuditProveCommand(f *auditFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "prove INDEX",
		Short: "Print a C2SP tlog-proof receipt for an entry, verified against the latest checkpoint",
		Long: "Prove fetches the inclusion proof of entry INDEX in the latest signed checkpoint, checks it\n" +
			"and the checkpoint's signature locally, and prints the receipt (c2sp.org/tlog-proof), which\n" +
			"anyone holding the log's key can check offline.",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.ExactArgs(1)(cmd, args); err != nil {
				return &usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			index, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || index < 0 {
				return &usageError{fmt.Errorf("prove: INDEX %q is not an entry index", args[0])}
			}
			ctx := cmd.Context()
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			v, _, origin, err := conn.verifier(ctx, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			r, _, err := audit.Prove(ctx, conn.client, index, origin, v)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(r.Marshal())
			return err
		},
	}
}

func newAuditExportCommand(f *auditFlags) *cobra.Command {
	var (
		out       string
		receipts  []int64
		showProgr bool
	)
	cmd := &cobra.Command{
		Use:   "export --out DIR|FILE.tar.gz",
		Short: "Export the log as a self-contained bundle that verifies offline",
		Long: "Export writes the log up to its latest checkpoint as a static C2SP tlog-tiles tree: the\n" +
			"checkpoint, the key, every hash tile, every entry bundle, the payloads of oversized events and\n" +
			"receipts for the entries named with --receipt. --out names a new directory, or a .tar.gz file.\n" +
			"The bundle is verified once written; check it later with `bulwark audit verify --bundle`.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return &usageError{errors.New("export: --out is required")}
			}
			ctx := cmd.Context()
			stderr := cmd.ErrOrStderr()
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			_, key, origin, err := conn.verifier(ctx, stderr)
			if err != nil {
				return err
			}
			bar := newProgress(stderr, showProgr, "exporting")
			defer bar.done()
			res, err := audit.Export(ctx, audit.HTTPSource(conn.client), out, audit.ExportOptions{
				VerifierKey: key, Origin: origin, Receipts: receipts, Progress: bar.update})
			if err != nil {
				return err
			}
			bar.done()
			check, err := audit.VerifyBundle(ctx, out, audit.VerifyOptions{VerifierKey: key, Origin: origin, Payloads: true})
			if err != nil {
				return fmt.Errorf("the exported bundle does not verify: %w", err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "exported %d entries (%d tiles, %d payloads, %d receipts) to %s\n%s\n",
				res.Entries, res.Tiles, res.Payloads, len(res.Receipts), out, check.Summary())
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "new directory, or FILE.tar.gz, to write the bundle to")
	cmd.Flags().Int64SliceVar(&receipts, "receipt", nil, "also write the receipt of this entry (repeatable)")
	cmd.Flags().BoolVar(&showProgr, "progress", false, "show a progress bar even when stderr is not a terminal")
	return cmd
}

func noArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return &usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
	}
	return nil
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// readCredential reads the admin credential file, warning when others can
// read it. The credential itself never appears in a message.
func readCredential(stderr io.Writer, path string) (string, error) {
	b, err := readBounded(path, 4096)
	if err != nil {
		return "", fmt.Errorf("admin credential: %w", err)
	}
	cred := strings.TrimSpace(string(b))
	if cred == "" || strings.ContainsAny(cred, " \t\r\n") {
		return "", fmt.Errorf("admin credential file %s does not hold one credential", path)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(stderr, "warning: %s is readable by other users (mode %v); chmod 600 it\n", path, fi.Mode().Perm())
	}
	return cred, nil
}

// progress draws a progress bar on stderr when it is a terminal or when
// asked to; otherwise it does nothing.
type progress struct {
	w       io.Writer
	enabled bool
	desc    string
	bar     *progressbar.ProgressBar
}

func newProgress(w io.Writer, force bool, desc string) *progress {
	return &progress{w: w, enabled: force || isTerminal(w), desc: desc}
}

func (p *progress) update(done, total int64) {
	if !p.enabled {
		return
	}
	if p.bar == nil {
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(p.desc),
			progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish(),
			progressbar.OptionSetPredictTime(true), progressbar.OptionSetRenderBlankState(true))
	}
	_ = p.bar.Set64(done)
}

func (p *progress) clear() {
	if p.bar != nil {
		_ = p.bar.Clear()
	}
}

func (p *progress) done() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
