package cli

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/identity"
)

// clientsFlags are the flags every clients subcommand shares.
type clientsFlags struct {
	adminFlags
	output string
}

func newClientsCommand() *cobra.Command {
	f := &clientsFlags{}
	cmd := &cobra.Command{
		Use:   "clients",
		Short: "Register and manage OAuth clients of the authorization server",
		Long: "Register, inspect, change, disable and delete the OAuth clients of the authorization server\n" +
			"through the control plane's admin API (/v1/identity/clients). Every change is audited.\n" +
			"Flags default to the values in dev.json. See docs/identity.md.",
		Args: noArgs,
	}
	f.register(cmd)
	cmd.PersistentFlags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	cmd.AddCommand(
		newClientsCreateCommand(f), newClientsUpdateCommand(f), newClientsListCommand(f), newClientsGetCommand(f),
		newClientsDeleteCommand(f), newClientsSetDisabledCommand(f, true), newClientsSetDisabledCommand(f, false),
	)
	return cmd
}

// checkOutput refuses an unknown --output.
func (f *clientsFlags) checkOutput() error {
	if f.output != "table" && f.output != "json" {
		return &usageError{fmt.Errorf("--output %q: must be table or json", f.output)}
	}
	return nil
}

// clientPath is the admin API path of client id.
func clientPath(id string) string { return identity.PathAdminClients + "/" + url.PathEscape(id) }

func oneID(cmd *cobra.Command, args []string) error {
	if err := cobra.ExactArgs(1)(cmd, args); err != nil {
		return &usageError{fmt.Errorf("%s: %w (the client ID)", cmd.CommandPath(), err)}
	}
	return nil
}

// registration are the flags that describe a client.
type registration struct {
	name, profile, authMethod                   string
	jwksFile, generateKey                       string
	publicKeys, certs                           []string
	tlsSubjectDN, tlsSANDNS, tlsSANURI          string
	redirectURIs, grantTypes, scopes, audiences []string
	dpop, mtlsBound                             bool
}

func (g *registration) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&g.name, "name", "", "human-readable client name")
	fs.StringVar(&g.profile, "profile", identity.ProfileFAPI2, "fapi2 (confidential, PAR, sender-constrained tokens) or oauth2 (needed for public clients)")
	fs.StringVar(&g.authMethod, "auth-method", identity.AuthPrivateKeyJWT, "private_key_jwt, tls_client_auth, self_signed_tls_client_auth or none (public, PKCE only)")
	fs.StringVar(&g.jwksFile, "jwks-file", "", "JWKS file with the client's public keys")
	fs.StringArrayVar(&g.publicKeys, "public-key", nil, "PEM public key file to register (repeatable); kid is its RFC 7638 thumbprint")
	fs.StringArrayVar(&g.certs, "cert", nil, "PEM certificate file to register with x5c, for self_signed_tls_client_auth (repeatable)")
	fs.StringVar(&g.generateKey, "generate-key", "", "generate an Ed25519 key pair, write the private key (0600) to this new file and register the public key; "+
		"with self_signed_tls_client_auth also write a self-signed certificate beside it (.crt)")
	fs.StringVar(&g.tlsSubjectDN, "tls-subject-dn", "", "tls_client_auth: the certificate's subject DN (RFC 4514)")
	fs.StringVar(&g.tlsSANDNS, "tls-san-dns", "", "tls_client_auth: a dNSName SAN of the certificate")
	fs.StringVar(&g.tlsSANURI, "tls-san-uri", "", "tls_client_auth: a URI SAN of the certificate (e.g. a SPIFFE ID)")
	fs.StringArrayVar(&g.redirectURIs, "redirect-uri", nil, "redirect URI, matched exactly (repeatable)")
	fs.StringArrayVar(&g.grantTypes, "grant-type", nil, "allowed grant type (repeatable): authorization_code, client_credentials, refresh_token, "+
		identity.GrantTokenExchange+" (default: authorization_code with --redirect-uri, else client_credentials)")
	fs.StringArrayVar(&g.scopes, "scope", nil, "scope the client may request (repeatable)")
	fs.StringArrayVar(&g.audiences, "audience", nil, "audience (resource) the client may get tokens for (repeatable); the first is the default")
	fs.BoolVar(&g.dpop, "dpop", false, "require DPoP-bound tokens (RFC 9449)")
	fs.BoolVar(&g.mtlsBound, "mtls-bound", false, "bind tokens to the client's TLS certificate (RFC 8705)")
}

