package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
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
