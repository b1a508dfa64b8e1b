package node_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/internal/mesh/node"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

type nopDecider struct{}

func (nopDecider) Decide(authz.Request) authz.Decision { return authz.Decision{} }

type nopResolver struct{}

func (nopResolver) Resolve(context.Context, string) (spiffeid.ID, []string, error) {
	return spiffeid.ID{}, nil, mesh.ErrUnknownService
}

type nopAppender struct{}

func (nopAppender) Append(context.Context, []*audit.Event) (*audit.AppendResponse, error) {
	return nil, errors.New("down")
}

func TestNewValidation(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{1}, 32)
	id := spiffeid.RequireFromString("spiffe://td/ns/bank/sa/payments")
	sources := func(spiffeid.ID) mesh.SVIDSource { return nil }
	full := node.Deps{Sources: sources, Decider: nopDecider{}, Resolver: nopResolver{}, Appender: nopAppender{}}
	svc := func(mut func(*node.Service)) []node.Service {
		s := node.Service{Name: "payments", ID: id, Listen: "127.0.0.1:0", Upstream: "http://127.0.0.1:1", PeerKey: key, OutboundListen: "127.0.0.1:0"}
		if mut != nil {
			mut(&s)
		}
		return []node.Service{s}
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		cfg  node.Config
		deps node.Deps
		want string
	}{
		{"valid", node.Config{Services: svc(nil)}, full, ""},
		{"no services", node.Config{}, full, "no service"},
		{"no sources", node.Config{Services: svc(nil)}, node.Deps{Decider: nopDecider{}, Resolver: nopResolver{}, Appender: nopAppender{}}, "SVID sources"},
		{"no HTTP client", node.Config{ServerURL: "https://127.0.0.1:1", Services: svc(nil)}, node.Deps{Sources: sources}, "HTTP client"},
		{"http server URL", node.Config{ServerURL: "http://127.0.0.1:1", Services: svc(nil)}, node.Deps{Sources: sources, HTTPClient: http.DefaultClient}, "not an https URL"},
		{"http issuer", node.Config{Issuer: "http://x", Services: svc(nil)}, node.Deps{Sources: sources, Decider: nopDecider{}, Resolver: nopResolver{}, Appender: nopAppender{}, HTTPClient: http.DefaultClient}, "issuer"},
		{"short peer key", node.Config{Services: svc(func(s *node.Service) { s.PeerKey = key[:8] })}, full, "peer key"},
		{"bad name", node.Config{Services: svc(func(s *node.Service) { s.Name = "Pay" })}, full, "DNS label"},
		{"no ID", node.Config{Services: svc(func(s *node.Service) { s.ID = spiffeid.ID{} })}, full, "SPIFFE ID is required"},
		{"public outbound", node.Config{Services: svc(func(s *node.Service) { s.OutboundListen = "0.0.0.0:0" })}, full, "loopback"},
		{"bad upstream", node.Config{Services: svc(func(s *node.Service) { s.Upstream = "http://10.0.0.1:80" })}, full, "not a loopback address"},
		{"inbound address in use", node.Config{Services: svc(func(s *node.Service) { s.Listen = busy.Addr().String() })}, full, "listen on"},
		{"negative staleness", node.Config{PolicyMaxStaleness: -1, Services: svc(nil)}, full, "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.SpoolDir = t.TempDir()
			n, err := node.New(cfg, tc.deps)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if n.InboundAddr("payments") == nil {
					t.Fatal("no inbound address")
				}
				if err := n.Close(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
