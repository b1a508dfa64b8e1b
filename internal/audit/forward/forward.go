// Package forward delivers audit events from an edge process (the gateway,
// an agent) to the control plane's audit log through a durable local spool:
// Send returns once the events are on disk, and Run ships them in batches,
// retrying with capped exponential backoff while the control plane is
// unreachable, so that nothing is lost when it is down and the spool drains
// when it is back.
//
// Delivery is at-least-once: a batch appended to the audit log just before
// a crash (before the spool cursor is persisted) is appended again after
// restart. Every event carries a unique metadata.uid, set by Send when the
// caller left it empty, by which such duplicates are recognised.
package forward

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/spool"
)

const (
	defaultBatchSize  = 500
	maxBatchSize      = 10000
	defaultMaxBackoff = 30 * time.Second
	minBackoff        = 100 * time.Millisecond
	attemptTimeout    = 30 * time.Second
	// idlePoll is how often an idle Run looks at the spool even without
	// a Send to wake it.
	idlePoll = time.Second
)

// Log attribute keys.
const (
	logKeyError = "error"
	logKeyCount = "count"
	logKeyUID   = "event_uid"
	logKeyDelay = "retry_in"
)

// Appender is what the forwarder needs of the control plane: the audit
// API's batch append. *audit.Client implements it.
type Appender interface {
	Append(ctx context.Context, events []*audit.Event) (*audit.AppendResponse, error)
}

var _ Appender = (*audit.Client)(nil)

// Config configures a Forwarder.
type Config struct {
	// SpoolDir is the spool's directory, owned by this forwarder alone.
	// Required.
	SpoolDir string
	// MaxSpoolBytes bounds the unshipped events on disk; 0 means 1 GiB.
	// When the spool is full, Send fails with spool.ErrFull.
	MaxSpoolBytes int64
	// BatchSize is the most events per append; 0 means 500. It must not
	// exceed the control plane's audit.max_batch_events.
	BatchSize int
	// MaxBackoff caps the delay between attempts while the control plane
	// is unreachable; 0 means 30s.
	MaxBackoff time.Duration
}

// Deps are the forwarder's collaborators.
type Deps struct {
	// Client appends to the control plane's audit log. Required.
	Client Appender
	// Logger receives shipping problems; nil discards.
	Logger *slog.Logger
	// Metrics registers the forwarder's metrics; nil does not register.
	Metrics prometheus.Registerer
	// Now is the clock for filling in event times; nil means time.Now.
	Now func() time.Time
}

// Forwarder spools audit events and ships them to the control plane.
type Forwarder struct {
	cfg    Config
	client Appender
	log    *slog.Logger
	now    func() time.Time
	spool  *spool.Spool
	wake   chan struct{} // capacity 1: pinged by Send

	shipped  prometheus.Counter
	failures prometheus.Counter
	rejected prometheus.Counter
	pending  prometheus.GaugeFunc

	runMu sync.Mutex
}

// New validates cfg, opens the spool (taking its lock) and returns a
// forwarder; events spooled by an earlier process are shipped by Run.
func New(cfg Config, deps Deps) (*Forwarder, error) {
	if cfg.SpoolDir == "" {
		return nil, errors.New("audit forwarder: spool_dir is required")
	}
	if cfg.MaxSpoolBytes < 0 {
		return nil, fmt.Errorf("audit forwarder: max_spool_bytes must not be negative, got %d", cfg.MaxSpoolBytes)
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = defaultBatchSize
	}
	if cfg.BatchSize < 1 || cfg.BatchSize > maxBatchSize {
		return nil, fmt.Errorf("audit forwarder: batch_size must be 1..%d, got %d", maxBatchSize, cfg.BatchSize)
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = defaultMaxBackoff
	}
	if cfg.MaxBackoff < 0 {
		return nil, fmt.Errorf("audit forwarder: max_backoff must not be negative, got %s", cfg.MaxBackoff)
	}
	if deps.Client == nil {
		return nil, errors.New("audit forwarder: no audit client")
	}
	f := &Forwarder{cfg: cfg, client: deps.Client, log: deps.Logger, now: deps.Now, wake: make(chan struct{}, 1)}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	sp, err := spool.Open(cfg.SpoolDir, spool.Config{MaxBytes: cfg.MaxSpoolBytes})
	if err != nil {
		return nil, fmt.Errorf("audit forwarder: %w", err)
	}
	f.spool = sp
	f.shipped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bulwark_audit_forward_shipped_total", Help: "Audit events shipped to the control plane."})
	f.failures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bulwark_audit_forward_failures_total", Help: "Failed attempts to ship audit events to the control plane."})
	f.rejected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bulwark_audit_forward_rejected_total", Help: "Spooled audit events the control plane refused as invalid (logged and skipped)."})
	f.pending = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bulwark_audit_forward_pending_events", Help: "Audit events spooled and not yet shipped."},
		func() float64 { return float64(f.spool.Stats().Records) })
	if deps.Metrics != nil {
		for _, c := range []prometheus.Collector{f.shipped, f.failures, f.rejected, f.pending} {
			if err := deps.Metrics.Register(c); err != nil {
				_ = sp.Close()
				return nil, fmt.Errorf("audit forwarder: register metrics: %w", err)
			}
		}
	}
	return f, nil
}