// check refuses flag values that cannot be right, before anything is read
// or written.
func (g *registration) check() error {
	switch g.profile {
	case identity.ProfileFAPI2, identity.ProfileOAuth2:
	default:
		return &usageError{fmt.Errorf("--profile %q: must be fapi2 or oauth2", g.profile)}
	}
	switch g.authMethod {
	case identity.AuthPrivateKeyJWT, identity.AuthTLSClient, identity.AuthSelfSignedTLSClient, identity.AuthNone:
	default:
		return &usageError{fmt.Errorf("--auth-method %q: must be private_key_jwt, tls_client_auth, self_signed_tls_client_auth or none", g.authMethod)}
	}
	return nil
}

// newKeyFiles are files written for a registration, removed again when
// the registration fails.
type newKeyFiles []string

func (n newKeyFiles) remove() {
	for _, p := range n {
		os.Remove(p)
	}
}

// apply sets the fields named by the flags on c: on create every field,
// on update only the fields whose flags were given. It returns the key
// files it generated.
func (g *registration) apply(cmd *cobra.Command, c *identity.Client, create bool) (newKeyFiles, error) {
	set := func(name string) bool { return create || cmd.Flags().Changed(name) }
	if set("name") {
		c.Name = g.name
	}
	if set("profile") {
		c.Profile = g.profile
	}
	if set("auth-method") {
		c.TokenEndpointAuthMethod = g.authMethod
	}
	if set("tls-subject-dn") {
		c.TLSClientAuthSubjectDN = g.tlsSubjectDN
	}
	if set("tls-san-dns") {
		c.TLSClientAuthSANDNS = g.tlsSANDNS
	}
	if set("tls-san-uri") {
		c.TLSClientAuthSANURI = g.tlsSANURI
	}
	if set("redirect-uri") {
		c.RedirectURIs = g.redirectURIs
	}
	if set("grant-type") {
		c.GrantTypes = g.grantTypes
	}
	if create && len(c.GrantTypes) == 0 {
		c.GrantTypes = []string{identity.GrantClientCredentials}
		if len(c.RedirectURIs) > 0 {
			c.GrantTypes = []string{identity.GrantAuthorizationCode}
		}
	}
	if set("scope") {
		c.Scopes = g.scopes
	}
	if set("audience") {
		c.Audiences = g.audiences
	}
	if set("dpop") {
		c.DPoPBoundAccessTokens = g.dpop
	}
	if set("mtls-bound") {
		c.TLSClientCertificateBoundAccessTokens = g.mtlsBound
	}
	keyFlags := false
	for _, name := range []string{"jwks-file", "public-key", "cert", "generate-key"} {
		keyFlags = keyFlags || cmd.Flags().Changed(name)
	}
	if !keyFlags {
		return nil, nil
	}
	keys, err := g.readKeys()
	if err != nil {
		return nil, err
	}
	var written newKeyFiles
	if g.generateKey != "" {
		k, files, err := generateClientKey(g.generateKey, c.TokenEndpointAuthMethod == identity.AuthSelfSignedTLSClient, time.Now())
		if err != nil {
			return nil, err
		}
		keys, written = append(keys, k), files
	}
	c.JWKS = &jose.JSONWebKeySet{Keys: keys}
	return written, nil
}

