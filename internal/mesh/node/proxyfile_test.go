package node_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwarksec/bulwark/internal/mesh/node"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

const sampleProxyFile = `outbound_listen: 127.0.0.1:15001
issuer: https://127.0.0.1:8443
audit_allowed: true
services:
  - name: payments
    id: spiffe://bulwark.local/ns/bank/sa/payments
    listen: 0.0.0.0:15443
    upstream: http://127.0.0.1:8081
    peer_key_file: KEYFILE
  - name: ledger
    id: spiffe://bulwark.local/ns/bank/sa/ledger
    listen: 0.0.0.0:15444
    upstream: http://127.0.0.1:8082
    peer_key_file: KEYFILE
    outbound_listen: 127.0.0.1:16000
  - name: notifications
    id: spiffe://bulwark.local/ns/bank/sa/notifications
    listen: 0.0.0.0:15445
    upstream: http://127.0.0.1:8083
    peer_key_file: KEYFILE
`

func writeKey(t *testing.T) (string, []byte) {
	t.Helper()
	key, err := peer.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "svc.peer.key")
	if err := os.WriteFile(path, peer.EncodeKey(key), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key
}

func TestLoadProxyFile(t *testing.T) {
	t.Parallel()
	keyFile, key := writeKey(t)
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(sampleProxyFile, "KEYFILE", keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	pf, err := node.LoadProxyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !pf.AuditAllowed || pf.Issuer != "https://127.0.0.1:8443" || len(pf.Services) != 3 {
		t.Fatalf("parsed %+v", pf)
	}
	svcs, err := pf.ServiceConfigs()
	if err != nil {
		t.Fatal(err)
	}
	wantOut := []string{"127.0.0.1:15001", "127.0.0.1:16000", "127.0.0.1:15003"}
	for i, s := range svcs {
		if s.OutboundListen != wantOut[i] {
			t.Errorf("service %s outbound %q, want %q", s.Name, s.OutboundListen, wantOut[i])
		}
		if !bytes.Equal(s.PeerKey, key) {
			t.Errorf("service %s: wrong peer key", s.Name)
		}
	}
	if svcs[0].ID.String() != "spiffe://bulwark.local/ns/bank/sa/payments" || svcs[0].Upstream != "http://127.0.0.1:8081" {
		t.Errorf("service 0: %+v", svcs[0])
	}
}

func TestParseProxyFileErrors(t *testing.T) {
	t.Parallel()
	one := func(extra string) string {
		return "services:\n  - name: payments\n    id: spiffe://td/ns/bank/sa/payments\n    listen: 127.0.0.1:1\n    upstream: http://127.0.0.1:2\n    peer_key_file: /k\n" + extra
	}
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty proxy file"},
		{"unknown key names key and line", "outbound_listen: 127.0.0.1:1\nsevices: []\n", "line 2: field sevices not found"},
		{"unknown service key", one("    upsteam: x\n"), "field upsteam not found"},
		{"no services", "issuer: https://x\n", "at least one service"},
		{"bad name", strings.Replace(one(""), "name: payments", "name: Payments", 1), "name \"Payments\""},
		{"bad id", strings.Replace(one(""), "spiffe://td/ns/bank/sa/payments", "https://td/x", 1), ".id"},
		{"non-loopback outbound", "outbound_listen: 0.0.0.0:15001\n" + one(""), "not a loopback address"},
		{"service outbound not loopback", one("    outbound_listen: 10.0.0.1:5\n"), "not a loopback address"},
		{"no key file", strings.Replace(one(""), "    peer_key_file: /k\n", "", 1), "peer_key_file: required"},
		{"no upstream", strings.Replace(one(""), "    upstream: http://127.0.0.1:2\n", "", 1), "upstream: required"},
		{"bad listen", strings.Replace(one(""), "listen: 127.0.0.1:1", "listen: nope", 1), ".listen"},
		{"duplicate name", one("  - name: payments\n    id: spiffe://td/ns/bank/sa/other\n    listen: 127.0.0.1:3\n    upstream: http://127.0.0.1:4\n    peer_key_file: /k\n"), "duplicate"},
		{"duplicate address", one("  - name: other\n    id: spiffe://td/ns/bank/sa/other\n    listen: 127.0.0.1:1\n    upstream: http://127.0.0.1:4\n    peer_key_file: /k\n"), "used twice"},
		{"mixed trust domains", one("  - name: other\n    id: spiffe://elsewhere/ns/bank/sa/other\n    listen: 127.0.0.1:3\n    upstream: http://127.0.0.1:4\n    peer_key_file: /k\n"), "trust domain"},
		{"two documents", one("---\nissuer: x\n"), "more than one YAML document"},
		{"wrong type", "audit_allowed: maybe\n" + one(""), "line 1: cannot unmarshal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := node.ParseProxyFile([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := node.LoadProxyFile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("a missing file loaded")
	}
}

func FuzzParseProxyFile(f *testing.F) {
	f.Add([]byte(sampleProxyFile))
	f.Add([]byte("services: [{name: a, id: 'spiffe://td/a', listen: ':1', upstream: u, peer_key_file: k}]\noutbound_listen: '127.0.0.1:65535'\n"))
	f.Add([]byte("outbound_listen: 127.0.0.1:0\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := node.ParseProxyFile(data)
		if err != nil {
			return
		}
		if len(pf.Services) == 0 {
			t.Fatal("accepted a file without services")
		}
		for i, s := range pf.Services {
			if s.Name == "" || s.PeerKeyFile == "" || s.Upstream == "" {
				t.Fatalf("service %d accepted incomplete: %+v", i, s)
			}
			_ = pf.OutboundAddr(i)
		}
	})
}
