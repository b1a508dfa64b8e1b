package cli

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/bulwarksec/bulwark/sdk/peer"
)

// agentConfigFile writes an agent configuration for the control plane of e.
func agentConfigFile(t *testing.T, e *cpEnv, dataDir, socket string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	yaml := fmt.Sprintf("data_dir: %s\nlog:\n  format: text\nagent:\n  server_url: %s\n  server_ca_file: %s\n  socket_path: %s\n",
		dataDir, e.srv.URL(), e.srv.CAFile(), socket)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runAgent runs `bulwark agent` until the Workload API on socket answers,
// then stops it; it returns what the command logged.
func runAgent(t *testing.T, socket string, args ...string) string {
	t.Helper()
	var stderr syncBuffer
	cmd := newAgentCommand()
	cmd.SetArgs(args)
	cmd.SetOut(&stderr)
	cmd.SetErr(&stderr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("bulwark agent stopped: %v\n%s", err, stderr.String())
		default:
		}
		fctx, fcancel := context.WithTimeout(ctx, time.Second)
		_, err := workloadapi.FetchX509Bundles(fctx, workloadapi.WithAddr("unix://"+socket))
		fcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Workload API not served: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("bulwark agent: %v", err)
	}
	return stderr.String()
}

func TestAgentCommand(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	token, _, _, err := e.srv.CA().CreateJoinToken(context.Background(), "node-cli", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bwc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "agent.sock")
	cfgPath := agentConfigFile(t, e, filepath.Join(dir, "data"), socket)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	logs := runAgent(t, socket, "--config", cfgPath, "--join-token-file", tokenFile)
	if strings.Contains(logs, token) {
		t.Fatal("the agent logged its join token")
	}
	if !strings.Contains(logs, "agent joined the control plane") {
		t.Fatalf("no join logged:\n%s", logs)
	}
	// The second start needs no token: the agent has joined.
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	runAgent(t, socket, "--config", cfgPath, "--join-token-file", tokenFile)
}

func TestAgentCommandErrors(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := agentConfigFile(t, e, filepath.Join(dir, "data"), filepath.Join(dir, "s.sock"))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"not joined, no token", []string{"--config", good}, "no join token"},
		{"two tokens in the file", []string{"--config", good, "--join-token-file", write("two", "a b\n")}, "one token on one line"},
		{"empty token file", []string{"--config", good, "--join-token-file", write("empty", "\n")}, "one token on one line"},
		{"huge token file", []string{"--config", good, "--join-token-file", write("huge", strings.Repeat("a", 5000))}, "larger than"},
		{"bad server CA file", []string{"--config", write("badca.yaml", "data_dir: "+dir+"\nagent:\n  server_ca_file: "+write("ca.pem", "nope")+"\n")}, "no PEM certificate"},
		{"unknown config key", []string{"--config", write("unknown.yaml", "agent:\n  sever_url: https://x\n")}, "sever_url"},
		{"wrong token", []string{"--config", good, "--join-token-file", write("wrong", "bjt_wrong\n")}, "join"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newAgentCommand()
			cmd.SetArgs(tt.args)
			var out syncBuffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := cmd.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error()+out.String(), "bjt_wrong") {
				t.Fatal("the join token appears in the error or the logs")
			}
		})
	}
}

// freeAddr returns a loopback address nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestAgentCommandRunsProxy: with agent.proxy_file, `bulwark agent` serves
// the local service's outbound once it is ready, and stops cleanly when its
// context ends (SIGTERM).
func TestAgentCommandRunsProxy(t *testing.T) {
	t.Parallel()
	e := newCPEnv(t)
	token, _, _, err := e.srv.CA().CreateJoinToken(context.Background(), "node-proxy", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bwp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	key, err := peer.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "payments.peer.key")
	if err := os.WriteFile(keyFile, peer.EncodeKey(key), 0o600); err != nil {
		t.Fatal(err)
	}
	outbound := freeAddr(t)
	proxyFile := filepath.Join(dir, "proxy.yaml")
	proxy := fmt.Sprintf("outbound_listen: %s\nservices:\n  - name: payments\n    id: spiffe://%s/ns/bank/sa/payments\n    listen: %s\n    upstream: http://127.0.0.1:1\n    peer_key_file: %s\n",
		outbound, e.srv.CA().TrustDomain(), freeAddr(t), keyFile)
	if err := os.WriteFile(proxyFile, []byte(proxy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := agentConfigFile(t, e, filepath.Join(dir, "data"), filepath.Join(dir, "agent.sock"))
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "  proxy_file: %s\n", proxyFile)
	f.Close()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var out syncBuffer
	cmd := newAgentCommand()
	cmd.SetArgs([]string{"--config", cfgPath, "--join-token-file", tokenFile})
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	hc := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("bulwark agent stopped: %v\n%s", err, out.String())
		default:
		}
		// The outbound answers once the proxy runs: ledger is not in the
		// directory, so 404.
		resp, err := hc.Get("http://" + outbound + "/ledger/x")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNotFound {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not serving (%v)\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("bulwark agent: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("bulwark agent did not stop")
	}
	if strings.Contains(out.String(), token) {
		t.Fatal("the agent logged its join token")
	}
	if _, err := net.DialTimeout("tcp", outbound, time.Second); err == nil {
		t.Fatal("the outbound still listens after the agent stopped")
	}

	t.Run("bad proxy file", func(t *testing.T) {
		if err := os.WriteFile(proxyFile, []byte("services: []\nbogus: 1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := newAgentCommand()
		cmd.SetArgs([]string{"--config", cfgPath})
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), "agent.proxy_file") || !strings.Contains(err.Error(), "bogus") {
			t.Fatalf("err = %v, want one naming agent.proxy_file and the key", err)
		}
	})
}