// readKeys reads the keys named by --jwks-file, --public-key and --cert.
// Private keys are refused: they never leave this machine.
func (g *registration) readKeys() ([]jose.JSONWebKey, error) {
	var keys []jose.JSONWebKey
	if g.jwksFile != "" {
		b, err := readBounded(g.jwksFile, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("--jwks-file: %w", err)
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(b, &set); err != nil {
			return nil, fmt.Errorf("--jwks-file %s: not a JWKS: %w", g.jwksFile, err)
		}
		for i, k := range set.Keys {
			if !k.IsPublic() {
				return nil, fmt.Errorf("--jwks-file %s: key %d is private or symmetric; register public keys only", g.jwksFile, i)
			}
		}
		keys = append(keys, set.Keys...)
	}
	for _, p := range g.publicKeys {
		pub, err := readPublicKeyPEM(p)
		if err != nil {
			return nil, fmt.Errorf("--public-key: %w", err)
		}
		k, err := identity.NewClientKey(pub, nil)
		if err != nil {
			return nil, fmt.Errorf("--public-key %s: %w", p, err)
		}
		keys = append(keys, k)
	}
	for _, p := range g.certs {
		cert, err := readCertificatePEM(p)
		if err != nil {
			return nil, fmt.Errorf("--cert: %w", err)
		}
		k, err := identity.NewClientKey(cert.PublicKey, cert)
		if err != nil {
			return nil, fmt.Errorf("--cert %s: %w", p, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func newClientsCreateCommand(f *clientsFlags) *cobra.Command {
	g := &registration{}
	cmd := &cobra.Command{
		Use:   "create ID",
		Short: "Register a client",
		Long: "Register a client. The common case, a service getting tokens with client credentials and\n" +
			"private_key_jwt:\n\n" +
			"  bulwark clients create payments --generate-key payments.key --dpop \\\n" +
			"      --scope accounts:read --audience bank-api\n\n" +
			"The server checks the registration and names the field it refuses.",
		Args: oneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			if err := g.check(); err != nil {
				return err
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			c := &identity.Client{ID: args[0]}
			written, err := g.apply(cmd, c, true)
			if err != nil {
				return err
			}
			var stored identity.Client
			if err := conn.do(cmd.Context(), http.MethodPost, identity.PathAdminClients, c, &stored); err != nil {
				written.remove()
				return err
			}
			f.noteWritten(cmd, written)
			return f.printClient(cmd.OutOrStdout(), &stored)
		},
	}
	g.register(cmd)
	return cmd
}

func newClientsUpdateCommand(f *clientsFlags) *cobra.Command {
	g := &registration{}
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change a client's registration: only the fields whose flags are given",
		Long: "Update reads the registration, changes the fields whose flags are given (a repeatable flag\n" +
			"replaces the whole list; any key flag replaces the whole key set) and writes it back.",
		Args: oneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			if err := g.check(); err != nil {
				return err
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			var c identity.Client
			if err := conn.do(cmd.Context(), http.MethodGet, clientPath(args[0]), nil, &c); err != nil {
				return err
			}
			written, err := g.apply(cmd, &c, false)
			if err != nil {
				return err
			}
			var stored identity.Client
			if err := conn.do(cmd.Context(), http.MethodPut, clientPath(args[0]), &c, &stored); err != nil {
				written.remove()
				return err
			}
			f.noteWritten(cmd, written)
			return f.printClient(cmd.OutOrStdout(), &stored)
		},
	}
	g.register(cmd)
	return cmd
}

func newClientsListCommand(f *clientsFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List every registered client",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			var list identity.ClientList
			if err := conn.do(cmd.Context(), http.MethodGet, identity.PathAdminClients, nil, &list); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.output == "json" {
				return printJSON(out, list)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CLIENT ID\tPROFILE\tAUTH METHOD\tGRANT TYPES\tSTATUS")
			for _, c := range list.Clients {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.ID, c.Profile, c.TokenEndpointAuthMethod, grantNames(c.GrantTypes), status(c))
			}
			return tw.Flush()
		},
	}
}

func newClientsGetCommand(f *clientsFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a client's registration",
		Args:  oneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			var c identity.Client
			if err := conn.do(cmd.Context(), http.MethodGet, clientPath(args[0]), nil, &c); err != nil {
				return err
			}
			return f.printClient(cmd.OutOrStdout(), &c)
		},
	}
}

func newClientsDeleteCommand(f *clientsFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a client (its tokens stay valid until they expire or are revoked)",
		Args:  oneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			if err := conn.do(cmd.Context(), http.MethodDelete, clientPath(args[0]), nil, nil); err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), map[string]any{"client_id": args[0], "deleted": true})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "deleted client %s\n", args[0])
			return err
		},
	}
}

func newClientsSetDisabledCommand(f *clientsFlags, disable bool) *cobra.Command {
	use, short, action := "enable ID", "Enable a disabled client", "enable"
	if disable {
		use, short, action = "disable ID", "Disable a client: it can no longer authenticate", "disable"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  oneID,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.checkOutput(); err != nil {
				return err
			}
			conn, err := f.connect(cmd)
			if err != nil {
				return err
			}
			var c identity.Client
			if err := conn.do(cmd.Context(), http.MethodPost, clientPath(args[0])+"/"+action, nil, &c); err != nil {
				return err
			}
			return f.printClient(cmd.OutOrStdout(), &c)
		},
	}
}

// noteWritten tells where generated keys were written: on stdout with the
// table, on stderr with JSON (stdout stays one JSON value).
func (f *clientsFlags) noteWritten(cmd *cobra.Command, written newKeyFiles) {
	w := cmd.OutOrStdout()
	if f.output == "json" {
		w = cmd.ErrOrStderr()
	}
	for _, p := range written {
		fmt.Fprintf(w, "wrote %s\n", p)
	}
}

