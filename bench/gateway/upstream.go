package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bulwarksec/bulwark/internal/mesh"
	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/peer"
)

// roleUpstream is the -role of the child process that runs the upstream
// side: the echo service, the agents' inbounds in front of it and the
// calling agent's outbound.
const roleUpstream = "upstream"

// upstreamAddrs are the addresses the upstream child listens on, written as
// one JSON line on its standard output.
type upstreamAddrs struct {
	// Echo is the echo service, plain HTTP (HAProxy's upstream and the
	// direct baseline of the agent hop).
	Echo string `json:"echo"`
	// PaymentsInbound is payments' agent inbound (mTLS) in front of the
	// echo service: the gateway's upstream.
	PaymentsInbound string `json:"payments_inbound"`
	// LedgerInbound is ledger's agent inbound (mTLS) in front of the echo
	// service: the callee of the agent hop.
	LedgerInbound string `json:"ledger_inbound"`
	// PaymentsOutbound is payments' agent outbound (loopback HTTP),
	// resolving "ledger" to LedgerInbound: the caller of the agent hop.
	PaymentsOutbound string `json:"payments_outbound"`
}

// echoHandler answers every request with its body, as JSON.
func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		if len(body) == 0 {
			body = []byte(`{}`)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// Log attribute keys.
const (
	logKeyService = "service"
	logKeyError   = "error"
)

// Response headers of the echo services behind the agents: what the agent
// told them (sdk/peer), so that the bench can check the path end to end.
const (
	headerEchoPeer   = "X-Bench-Peer"
	headerEchoClient = "X-Bench-Client"
	headerEchoUser   = "X-Bench-User"
)

// identityHeaders reports the verified sdk/peer identity in the response.
func identityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := peer.FromContext(r.Context()); ok {
			w.Header().Set(headerEchoPeer, id.Peer.String())
			w.Header().Set(headerEchoClient, id.Client)
			w.Header().Set(headerEchoUser, id.User)
		}
		next.ServeHTTP(w, r)
	})
}

// listenLoopback binds 127.0.0.1:0.
func listenLoopback() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on 127.0.0.1:0: %w", err)
	}
	return ln, nil
}

// upstreamConfig configures the upstream child.
type upstreamConfig struct {
	// svidDir holds the SVIDs (writeSVIDs), policyDir the reference bank
	// policies.
	svidDir, policyDir string
	// issuer is the control plane's issuer URL, issuerCA the file of the CA
	// its TLS certificate chains to: the inbounds verify the internal
	// tokens the gateway sends with it.
	issuer, issuerCA string
	// logFile receives the child's standard error (parent side only).
	logFile string
	// cpuProfile, if set, is where the child writes a CPU profile of its
	// whole life.
	cpuProfile string
}

