package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// devData is what the data-plane test reads from dev.json.
type devData struct {
	ControlPlaneURL   string   `json:"control_plane_url"`
	CACertFile        string   `json:"ca_cert_file"`
	Issuer            string   `json:"issuer"`
	GatewayURL        string   `json:"gateway_url"`
	GatewayCACertFile string   `json:"gateway_ca_cert_file"`
	DemoAPIPaths      []string `json:"demo_api_paths"`
	DemoUser          struct {
		Username     string `json:"username"`
		PasswordFile string `json:"password_file"`
	} `json:"demo_user"`
}

// TestDataPlaneEndToEnd is issue 6's first point: a user logs in through
// the identity provider, calls the gateway, the payment flows payments ->
// ledger over agent mTLS, and the audit trail holds the whole chain under
// one correlation ID. It also follows the walkthrough's denied call
// (notifications -> ledger) into the audit trail.
func TestDataPlaneEndToEnd(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(shortTempDir(t), "data")
	p := startProc(t, "dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0")
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(p.stdout.String(), "Press Ctrl-C to stop."); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("bulwark dev did not start")
		}
	}
	devJSON := filepath.Join(dataDir, "dev.json")
	var info devData
	if err := json.Unmarshal(waitFile(t, devJSON, time.Second), &info); err != nil {
		t.Fatal(err)
	}
	if info.GatewayURL == "" || len(info.DemoAPIPaths) == 0 {
		t.Fatalf("dev.json lacks gateway_url or demo_api_paths: %+v", info)
	}
	for _, want := range []string{"/v1/payments", "/v1/accounts"} {
		if !contains(info.DemoAPIPaths, want) {
			t.Errorf("demo_api_paths %v lacks %s", info.DemoAPIPaths, want)
		}
	}

	// A FAPI 2.0 client of our own, for the login: the demo client's
	// redirect URI has a fixed port, which a test must not depend on.
	callback := freeLoopbackAddr(t)
	redirectURI := "http://" + callback + "/callback"
	keyFile := filepath.Join(t.TempDir(), "e2e-web.key")
	runBulwark(t, "clients", "create", "e2e-web", "--dev-json", devJSON, "--auth-method", "self_signed_tls_client_auth",
		"--generate-key", keyFile, "--redirect-uri", redirectURI, "--grant-type", "authorization_code",
		"--scope", "openid", "--scope", "accounts:read", "--scope", "payments:write", "--audience", "bank-api", "--mtls-bound")
	certFile := keyFile[:len(keyFile)-len(filepath.Ext(keyFile))] + ".crt"
	if _, err := os.Stat(certFile); err != nil {
		certFile = keyFile + ".crt"
	}

	// The user logs in: `bulwark login` pushes the authorization request
	// and waits on the redirect URI; the "browser" (this test) signs in on
	// the identity provider's pages.
	tokenFile := filepath.Join(t.TempDir(), "user.token")
	login := startProc(t, "login", "--dev-json", devJSON, "--client-id", "e2e-web", "--cert", certFile, "--key", keyFile,
		"--redirect-uri", redirectURI, "--token-file", tokenFile, "--timeout", "60s")
	authURL := waitMatch(t, login, regexp.MustCompile(`(https://\S+/oauth2/authorize\?\S+)`), 20*time.Second)
	password := strings.TrimSpace(string(waitFile(t, info.DemoUser.PasswordFile, time.Second)))
	browserLogin(t, info.CACertFile, authURL, info.DemoUser.Username, password)
	select {
	case err := <-login.done:
		if err != nil {
			t.Fatalf("bulwark login: %v\n%s%s", err, login.stdout, login.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("bulwark login did not finish")
	}
	token := strings.TrimSpace(string(waitFile(t, tokenFile, time.Second)))

	// The user pays through the gateway, presenting the client certificate
	// the token is bound to.
	gw := gatewayClient(t, info.GatewayCACertFile, certFile, keyFile)
	call := func(method, path, reqID string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, info.GatewayURL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Request-ID", reqID)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", reqID)
		}
		resp, err := gw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		raw, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(raw, &out)
		if out == nil {
			out = map[string]any{"raw": string(raw)}
		}
		return resp.StatusCode, out
	}
	code, accounts := call(http.MethodGet, "/v1/accounts", "e2e-accounts", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/accounts: %d %v", code, accounts)
	}
	from := firstAccountID(t, accounts)

	payID := fmt.Sprintf("e2e-pay-%d", time.Now().UnixNano())
	code, payment := call(http.MethodPost, "/v1/payments", payID, map[string]any{
		"from_account": from, "to_iban": "DE89370400440532013000", "amount": 1250, "currency": "EUR", "reference": "e2e"})
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("POST /v1/payments: %d %v", code, payment)
	}
	code, entries := call(http.MethodGet, "/v1/ledger/entries?account="+url.QueryEscape(from), "e2e-ledger", nil)
	if code != http.StatusOK || !strings.Contains(fmt.Sprint(entries), fmt.Sprint(payment["id"])) {
		t.Fatalf("the payment is not in the ledger: %d %v (payment %v)", code, entries, payment)
	}

	// The walkthrough's denied call: notifications may not call the ledger.
	stmtID := fmt.Sprintf("e2e-stmt-%d", time.Now().UnixNano())
	if code, body := call(http.MethodPost, "/v1/statements", stmtID, nil); code != http.StatusBadGateway {
		t.Fatalf("POST /v1/statements: %d %v, want 502 (notifications -> ledger denied)", code, body)
	}

	// The audit trail holds the whole chain under the payment's
	// correlation ID: the gateway, the payments agent and service, and the
	// ledger's agent (peer payments) and service; and the denial under the
	// statement's.
	var chain, denied []string
	defer func() {
		if t.Failed() {
			t.Logf("events of the payment:\n%s\nevents of the statement:\n%s", strings.Join(chain, "\n"), strings.Join(denied, "\n"))
		}
	}()
	waitFor(t, 20*time.Second, "the chain in the audit trail", func() bool {
		tail := runBulwark(t, "audit", "tail", "-n", "5000", "--dev-json", devJSON)
		chain = eventsWith(tail, payID)
		denied = eventsWith(tail, stmtID)
		const bankNS = `"spiffe://bulwark.local/ns/bank/sa/`
		return reportedBy(chain, "/sa/gateway") && // the gateway's request event, sent with its SVID
			anyContains(chain, `"product":"bulwark-gateway"`, `"status_detail":"allowed"`, `"http_status":201`) &&
			// payments' agent let the gateway in; ledger's agent let payments in
			anyContains(chain, `"reported_by":"spiffe://bulwark.local/agent/dev"`, `"app_uid":`+bankNS+`gateway"`, `"uid":`+bankNS+`payments"`, "allowed by policy") &&
			anyContains(chain, `"reported_by":"spiffe://bulwark.local/agent/dev"`, `"app_uid":`+bankNS+`payments"`, `"uid":`+bankNS+`ledger"`, "allowed by policy") &&
			// the services' own records
			// payments saw the application the user logged in with, not the
			// gateway's exchange client
			anyContains(chain, "payment created", `"client":"e2e-web"`) && anyContains(chain, "ledger entry posted") &&
			// the statement: notifications -> ledger denied by the ledger's agent
			anyContains(denied, `"app_uid":`+bankNS+`notifications"`, `"uid":`+bankNS+`ledger"`, "denied by policy")
	})
	if err := p.stop(t, syscall.SIGTERM, 20*time.Second); !exitedCleanly(err) {
		t.Fatalf("dev did not exit cleanly: %v", err)
	}
	// No token reached the logs.
	if strings.Contains(p.stderr.String(), token) || strings.Contains(p.stdout.String(), token) {
		t.Error("the user's access token reached the logs")
	}
}

