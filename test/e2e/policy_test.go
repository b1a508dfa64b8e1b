package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulwarksec/bulwark/sdk/authz"
)

const (
	e2ePayments = "spiffe://bulwark.local/ns/bank/sa/payments"
	e2eLedger   = "spiffe://bulwark.local/ns/bank/sa/ledger"
)

// TestPolicyEndToEnd drives the policy lifecycle through the real binary:
// `bulwark dev` loads the reference bank policies and serves the AuthZEN
// API and signed bundles; the banner's AuthZEN curl works; an invalid push
// is refused with file:line:col and changes nothing; a valid push reaches a
// running sdk/authz client within 5 s and the AuthZEN API at once; a
// rollback restores the previous set; every change and decision is in the
// audit trail; and with the control plane stopped, the embedded client
// keeps deciding from its last bundle until the staleness limit, then
// denies.
func TestPolicyEndToEnd(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	p := startProc(t, "dev", "--data-dir", dataDir, "--listen", "127.0.0.1:0")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.stdout.String(), "Press Ctrl-C to stop.") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	devJSON := filepath.Join(dataDir, "dev.json")
	var info struct {
		ControlPlaneURL     string `json:"control_plane_url"`
		AdminCredentialFile string `json:"admin_credential_file"`
		CACertFile          string `json:"ca_cert_file"`
		AuthZENURL          string `json:"authzen_url"`
		ExtAuthzAddr        string `json:"ext_authz_addr"`
	}
	if err := json.Unmarshal(waitFile(t, devJSON, 10*time.Second), &info); err != nil {
		t.Fatal(err)
	}
	if info.AuthZENURL == "" || info.ExtAuthzAddr == "" {
		t.Fatalf("dev.json lacks authzen_url or ext_authz_addr: %+v", info)
	}
	ep := newEndpoint(t, info.ControlPlaneURL, info.CACertFile, info.AdminCredentialFile)
	ep.waitReady(t, 10*time.Second)

	// The AuthZEN metadata is public and names the evaluation endpoints.
	var meta map[string]any
	ep.getJSON(t, "/.well-known/authzen-configuration", &meta)
	if meta["access_evaluation_endpoint"] != info.AuthZENURL+"/access/v1/evaluation" {
		t.Fatalf("AuthZEN metadata: %v", meta)
	}

	// The banner's AuthZEN curl, run as printed: payments may call ledger.
	ask := bannerAuthZENCommand(t, p.stdout.String())
	if !curlDecision(t, ask) {
		t.Fatal("the banner's AuthZEN request was denied under the reference policies")
	}

	cli := func(args ...string) (string, error) {
		cmd := exec.Command(bulwarkBin, append(args, "--dev-json", devJSON)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	if out, err := cli("policy", "versions"); err != nil || !strings.Contains(out, "1") {
		t.Fatalf("policy versions: %v\n%s", err, out)
	}

	// An embedded client, as a service would run it.
	client := startEmbedded(t, ep, info.CACertFile)
	callLedger := func() authz.Decision {
		return client.Decide(authz.Request{
			Principal: cedar.NewEntityUID("Bulwark::Service", e2ePayments),
			Action:    cedar.NewEntityUID("Bulwark::Action", "call"),
			Resource:  cedar.NewEntityUID("Bulwark::Service", e2eLedger),
			Context:   authz.Context{Time: time.Now(), Hour: 10, Zone: "internal", Region: "eu", RiskScore: 0}.Record(),
		})
	}
	if d := callLedger(); !d.Allowed {
		t.Fatalf("embedded decision under the reference policies: %+v", d)
	}

	// An invalid push is refused with file:line:col; nothing changes.
	dir := copyPolicies(t, filepath.Join("..", "..", "examples", "policies", "bank"))
	bad := filepath.Join(dir, "zz-bad.cedar")
	writeFile(t, bad, []byte("@id(\"bad\")\npermit (principal, action == Bulwark::Action::\"call\", resource)\nwhen { principal.noSuchAttribute };\n"))
	out, err := cli("policy", "push", dir)
	if err == nil || !strings.Contains(out, "zz-bad.cedar:1:1") {
		t.Fatalf("invalid push: %v\n%s", err, out)
	}
	before := client.Version()

	// A valid push freezes the ledger: the embedded client sees it within
	// 5 s, the AuthZEN API at once.
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "zz-freeze.cedar"), []byte("// Incident: nothing calls the ledger.\n@id(\"freeze-ledger\")\nforbid (\n    principal,\n    action == Bulwark::Action::\"call\",\n    resource == Bulwark::Service::\""+e2eLedger+"\"\n);\n"))
	if out, err := cli("policy", "push", dir, "--comment", "freeze the ledger"); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	pushed := time.Now()
	if curlDecision(t, ask) {
		t.Fatal("AuthZEN still allows payments -> ledger after the freeze")
	}
	for d := callLedger(); d.Allowed; d = callLedger() {
		if time.Since(pushed) > 5*time.Second {
			t.Fatalf("the policy change did not reach sdk/authz within 5 s (version %d, was %d)", client.Version(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("policy change reached sdk/authz after %s", time.Since(pushed).Round(time.Millisecond))
	if d := callLedger(); !slices.Contains(d.Reasons, "freeze-ledger") {
		t.Fatalf("denial does not name the forbid: %+v", d)
	}

	// One command rolls back.
	if out, err := cli("policy", "rollback"); err != nil {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	if !curlDecision(t, ask) {
		t.Fatal("AuthZEN still denies after the rollback")
	}
	waitFor(t, 5*time.Second, "the rollback to reach sdk/authz", func() bool { return callLedger().Allowed })

	// The changes and the decisions are in the audit trail.
	flags := []string{"--server", ep.url, "--ca-cert", info.CACertFile, "--credential-file", info.AdminCredentialFile}
	var events []auditRecord
	waitFor(t, 15*time.Second, "the decisions in the audit trail", func() bool {
		events = parseAuditTail(t, runBulwark(t, append([]string{"audit", "tail", "-n", "1000"}, flags...)...))
		n := 0
		for _, ev := range events {
			if ev.ClassUID == 6003 && ev.Unmapped["api"] == "authzen" {
				n++
			}
		}
		return n >= 3
	})
	for what, match := range map[string]func(auditRecord) bool{
		"the refused push": func(ev auditRecord) bool { return ev.ClassUID == 3004 && ev.StatusID == 2 },
		"the push":         func(ev auditRecord) bool { return ev.ClassUID == 3004 && ev.StatusID == 1 && ev.ActivityID == 1 },
		"the rollback":     func(ev auditRecord) bool { return ev.ClassUID == 3004 && ev.StatusID == 1 && ev.ActivityID == 3 },
		"a denial naming freeze-ledger": func(ev auditRecord) bool {
			r, _ := ev.Unmapped["reasons"].([]any)
			return ev.ClassUID == 6003 && slices.Contains(r, any("freeze-ledger"))
		},
	} {
		if !slices.ContainsFunc(events, match) {
			t.Errorf("the audit trail lacks %s", what)
		}
	}

	// The control plane stops: the embedded client keeps deciding from its
	// last bundle until the staleness limit, then denies.
	if err := p.stop(t, syscall.SIGINT, 15*time.Second); !exitedCleanly(err) {
		t.Fatalf("dev did not exit cleanly: %v", err)
	}
	stopped := time.Now()
	if d := callLedger(); !d.Allowed {
		t.Fatalf("decision right after the control plane stopped: %+v", d)
	}
	waitFor(t, 15*time.Second, "the stale bundle to deny", func() bool {
		d := callLedger()
		return !d.Allowed && d.Refusal != ""
	})
	// The limit counts from the control plane's last confirmation, at most
	// one long poll (2 s) before it stopped.
	t.Logf("embedded decisions denied %s after the control plane stopped (staleness limit %s)",
		time.Since(stopped).Round(time.Millisecond), embeddedStaleness)
}

// embeddedStaleness is the e2e client's maximum staleness.
const embeddedStaleness = 3 * time.Second

// startEmbedded runs an sdk/authz client against the control plane, with
// the bundle keys fetched over the verified TLS channel.
func startEmbedded(t *testing.T, ep *endpoint, caFile string) *authz.Client {
	t.Helper()
	var keys struct {
		Keys []struct {
			PublicKey string `json:"public_key"`
		} `json:"keys"`
	}
	ep.getJSON(t, "/v1/policy/bundle/keys", &keys)
	var trusted []ed25519.PublicKey
	for _, k := range keys.Keys {
		b, err := base64.RawURLEncoding.DecodeString(k.PublicKey)
		if err != nil || len(b) != ed25519.PublicKeySize {
			t.Fatalf("bundle key %q: %v", k.PublicKey, err)
		}
		trusted = append(trusted, ed25519.PublicKey(b))
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c, err := authz.New(authz.Config{
		URL:          ep.url,
		HTTPClient:   &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		Token:        func(context.Context) (string, error) { return ep.credential, nil },
		TrustedKeys:  trusted,
		MaxStaleness: embeddedStaleness,
		PollWait:     2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := c.WaitVersion(wctx, 1); err != nil {
		t.Fatalf("sdk/authz got no bundle: %v", err)
	}
	return c
}

// bannerAuthZENCommand returns the AuthZEN curl command the dev banner
// prints, continuation lines included.
func bannerAuthZENCommand(t *testing.T, banner string) string {
	t.Helper()
	var cmd []string
	for _, line := range strings.Split(banner, "\n") {
		trimmed := strings.TrimSpace(line)
		if len(cmd) == 0 {
			if rest, ok := strings.CutPrefix(trimmed, "ask "); ok {
				cmd = append(cmd, strings.TrimSpace(rest))
			}
			continue
		}
		cmd = append(cmd, trimmed)
		if !strings.HasSuffix(trimmed, `\`) {
			break
		}
	}
	if len(cmd) == 0 || !strings.Contains(strings.Join(cmd, ""), "/access/v1/evaluation") {
		t.Fatalf("the banner shows no AuthZEN curl command:\n%s", banner)
	}
	return strings.Join(cmd, "\n")
}

// curlDecision runs an AuthZEN curl command and returns its decision.
func curlDecision(t *testing.T, command string) bool {
	t.Helper()
	cmd := exec.Command("sh", "-c", command+" --silent --show-error --fail-with-body")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s%s", command, err, out.String(), errOut.String())
	}
	var resp struct {
		Decision *bool `json:"decision"`
	}
	if err := json.Unmarshal(out.Bytes(), &resp); err != nil || resp.Decision == nil {
		t.Fatalf("%s: no decision: %v\n%s", command, err, out.String())
	}
	return *resp.Decision
}

func copyPolicies(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	names, err := filepath.Glob(filepath.Join(src, "*.cedar"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no policies in %s: %v", src, err)
	}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dst, filepath.Base(name)), b)
	}
	return dst
}

// waitFor polls cond every 20 ms until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
