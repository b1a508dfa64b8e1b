package cli

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"

	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bulwarksec/bulwark/internal/devinfo"
	"github.com/bulwarksec/bulwark/internal/identity"
)

// maxTokenResponse bounds the authorization server's answers.
const maxTokenResponse = 1 << 20

// loginFlags configure `bulwark login`.
type loginFlags struct {
	devJSON, issuer, caCert, clientID, certFile, keyFile string
	redirectURI, scope, tokenFile                        string
	timeout                                              time.Duration
}

func newLoginCommand() *cobra.Command {
	f := &loginFlags{}
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log a user in through the authorization server and save the access token",
		Long: `Log a user in with the authorization code flow of a FAPI 2.0 client: a pushed
authorization request (PAR) with PKCE S256, authenticated with the client's
certificate (self_signed_tls_client_auth), then the user logs in on the
authorization server's page in a browser, and the code comes back to a
loopback listener on --redirect-uri. The access token, bound to the
client's certificate, is saved (mode 0600) in --token-file.

Defaults come from dev.json: the demo client of ` + "`bulwark dev`" + ` and its
registered redirect URI http://127.0.0.1:8080/callback.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runLogin(cmd, f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.devJSON, "dev-json", filepath.Join(".bulwark", devinfo.FileName), "dev.json to take defaults from")
	fs.StringVar(&f.issuer, "issuer", "", "authorization server issuer (default: issuer from dev.json)")
	fs.StringVar(&f.caCert, "ca-cert", "", "PEM CA certificate of the issuer (default: ca_cert_file from dev.json)")
	fs.StringVar(&f.clientID, "client-id", "", "client ID (default: the demo client)")
	fs.StringVar(&f.certFile, "cert", "", "the client's PEM certificate (default: the demo client's)")
	fs.StringVar(&f.keyFile, "key", "", "the client's PEM private key (default: the demo client's)")
	fs.StringVar(&f.redirectURI, "redirect-uri", "http://127.0.0.1:8080/callback", "registered loopback redirect URI to listen on")
	fs.StringVar(&f.scope, "scope", "openid accounts:read payments:write", "scopes to ask for")
	fs.StringVar(&f.tokenFile, "token-file", "", "where to save the access token (default: <data_dir>/demo-user.token)")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Minute, "how long to wait for the login")
	return cmd
}

func runLogin(cmd *cobra.Command, f *loginFlags) error {
	info, err := readDevInfo(cmd, f.devJSON)
	if err != nil {
		return err
	}
	if info.DemoClient != nil {
		f.clientID = firstOf(f.clientID, info.DemoClient.ClientID)
		f.certFile = firstOf(f.certFile, info.DemoClient.CertificateFile)
		f.keyFile = firstOf(f.keyFile, info.DemoClient.PrivateKeyFile)
	}
	f.issuer = firstOf(f.issuer, info.Issuer)
	f.caCert = firstOf(f.caCert, info.CACertFile)
	if f.tokenFile == "" && info.DataDir != "" {
		f.tokenFile = filepath.Join(info.DataDir, "demo-user.token")
	}
	for name, v := range map[string]string{"--issuer": f.issuer, "--client-id": f.clientID, "--cert": f.certFile,
		"--key": f.keyFile, "--token-file": f.tokenFile} {
		if v == "" {
			return &usageError{fmt.Errorf("%s is required (no dev.json found to take it from)", name)}
		}
	}
	redirect, err := url.Parse(f.redirectURI)
	if err != nil || redirect.Scheme != "http" || redirect.Port() == "" || !isLoopbackHost(redirect.Hostname()) {
		return &usageError{fmt.Errorf("--redirect-uri %q: must be http://<loopback address>:<port>/<path>", f.redirectURI)}
	}
	hc, err := loginHTTPClient(f.caCert, f.certFile, f.keyFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", redirect.Host)
	if err != nil {
		return fmt.Errorf("listen on the redirect URI %s: %w", redirect.Host, err)
	}
	defer ln.Close()

	verifier, state := randomToken(), randomToken()
	challenge := sha256.Sum256([]byte(verifier))
	form := url.Values{
		"client_id": {f.clientID}, "response_type": {"code"}, "redirect_uri": {f.redirectURI}, "scope": {f.scope},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(challenge[:])}, "code_challenge_method": {"S256"},
		"state": {state}, "nonce": {randomToken()},
	}
	var par struct {
		RequestURI string `json:"request_uri"`
	}
	if err := postForm(cmd.Context(), hc, f.issuer+identity.PathPAR, form, &par); err != nil {
		return fmt.Errorf("pushed authorization request: %w", err)
	}
	authURL := f.issuer + identity.PathAuthorize + "?" + url.Values{"client_id": {f.clientID}, "request_uri": {par.RequestURI}}.Encode()
	fmt.Fprintf(cmd.OutOrStdout(), "Open this URL in a browser and log in:\n\n  %s\n\nWaiting for the login on %s ...\n", authURL, f.redirectURI)

	code, err := waitForCode(cmd.Context(), ln, redirect.Path, state, f.issuer, f.timeout)
	if err != nil {
		return err
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
	}
	if err := postForm(cmd.Context(), hc, f.issuer+identity.PathToken, url.Values{
		"grant_type": {identity.GrantAuthorizationCode}, "code": {code}, "redirect_uri": {f.redirectURI},
		"code_verifier": {verifier}, "client_id": {f.clientID},
	}, &tok); err != nil {
		return fmt.Errorf("redeem the authorization code: %w", err)
	}
	if tok.AccessToken == "" {
		return errors.New("the token response has no access_token")
	}
	if err := devinfo.WriteFileAtomic(f.tokenFile, []byte(tok.AccessToken+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Logged in. The access token (%s, expires in %ds, bound to %s) is in %s\n",
		tok.TokenType, tok.ExpiresIn, f.certFile, f.tokenFile)
	return nil
}

// waitForCode serves the redirect URI until the authorization server sends
// the user back with a code for state from issuer (RFC 9207), or an error.
func waitForCode(ctx context.Context, ln net.Listener, path, state, issuer string, timeout time.Duration) (string, error) {
	type result struct {
		code string
		err  error
	}
	done := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1:
			res.err = errors.New("the callback's state does not match this login (a forged or stale redirect)")
		case q.Get("iss") != issuer:
			res.err = fmt.Errorf("the callback comes from issuer %q, want %q", q.Get("iss"), issuer)
		case q.Get("error") != "":
			res.err = fmt.Errorf("login refused: %s: %s", q.Get("error"), q.Get("error_description"))
		case q.Get("code") == "":
			res.err = errors.New("the callback has no code")
		default:
			res.code = q.Get("code")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if res.err != nil {
			fmt.Fprintf(w, "<p>Login failed: %s</p>", html.EscapeString(res.err.Error()))
		} else {
			io.WriteString(w, "<p>Logged in. You can close this window.</p>")
		}
		select {
		case done <- res:
		default:
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		// Shutdown, not Close: the browser must get the page the handler
		// is still writing when the code arrives.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case res := <-done:
		return res.code, res.err
	case <-timer.C:
		return "", fmt.Errorf("no login within %s", timeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// loginHTTPClient returns a client that trusts caFile and presents the
// client's certificate.
func loginHTTPClient(caFile, certFile, keyFile string) (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if caFile != "" {
		b, err := readBounded(caFile, 1<<20)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}

// postForm posts form and decodes a 2xx JSON answer into out; an OAuth
// error answer becomes an error naming it.
func postForm(ctx context.Context, hc *http.Client, endpoint string, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &oe) == nil && oe.Error != "" {
			return fmt.Errorf("%s: %s", oe.Error, oe.Description)
		}
		return fmt.Errorf("%s answered %s", endpoint, resp.Status)
	}
	return json.Unmarshal(body, out)
}

// randomToken returns 256 random bits, base64url-encoded.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func isLoopbackHost(h string) bool {
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
