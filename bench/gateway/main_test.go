package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestParseWrk(t *testing.T) {
	t.Parallel()
	const human = `Running 10s test @ https://127.0.0.1:8443/v1/echo
  2 threads and 50 connections
  Latency Distribution
     50%    4.05ms
     99%   19.22ms
  33861 requests in 3.00s, 5.04MB read
Requests/sec:  11287.00
`
	for _, tc := range []struct {
		name    string
		out     string
		want    wrkResult
		wantErr string
	}{
		{
			name: "summary line",
			out:  human + "BENCH requests=33861 duration_us=3000000 p50_us=4054.0 p99_us=19218.5 max_us=40000.0 non2xx=0 connect=0 read=0 write=0 timeout=0\n",
			want: wrkResult{Requests: 33861, Duration: 3 * time.Second, P50: 4054 * time.Microsecond,
				P99: 19218500 * time.Nanosecond, Max: 40 * time.Millisecond},
		},
		{
			name: "errors counted",
			out:  "BENCH requests=10 duration_us=1000000 p50_us=1 p99_us=2 max_us=3 non2xx=4 connect=1 read=2 write=0 timeout=3\n",
			want: wrkResult{Requests: 10, Duration: time.Second, P50: time.Microsecond, P99: 2 * time.Microsecond,
				Max: 3 * time.Microsecond, Non2xx: 4, SockErrors: 6},
		},
		{name: "no summary", out: human, wantErr: "no BENCH summary"},
		{name: "missing field", out: "BENCH requests=1 duration_us=1\n", wantErr: "no p50_us"},
		{name: "not a number", out: "BENCH requests=x duration_us=1 p50_us=1 p99_us=1\n", wantErr: "requests=\"x\""},
		{name: "negative", out: "BENCH requests=-1 duration_us=1 p50_us=1 p99_us=1\n", wantErr: "non-negative"},
		{name: "not key=value", out: "BENCH requests\n", wantErr: "not key=value"},
		{name: "no requests", out: "BENCH requests=0 duration_us=1 p50_us=1 p99_us=1\n", wantErr: "no requests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseWrk(tc.out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.Raw = ""
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestWrkResultRPS(t *testing.T) {
	t.Parallel()
	if got := (wrkResult{Requests: 30000, Duration: 3 * time.Second}).RPS(); got != 10000 {
		t.Fatalf("RPS %v, want 10000", got)
	}
	if got := (wrkResult{Requests: 1}).RPS(); got != 0 {
		t.Fatalf("RPS without a duration %v, want 0", got)
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		{name: "plain", stat: "1234 (haproxy) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0",
			want: 3 * time.Second},
		{name: "name with spaces and parens", stat: "99 (a (b) c) R 1 99 99 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0 0",
			want: 100 * time.Millisecond},
		{name: "truncated", stat: "99 (x) R 1 2 3", wantErr: true},
		{name: "no name", stat: "99 x R", wantErr: true},
		{name: "not a number", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 1 0 0 20 0 1 0 1 0 0", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseStat(tc.stat)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parsed %v, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestProcessCPUSelf(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	if _, err := processCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, err := processCPU(-1); err == nil {
		t.Fatal("read the CPU time of process -1")
	}
}

func TestForge(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"h.p.AAAA", "h.p.BBBB", "h.p.s"} {
		f := forge(tok)
		if f == tok || len(f) != len(tok) || f[:strings.LastIndexByte(f, '.')] != "h.p" {
			t.Errorf("forge(%q) = %q: want the same header and payload, another signature", tok, f)
		}
	}
}

func TestParseInts(t *testing.T) {
	t.Parallel()
	got, err := parseInts("1, 50")
	if err != nil || len(got) != 2 || got[0] != 1 || got[1] != 50 {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "a", "1,,2", "-3"} {
		if _, err := parseInts(bad); err == nil {
			t.Errorf("parseInts(%q): no error", bad)
		}
	}
}

// TestHAProxyConfig renders the reference config and, when haproxy is
// installed, has it checked.
func TestHAProxyConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, err := writeServerCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "jwt.pem")
	// Any PEM public key will do for the check: the server certificate's.
	if err := os.WriteFile(keyFile, publicKeyPEM(t, cert.keyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	p := haproxyParams{Listen: "127.0.0.1:1", Upstream: "127.0.0.1:2", CertBundle: cert.bundleFile, JWTKey: keyFile,
		Issuer: "https://127.0.0.1:3", Audience: apiAudience, Threads: 2}
	var buf bytes.Buffer
	if err := haproxyConfig.Execute(&buf, p); err != nil {
		t.Fatal(err)
	}
	cfg := buf.String()
	for _, want := range []string{"nbthread 2", "jwt_verify(txn.alg,\"" + keyFile + "\")", "-m str ES256",
		"jwt_payload_query('$.exp','int')", "-m str https://127.0.0.1:3", "jwt_payload_query('$.aud') -m str " + apiAudience, "server echo 127.0.0.1:2"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skip("haproxy not installed: config not checked")
	}
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-q", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v: %s", err, out)
	}
}

func TestWrkScript(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := wrkScript.Execute(&buf, struct{ Body, Token string }{requestBody, "abc.def.ghi"}); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	for _, want := range []string{`wrk.method = "POST"`, `wrk.headers["Authorization"] = "Bearer abc.def.ghi"`, "function done", "BENCH requests="} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	buf.Reset()
	if err := wrkScript.Execute(&buf, struct{ Body, Token string }{requestBody, ""}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "Authorization") {
		t.Errorf("script without a token sets Authorization:\n%s", buf.String())
	}
}

func TestRunWrkRefusesUnsafeToken(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{`a'b`, `a"b`, "a\nb", `a\b`} {
		if _, err := runWrk(t.Context(), t.TempDir(), wrkLoad{URL: "http://127.0.0.1:1", Token: tok, Connections: 1, Threads: 1, Duration: time.Second}); err == nil {
			t.Errorf("token %q: no error", tok)
		}
	}
}

// publicKeyPEM reads a PKCS #8 private key file and returns its public key
// as PKIX PEM.
func publicKeyPEM(t *testing.T, keyFile string) []byte {
	t.Helper()
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatal("no PEM block in " + keyFile)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.(crypto.Signer).Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// TestStartIssuer starts the real control plane and checks that the token
// it issued verifies with the exported PEM key (what HAProxy is given) and
// carries the audience and scope the routes ask for.
func TestStartIssuer(t *testing.T) {
	t.Parallel()
	iss, err := startIssuer(t.Context(), t.TempDir(), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer iss.stop()
	t.Logf("access token: %d characters", len(iss.token))
	raw, err := os.ReadFile(iss.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("%s: not a PEM public key", iss.keyPEM)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(iss.token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify(pub)
	if err != nil {
		t.Fatalf("the token does not verify with the exported key: %v", err)
	}
	var claims struct {
		Iss   string `json:"iss"`
		Aud   any    `json:"aud"`
		Scope string `json:"scope"`
		Exp   int64  `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Iss != iss.srv.Issuer() || !strings.Contains(fmt.Sprint(claims.Aud), apiAudience) ||
		!strings.Contains(claims.Scope, benchScope) || time.Until(time.Unix(claims.Exp, 0)) < 5*time.Minute {
		t.Fatalf("claims %+v", claims)
	}
	// A forged signature does not verify.
	forged, err := jose.ParseSignedCompact(forge(iss.token), []jose.SignatureAlgorithm{jose.ES256})
	if err == nil {
		if _, err := forged.Verify(pub); err == nil {
			t.Fatal("a forged token verifies")
		}
	}
}