// browserLogin plays the browser: it opens the authorization URL, signs in
// and consents, and follows the redirect to the client's callback.
func browserLogin(t *testing.T, caFile, authURL, username, password string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: poolOf(t, caFile)}}}
	csrfRE := regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)
	base, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	get := func(u string) (string, string) {
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Request.URL.String(), string(b)
	}
	post := func(path string, form url.Values) (string, string) {
		resp, err := hc.PostForm(base.Scheme+"://"+base.Host+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Request.URL.String(), string(b)
	}
	_, page := get(authURL)
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no login form: %s", page)
	}
	final, page := post("/oauth2/authorize/login", url.Values{"csrf_token": {m[1]}, "username": {username}, "password": {password}})
	if strings.Contains(page, "/oauth2/authorize/consent") {
		m = csrfRE.FindStringSubmatch(page)
		final, page = post("/oauth2/authorize/consent", url.Values{"csrf_token": {m[1]}, "action": {"approve"}})
	}
	if !strings.Contains(page, "Logged in") {
		t.Fatalf("login did not reach the callback (at %s): %s", final, page)
	}
}

func gatewayClient(t *testing.T, caFile, certFile, keyFile string) *http.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: poolOf(t, caFile), Certificates: []tls.Certificate{cert}}}}
}

func poolOf(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(waitFile(t, caFile, time.Second)) {
		t.Fatalf("no certificate in %s", caFile)
	}
	return pool
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitMatch waits until re matches p's stdout and returns the first group.
func waitMatch(t *testing.T, p *proc, re *regexp.Regexp, within time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(p.stdout.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the output:\n%s%s", re, p.stdout, p.stderr)
		}
	}
}

func firstAccountID(t *testing.T, accounts map[string]any) string {
	t.Helper()
	list, _ := accounts["accounts"].([]any)
	if len(list) == 0 {
		t.Fatalf("no account: %v", accounts)
	}
	first, _ := list[0].(map[string]any)
	id, _ := first["id"].(string)
	if id == "" {
		t.Fatalf("account without id: %v", first)
	}
	return id
}

// eventsWith returns the lines of an audit tail that carry correlation
// id reqID.
func eventsWith(tail, reqID string) []string {
	var out []string
	for _, line := range strings.Split(tail, "\n") {
		if strings.Contains(line, `"correlation_uid":"`+reqID+`"`) {
			out = append(out, line)
		}
	}
	return out
}

func reportedBy(lines []string, suffix string) bool {
	for _, l := range lines {
		if regexp.MustCompile(`"reported_by":"spiffe://[^"]*` + regexp.QuoteMeta(suffix) + `"`).MatchString(l) {
			return true
		}
	}
	return false
}

func anyContains(lines []string, subs ...string) bool {
	for _, l := range lines {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