// Pending returns the number of events spooled and not yet shipped.
func (f *Forwarder) Pending() int64 { return f.spool.Stats().Records }

// Send validates and normalises each event in place (audit.Event.Normalize),
// gives it a unique metadata.uid when it has none, and spools the events
// durably: on a nil return they survive a crash and will be shipped. An
// invalid event fails the whole call and nothing is spooled; so does a full
// spool (errors.Is(err, spool.ErrFull)).
func (f *Forwarder) Send(ctx context.Context, events ...*audit.Event) error {
	if len(events) == 0 {
		return nil
	}
	now := f.now()
	records := make([][]byte, len(events))
	for i, e := range events {
		if e == nil {
			return fmt.Errorf("audit forwarder: event %d is nil", i)
		}
		if e.Metadata.UID == "" {
			e.Metadata.UID = rand.Text()
		}
		if err := e.Normalize(now); err != nil {
			return fmt.Errorf("audit forwarder: event %d: %w", i, err)
		}
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("audit forwarder: encode event %d: %w", i, err)
		}
		if len(b) > spool.MaxRecordBytes {
			return fmt.Errorf("audit forwarder: event %d is %d bytes encoded; the limit is %d", i, len(b), spool.MaxRecordBytes)
		}
		records[i] = b
	}
	if err := f.spool.Append(ctx, records...); err != nil {
		return fmt.Errorf("audit forwarder: spool %d events: %w", len(events), err)
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return nil
}

// Run ships spooled events until ctx ends (then it returns nil) or the
// forwarder is closed. Only one Run may be active at a time.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.runMu.TryLock() {
		return errors.New("audit forwarder: already running")
	}
	defer f.runMu.Unlock()
	backoff := minBackoff
	for ctx.Err() == nil {
		shipped, err := f.shipOnce(ctx)
		if errors.Is(err, spool.ErrClosed) {
			return fmt.Errorf("audit forwarder: %w", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			f.failures.Inc()
			delay := jitter(backoff)
			f.log.Warn("audit forwarder: shipping failed; events stay spooled",
				slog.Any(logKeyError, err), slog.Duration(logKeyDelay, delay))
			if !sleep(ctx, delay) {
				return nil
			}
			backoff = min(backoff*2, max(f.cfg.MaxBackoff, minBackoff))
			continue
		}
		backoff = minBackoff
		if shipped {
			continue
		}
		t := time.NewTimer(idlePoll)
		select {
		case <-ctx.Done():
		case <-f.wake:
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

// jitter returns a delay in [d/2, d).
func jitter(d time.Duration) time.Duration {
	half := d / 2
	return half + mrand.N(max(half, 1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// shipOnce ships one batch from the spool and acknowledges it; it reports
// whether there was anything to ship.
func (f *Forwarder) shipOnce(ctx context.Context) (bool, error) {
	b, err := f.spool.Read(f.cfg.BatchSize)
	if err != nil {
		return false, err
	}
	if b.Empty() {
		return false, nil
	}
	if b.Corrupt != nil {
		f.log.Error("audit forwarder: corrupt data in the spool skipped", slog.Any(logKeyError, b.Corrupt))
	}
	events := make([]*audit.Event, 0, len(b.Records))
	for _, r := range b.Records {
		var e audit.Event
		if err := json.Unmarshal(r, &e); err != nil {
			f.rejected.Inc()
			f.log.Error("audit forwarder: undecodable spooled event skipped", slog.Any(logKeyError, err))
			continue
		}
		events = append(events, &e)
	}
	if err := f.ship(ctx, events); err != nil {
		return false, err
	}
	if err := f.spool.Ack(b); err != nil {
		return false, fmt.Errorf("acknowledge shipped events: %w", err)
	}
	return true, nil
}

// ship appends events as one batch. When the control plane refuses the
// batch as invalid (a retry cannot help), the events are appended one by
// one so that one bad event neither blocks nor takes down the others; the
// ones refused alone are logged and counted as rejected.
func (f *Forwarder) ship(ctx context.Context, events []*audit.Event) error {
	if len(events) == 0 {
		return nil
	}
	err := f.append(ctx, events)
	if err == nil || !permanent(err) {
		return err
	}
	for _, e := range events {
		err := f.append(ctx, []*audit.Event{e})
		if err != nil && !permanent(err) {
			return err
		}
		if err != nil {
			f.rejected.Inc()
			f.log.Error("audit forwarder: the control plane refused an event; skipped",
				slog.Any(logKeyError, err), slog.String(logKeyUID, e.Metadata.UID))
		}
	}
	return nil
}

func (f *Forwarder) append(ctx context.Context, events []*audit.Event) error {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	if _, err := f.client.Append(actx, events); err != nil {
		return fmt.Errorf("append %d events: %w", len(events), err)
	}
	f.shipped.Add(float64(len(events)))
	return nil
}

// permanent reports whether err is a refusal of the events themselves, one
// that retrying the same request cannot change.
func permanent(err error) bool {
	var ae *audit.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// Close releases the spool. Cancel Run's context and wait for Run to return
// first; a Run still going returns an error wrapping spool.ErrClosed.
func (f *Forwarder) Close() error {
	if err := f.spool.Close(); err != nil {
		return fmt.Errorf("audit forwarder: %w", err)
	}
	return nil
}