// runUpstream is the upstream child: it serves until its standard input is
// closed (the parent ended) or ctx ends. Each agent's inbound sends to its
// own echo service, which refuses requests the agent did not sign
// (sdk/peer, with a key only the two of them hold): the real topology.
func runUpstream(ctx context.Context, cfg upstreamConfig, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ev, err := newEvaluator(cfg.policyDir)
	if err != nil {
		return err
	}
	issuerClient, err := edgeClient(cfg.issuerCA)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, ctx := errgroup.WithContext(ctx)
	serve := func(s interface {
		ServeListener(context.Context, net.Listener) error
	}) (string, error) {
		ln, err := listenLoopback()
		if err != nil {
			return "", err
		}
		g.Go(func() error { return s.ServeListener(ctx, ln) })
		return ln.Addr().String(), nil
	}

	serveEcho := func(h http.Handler) (string, error) {
		ln, err := listenLoopback()
		if err != nil {
			return "", err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("echo: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			return srv.Close()
		})
		return ln.Addr().String(), nil
	}

	var addrs upstreamAddrs
	if addrs.Echo, err = serveEcho(echoHandler()); err != nil {
		return err
	}
	for _, in := range []struct {
		name string
		addr *string
	}{{paymentsName, &addrs.PaymentsInbound}, {ledgerName, &addrs.LedgerInbound}} {
		src, err := loadSource(cfg.svidDir, in.name)
		if err != nil {
			return err
		}
		key, err := peer.NewKey()
		if err != nil {
			return fmt.Errorf("%s peer key: %w", in.name, err)
		}
		refused := func(_ *http.Request, err error) {
			logger.Warn("echo refused a request", logKeyService, in.name, logKeyError, err)
		}
		echo, err := serveEcho(peer.Middleware(key, refused)(identityHeaders(echoHandler())))
		if err != nil {
			return err
		}
		tokens, err := authn.New(ctx, authn.Config{
			Issuer: cfg.issuer, Audience: workloadID(in.name).String(), HTTPClient: issuerClient, Logger: logger,
		})
		if err != nil {
			return fmt.Errorf("%s token verifier: %w", in.name, err)
		}
		inbound, err := mesh.NewInbound(mesh.InboundConfig{Upstream: "http://" + echo, Self: workloadID(in.name), PeerKey: key},
			mesh.InboundDeps{Source: src, Decider: ev, Tokens: tokens, Logger: logger})
		if err != nil {
			return fmt.Errorf("%s inbound: %w", in.name, err)
		}
		if *in.addr, err = serve(inbound); err != nil {
			return err
		}
	}

	src, err := loadSource(cfg.svidDir, paymentsName)
	if err != nil {
		return err
	}
	outbound, err := mesh.NewOutbound(mesh.OutboundConfig{Self: workloadID(paymentsName)}, mesh.OutboundDeps{
		Source: src, Logger: logger,
		Resolver: staticResolver{ledgerName: {id: workloadID(ledgerName), endpoints: []string{addrs.LedgerInbound}}},
	})
	if err != nil {
		return fmt.Errorf("payments outbound: %w", err)
	}
	if addrs.PaymentsOutbound, err = serve(outbound); err != nil {
		return err
	}
	if err := json.NewEncoder(out).Encode(addrs); err != nil {
		return fmt.Errorf("write addresses: %w", err)
	}
	return g.Wait()
}

// child is a running child process of the bench.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan error
}

// Pid is the child's process ID.
func (c *child) Pid() int { return c.cmd.Process.Pid }

// stop closes the child's standard input (the upstream child's signal to
// end), waits up to 5 s, then kills it.
func (c *child) stop() {
	if c.stdin != nil {
		_ = c.stdin.Close()
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// startUpstream re-executes this program as the upstream child and reads
// its addresses.
func startUpstream(ctx context.Context, cfg upstreamConfig) (*child, upstreamAddrs, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, upstreamAddrs{}, fmt.Errorf("find this program: %w", err)
	}
	cmd := exec.Command(exe, "-role", roleUpstream, "-svids", cfg.svidDir, "-policies", cfg.policyDir,
		"-issuer", cfg.issuer, "-issuer-ca", cfg.issuerCA, "-upstream-cpuprofile", cfg.cpuProfile)
	// The agents log a refused or cut-off request (wrk ends a run with
	// requests in flight) at error level: into a file, not the table.
	logFile, err := os.Create(cfg.logFile)
	if err != nil {
		return nil, upstreamAddrs{}, fmt.Errorf("upstream log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd.Stderr = logFile
	// The child also ends when its standard input closes (runUpstream).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, upstreamAddrs{}, fmt.Errorf("upstream child: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, upstreamAddrs{}, fmt.Errorf("upstream child: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, upstreamAddrs{}, fmt.Errorf("start upstream child: %w", err)
	}
	c := &child{cmd: cmd, stdin: stdin, done: make(chan error, 1)}
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, stdout)
		c.done <- cmd.Wait()
	}()
	var line string
	select {
	case line = <-lines:
	case <-ctx.Done():
		c.stop()
		return nil, upstreamAddrs{}, ctx.Err()
	case <-time.After(30 * time.Second):
		c.stop()
		return nil, upstreamAddrs{}, errors.New("upstream child did not report its addresses within 30s")
	}
	var addrs upstreamAddrs
	if err := json.Unmarshal([]byte(strings.TrimSpace(line)), &addrs); err != nil || addrs.Echo == "" {
		c.stop()
		return nil, upstreamAddrs{}, fmt.Errorf("upstream child: no addresses (%q): %v; see %s", line, err, cfg.logFile)
	}
	return c, addrs, nil
}
