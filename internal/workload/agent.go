package workload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bulwarksec/bulwark/internal/keys"
)

// Log attribute keys.
const (
	logErr      = "err"
	logEntry    = "entry_id"
	logSPIFFEID = "spiffe_id"
	logSerial   = "serial"
	logCount    = "count"
	logSocket   = "socket"
	logPID      = "pid"
	logUID      = "uid"
	logPath     = "path"
)

// Config configures the agent. The zero value of every optional field is
// the documented default.
type Config struct {
	// ServerURL is the control plane's https URL.
	ServerURL string
	// ServerCAs verifies the control plane's TLS certificate; nil means the
	// system roots.
	ServerCAs *x509.CertPool
	// DataDir is the process's data directory; the agent's state lives in
	// DataDir/agent.
	DataDir string
	// SocketPath is the Workload API's unix socket. Default
	// DataDir/agent/workload.sock.
	SocketPath string
	// JoinToken is the one-time join token, needed only on the first start.
	JoinToken string
	// RotationFraction is the part of an SVID's lifetime after which it is
	// renewed. Default 0.5 (half-life); must be in (0, 1).
	RotationFraction float64
	// SyncInterval is how often entries are fetched and SVIDs checked.
	// Default 5s.
	SyncInterval time.Duration
	// DenyWait is the long-poll wait on the deny list. Default 30s.
	DenyWait time.Duration
	// Now is the clock of every validity and rotation decision. Default
	// time.Now. (Waits between sync rounds use real time.)
	Now func() time.Time
}

// Deps are the agent's collaborators.
type Deps struct {
	// Logger receives the agent's logs. Default: discarded.
	Logger *slog.Logger
	// Connect makes control-plane clients. Default: the caclient package
	// over HTTPS to Config.ServerURL (see NewControlPlane).
	Connect Connector
}

// Agent is the node agent. Create it with New and start it with Run.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	connect Connector
	store   *stateStore
	attest  *attestor
	audit   *auditQueue

	mu      sync.Mutex
	st      *state
	cp      ControlPlane // authenticated with the current agent SVID
	changed chan struct{}
	ready   atomic.Bool
}

// New validates cfg, opens the agent's keystore and loads its state.
func New(cfg Config, deps Deps) (*Agent, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("workload agent: data directory is required")
	}
	if cfg.RotationFraction == 0 {
		cfg.RotationFraction = 0.5
	}
	if cfg.RotationFraction <= 0 || cfg.RotationFraction >= 1 {
		return nil, fmt.Errorf("workload agent: rotation fraction %v is outside (0, 1)", cfg.RotationFraction)
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = 5 * time.Second
	}
	if cfg.DenyWait == 0 {
		cfg.DenyWait = defaultDenyWait
	}
	if cfg.SyncInterval < 0 || cfg.DenyWait < 0 {
		return nil, errors.New("workload agent: negative interval")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	dir := filepath.Join(cfg.DataDir, "agent")
	if cfg.SocketPath == "" {
		cfg.SocketPath = filepath.Join(dir, "workload.sock")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Connect == nil {
		u, err := url.Parse(cfg.ServerURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("workload agent: server URL %q is not an https URL", cfg.ServerURL)
		}
		deps.Connect = NewControlPlane(cfg.ServerURL, cfg.ServerCAs)
	}
	if err := os.MkdirAll(dir, socketDirMode); err != nil {
		return nil, fmt.Errorf("workload agent: %w", err)
	}
	sealed, err := keys.OpenSealed(filepath.Join(dir, "keys"))
	if err != nil {
		return nil, fmt.Errorf("workload agent: %w", err)
	}
	a := &Agent{
		cfg:     cfg,
		log:     deps.Logger,
		connect: deps.Connect,
		store:   &stateStore{path: filepath.Join(dir, stateFile), sealer: sealed},
		attest:  newAttestor(),
		changed: make(chan struct{}),
	}
	if a.st, err = a.store.load(); err != nil {
		return nil, fmt.Errorf("workload agent: %w", err)
	}
	if !a.st.joined() && cfg.JoinToken == "" {
		return nil, errors.New("workload agent: not joined yet and no join token given")
	}
	a.audit = newAuditQueue(a)
	return a, nil
}

// Ready reports whether the agent has joined, holds a trust bundle and
// serves the Workload API.
func (a *Agent) Ready() bool { return a.ready.Load() }

// SocketPath returns the Workload API's socket path.
func (a *Agent) SocketPath() string { return a.cfg.SocketPath }

// Run joins the control plane if needed, then serves the Workload API and
// keeps SVIDs and the deny list current until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.ensureJoined(ctx); err != nil {
		return err
	}
	ln, err := listenSocket(a.cfg.SocketPath)
	if err != nil {
		return err
	}
	srv := a.newGRPCServer()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ln) })
	g.Go(func() error {
		<-ctx.Done()
		srv.Stop()
		return nil
	})
	g.Go(func() error { a.syncLoop(ctx); return nil })
	g.Go(func() error { a.denyLoop(ctx); return nil })
	g.Go(func() error { a.audit.run(ctx); return nil })
	a.ready.Store(true)
	a.log.Info("workload API listening", logSocket, a.cfg.SocketPath)
	err = g.Wait()
	a.ready.Store(false)
	_ = os.Remove(a.cfg.SocketPath)
	// Leave no connection to the control plane behind: an idle HTTP/2
	// connection would hold up the control plane's graceful shutdown.
	a.mu.Lock()
	a.resetClientLocked()
	a.mu.Unlock()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// notifyLocked wakes every stream waiting for a change; a.mu is held.
func (a *Agent) notifyLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// saveLocked persists the state; a.mu is held. A failure is logged: the
// in-memory state stays authoritative.
func (a *Agent) saveLocked() {
	if err := a.store.save(a.st); err != nil {
		a.log.Error("save agent state failed", logErr, err)
	}
}

// resetClientLocked drops the control-plane client after the agent SVID
// changed, closing its idle connections; a.mu is held.
func (a *Agent) resetClientLocked() {
	if c, ok := a.cp.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	a.cp = nil
}

// controlPlane returns the client presenting the current agent SVID.
func (a *Agent) controlPlane() (ControlPlane, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cp != nil {
		return a.cp, nil
	}
	cert := tls.Certificate{PrivateKey: a.st.agentKey, Leaf: a.st.agentChain[0]}
	for _, c := range a.st.agentChain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	cp, err := a.connect(&cert)
	if err != nil {
		return nil, fmt.Errorf("control plane client: %w", err)
	}
	a.cp = cp
	return cp, nil
}