func (f *clientsFlags) printClient(w io.Writer, c *identity.Client) error {
	if f.output == "json" {
		return printJSON(w, c)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("client_id", c.ID)
	row("name", c.Name)
	row("profile", c.Profile)
	row("auth method", c.TokenEndpointAuthMethod)
	row("tls subject dn", c.TLSClientAuthSubjectDN)
	row("tls san dns", c.TLSClientAuthSANDNS)
	row("tls san uri", c.TLSClientAuthSANURI)
	if c.JWKS != nil {
		for _, k := range c.JWKS.Keys {
			desc := k.Algorithm + " kid " + k.KeyID
			if len(k.Certificates) > 0 {
				desc += " (certificate " + k.Certificates[0].Subject.String() + ", expires " + k.Certificates[0].NotAfter.UTC().Format(time.DateOnly) + ")"
			}
			row("key", desc)
		}
	}
	row("grant types", grantNames(c.GrantTypes))
	row("redirect uris", strings.Join(c.RedirectURIs, " "))
	row("scopes", strings.Join(c.Scopes, " "))
	row("audiences", strings.Join(c.Audiences, " "))
	row("require par", fmt.Sprint(c.RequirePAR))
	row("dpop bound", fmt.Sprint(c.DPoPBoundAccessTokens))
	row("mtls bound", fmt.Sprint(c.TLSClientCertificateBoundAccessTokens))
	row("status", status(c))
	row("created", c.CreatedAt.UTC().Format(time.RFC3339))
	row("updated", c.UpdatedAt.UTC().Format(time.RFC3339))
	return tw.Flush()
}

func status(c *identity.Client) string {
	if c.Disabled {
		return "disabled"
	}
	return "enabled"
}

// grantNames shortens the token-exchange URN for tables.
func grantNames(gs []string) string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = strings.TrimPrefix(g, "urn:ietf:params:oauth:grant-type:")
	}
	return strings.Join(out, ",")
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// readPublicKeyPEM reads a PEM public key (PKIX "PUBLIC KEY"). A private
// key is refused.
func readPublicKeyPEM(path string) (crypto.PublicKey, error) {
	b, err := readBounded(path, 1<<20)
	if err != nil {
		return nil, err
	}
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		switch {
		case block == nil:
			return nil, fmt.Errorf("%s: no PEM public key found", path)
		case strings.Contains(block.Type, "PRIVATE KEY"):
			return nil, fmt.Errorf("%s holds a private key: give the public key (openssl pkey -in KEY -pubout)", path)
		case block.Type == "PUBLIC KEY":
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return pub, nil
		}
	}
}

// readCertificatePEM reads the first PEM certificate of path.
func readCertificatePEM(path string) (*x509.Certificate, error) {
	b, err := readBounded(path, 1<<20)
	if err != nil {
		return nil, err
	}
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM certificate found", path)
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return cert, nil
		}
	}
}

// generateClientKey creates an Ed25519 key pair, writes the private key to
// the new file path (0600) and, with cert, a self-signed certificate
// beside it. It returns the public JWK and the files it wrote.
func generateClientKey(path string, withCert bool, now time.Time) (jose.JSONWebKey, newKeyFiles, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return jose.JSONWebKey{}, nil, fmt.Errorf("generate key: %w", err)
	}
	keyPEM, err := privateKeyPEM(priv)
	if err != nil {
		return jose.JSONWebKey{}, nil, err
	}
	var (
		cert    *x509.Certificate
		certPEM []byte
		files   newKeyFiles
	)
	certPath := strings.TrimSuffix(path, filepath.Ext(path)) + ".crt"
	if withCert {
		if certPath == path {
			certPath = path + ".crt"
		}
		if cert, certPEM, err = selfSignedClientCert(priv, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), now); err != nil {
			return jose.JSONWebKey{}, nil, err
		}
	}
	k, err := identity.NewClientKey(priv.Public(), cert)
	if err != nil {
		return jose.JSONWebKey{}, nil, err
	}
	if err := writeNewFile(path, keyPEM, 0o600); err != nil {
		return jose.JSONWebKey{}, nil, fmt.Errorf("--generate-key: %w", err)
	}
	files = append(files, path)
	if withCert {
		if err := writeNewFile(certPath, certPEM, 0o644); err != nil {
			files.remove()
			return jose.JSONWebKey{}, nil, fmt.Errorf("--generate-key: %w", err)
		}
		files = append(files, certPath)
	}
	return k, files, nil
}
