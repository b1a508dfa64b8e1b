package policy

// The decision log: every decision of the decision service is written to a
// local spool before it is answered, then shipped to the audit log.
//
// Spool layout (in the spool directory):
//
//	0000000000000001.seg  segments of records, written in order
//	0000000000000002.seg
//	cursor.json           how far the shipper has delivered: {segment, offset}
//
// A record on disk is framed as
//
//	[4 bytes big-endian payload length][4 bytes CRC-32C of the payload][payload]
//
// so that a torn tail (a crash in the middle of a write) is recognised and
// truncated when the spool is opened, never shipped. The payload is a
// decisionRecord in a compact binary encoding (see appendBinary); the
// shipper turns it into the decision's audit event.
//
// Writes are group-committed by a single writer goroutine: it takes every
// record that is waiting, writes them with one write, fsyncs once and then
// releases the waiting callers, so that an answered decision is always on
// disk while many decisions share one fsync. When the spool is full the
// record is refused at once and the decision service denies: OPA drops the
// oldest decision logs under pressure; we refuse to decide unlogged instead.
//
// Delivery is at-least-once: the shipper appends a batch to the audit log
// and then persists its cursor; a crash between the two re-ships that batch
// on restart. Every record carries a unique decision id (unmapped
// "decision_id"), so duplicates are recognisable in the audit trail.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// Errors of the decision log a caller can test for.
var (
	// ErrSpoolFull is returned by a record that would take the spool over
	// its size limit.
	ErrSpoolFull = errors.New("decision log spool is full")
	// ErrDecisionLogClosed is returned by a record made while the decision
	// log is not running.
	ErrDecisionLogClosed = errors.New("decision log is not running")
)

const (
	frameHeaderBytes = 8
	// maxRecordBytes bounds one record; larger lengths in a frame header
	// mean a corrupt or torn frame.
	maxRecordBytes     = 1 << 20
	maxSegmentBytes    = 16 << 20
	minSegmentBytes    = 4 << 10
	segmentSuffix      = ".seg"
	cursorFile         = "cursor.json"
	maxWriteBatch      = 4096 // records per group commit
	shipBackoffMin     = 50 * time.Millisecond
	shipBackoffMax     = 5 * time.Second
	shipAttemptTimeout = 30 * time.Second
	defaultShipBatch   = 1000
	// shipLinger is how long the shipper waits after shipping a partial
	// batch, so that a trickle of decisions becomes a few large audit
	// appends (each one an fsync of the audit store) rather than many
	// small ones.
	shipLinger          = 20 * time.Millisecond
	defaultMaxSpoolSize = 1 << 30
	// startWait is how long a record waits for Run to start the writer.
	startWait = 5 * time.Second
)

// Log attribute keys.
const (
	logKeyDecErr       = "error"
	logKeySpoolSegment = "segment"
	logKeySpoolOffset  = "offset"
	logKeyDecisionID   = "decision_id"
	logKeyCount        = "count"
)

var spoolCRC = crc32.MakeTable(crc32.Castagnoli)

// eventAppender is what the decision log needs of the audit log.
type eventAppender interface {
	Append(ctx context.Context, events []*audit.Event) (audit.AppendResult, error)
}

// decisionLogConfig configures a decisionLog; zero values take defaults.
type decisionLogConfig struct {
	Dir string
	// MaxBytes bounds the records not yet shipped; default 1GiB. The disk
	// holds at most one segment of shipped records more.
	MaxBytes     int64
	BatchSize    int   // records per audit append; default 1000
	SegmentBytes int64 // rotation size; default min(16MiB, MaxBytes/8), at least 4KiB
}

// decisionLogMetrics are the decision log's Prometheus metrics.
type decisionLogMetrics struct {
	spoolBytes  prometheus.Gauge
	pending     prometheus.Gauge
	shipped     prometheus.Counter
	shipErrors  prometheus.Counter
	spoolFull   prometheus.Counter
	commitBatch prometheus.Histogram
}

func newDecisionLogMetrics(reg prometheus.Registerer) (*decisionLogMetrics, error) {
	m := &decisionLogMetrics{
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulwark_policy_decision_log_spool_bytes", Help: "Bytes of decision records in the local spool."}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulwark_policy_decision_log_pending_records", Help: "Decision records spooled but not yet shipped to the audit log."}),
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_policy_decision_log_shipped_total", Help: "Decision records shipped to the audit log."}),
		shipErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_policy_decision_log_ship_errors_total", Help: "Failed attempts to ship decision records to the audit log."}),
		spoolFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_policy_decision_log_spool_full_total", Help: "Decision records refused because the spool was full."}),
		commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bulwark_policy_decision_log_commit_records", Help: "Decision records per spool group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7)}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.spoolBytes, m.pending, m.shipped, m.shipErrors, m.spoolFull, m.commitBatch} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register decision log metrics: %w", err)
			}
		}
	}
	return m, nil
}

// writeReq is one record waiting for the writer.
type writeReq struct {
	frame   []byte // one or more frames
	records int
	done    chan error
}

// spoolPos is a position in the spool.
type spoolPos struct {
	Segment uint64 `json:"segment"`
	Offset  int64  `json:"offset"`
}

// decisionLog is the durable, batched decision log.
type decisionLog struct {
	cfg     decisionLogConfig
	audit   eventAppender
	log     *slog.Logger
	metrics *decisionLogMetrics

	reqs    chan *writeReq
	running atomic.Bool
	started chan struct{} // closed when the writer has started
	stopped chan struct{} // closed when the writer has stopped, for good

	spoolBytes atomic.Int64 // bytes of all segment files on disk
	unshipped  atomic.Int64 // bytes of records on disk not yet shipped
	reserved   atomic.Int64 // bytes of records accepted but not yet written
	pending    atomic.Int64 // records on disk not yet shipped

	// Written by the writer, read by the shipper.
	mu        sync.Mutex
	committed spoolPos      // end of the durable data of the current segment
	notify    chan struct{} // pinged after each commit; capacity 1
	segSizes  map[uint64]int64

	cursor spoolPos // the shipper's; persisted in cursor.json
	runMu  sync.Mutex
}

// newDecisionLog opens (creating if needed) the spool in cfg.Dir, truncates
// a torn tail, and returns a log ready to Run.
func newDecisionLog(cfg decisionLogConfig, app eventAppender, logger *slog.Logger, m *decisionLogMetrics) (*decisionLog, error) {
	if cfg.Dir == "" {
		return nil, errors.New("decision log: empty spool directory")
	}
	if app == nil {
		return nil, errors.New("decision log: no audit log")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = defaultMaxSpoolSize
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = defaultShipBatch
	}
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = min(maxSegmentBytes, max(cfg.MaxBytes/8, minSegmentBytes))
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		var err error
		if m, err = newDecisionLogMetrics(nil); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("decision log: create spool directory: %w", err)
	}
	l := &decisionLog{
		cfg: cfg, audit: app, log: logger, metrics: m,
		reqs:     make(chan *writeReq, maxWriteBatch),
		started:  make(chan struct{}),
		stopped:  make(chan struct{}),
		notify:   make(chan struct{}, 1),
		segSizes: map[uint64]int64{},
	}
	if err := l.recover(); err != nil {
		return nil, fmt.Errorf("decision log: open spool %s: %w", cfg.Dir, err)
	}
	return l, nil
}

func segmentName(n uint64) string { return fmt.Sprintf("%016d%s", n, segmentSuffix) }

func (l *decisionLog) segmentPath(n uint64) string { return filepath.Join(l.cfg.Dir, segmentName(n)) }

// listSegments returns the segment numbers in the spool, in order.
func (l *decisionLog) listSegments() ([]uint64, error) {
	ents, err := os.ReadDir(l.cfg.Dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segmentSuffix)
		if !ok || e.IsDir() {
			continue
		}
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// recover reads the cursor, deletes fully shipped segments, validates the
// unshipped records (truncating a torn tail of the last segment) and sets
// the writer to start a new segment after the last one.
func (l *decisionLog) recover() error {
	if b, err := os.ReadFile(filepath.Join(l.cfg.Dir, cursorFile)); err == nil {
		if err := json.Unmarshal(b, &l.cursor); err != nil {
			return fmt.Errorf("corrupt %s: %w", cursorFile, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", cursorFile, err)
	}
	segs, err := l.listSegments()
	if err != nil {
		return fmt.Errorf("list segments: %w", err)
	}
	var total, unshipped, pending int64
	for i, n := range segs {
		path := l.segmentPath(n)
		if n < l.cursor.Segment {
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove shipped segment: %w", err)
			}
			continue
		}
		from := int64(0)
		if n == l.cursor.Segment {
			from = l.cursor.Offset
		}
		count, end, size, err := scanSegment(path, from)
		if err != nil {
			return err
		}
		if end < size {
			if i == len(segs)-1 {
				l.log.Warn("decision log: truncating torn tail of the spool",
					slog.String(logKeySpoolSegment, segmentName(n)), slog.Int64(logKeySpoolOffset, end))
			} else {
				l.log.Error("decision log: corrupt record in the spool; the rest of the segment is skipped",
					slog.String(logKeySpoolSegment, segmentName(n)), slog.Int64(logKeySpoolOffset, end))
			}
			if err := truncateSegment(path, end); err != nil {
				return err
			}
			size = end
		}
		pending += int64(count)
		total += size
		unshipped += size - min(from, size)
		l.segSizes[n] = size
	}
	next := l.cursor.Segment
	if len(segs) > 0 {
		next = max(next, segs[len(segs)-1]+1)
	}
	if next == 0 {
		next = 1
	}
	if l.cursor.Segment == 0 {
		// Nothing shipped yet: start at the oldest segment.
		l.cursor = spoolPos{Segment: next}
		if len(segs) > 0 {
			l.cursor = spoolPos{Segment: segs[0]}
		}
	}
	l.committed = spoolPos{Segment: next}
	l.spoolBytes.Store(total)
	l.unshipped.Store(unshipped)
	l.pending.Store(pending)
	l.metrics.spoolBytes.Set(float64(total))
	l.metrics.pending.Set(float64(pending))
	return nil
}

// scanSegment validates the records of path from offset from and returns
// how many are valid, where the valid data ends, and the file's size.
func scanSegment(path string, from int64) (count int, end, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("stat segment: %w", err)
	}
	size = st.Size()
	if from > size {
		from = size
	}
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return 0, 0, 0, fmt.Errorf("seek segment: %w", err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	end = from
	for {
		payload, err := readSpoolFrame(r)
		if err != nil {
			return count, end, size, nil // io.EOF or a torn/corrupt frame: valid data ends here
		}
		count++
		end += frameHeaderBytes + int64(len(payload))
	}
}

func truncateSegment(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open segment for truncation: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate segment: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync segment: %w", err)
	}
	return nil
}

var errSpoolFrame = errors.New("corrupt decision record frame")

// readSpoolFrame reads one frame; io.EOF at a clean end, errSpoolFrame for a
// torn or corrupt one.
func readSpoolFrame(r *bufio.Reader) ([]byte, error) {
	var hdr [frameHeaderBytes]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, errSpoolFrame
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	if n == 0 || n > maxRecordBytes {
		return nil, errSpoolFrame
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, errSpoolFrame
	}
	if crc32.Checksum(payload, spoolCRC) != binary.BigEndian.Uint32(hdr[4:8]) {
		return nil, errSpoolFrame
	}
	return payload, nil
}

// sealSpoolFrame fills in the header of a frame whose payload follows
// its first frameHeaderBytes bytes.
func sealSpoolFrame(b []byte) {
	payload := b[frameHeaderBytes:]
	binary.BigEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[4:8], crc32.Checksum(payload, spoolCRC))
}

// Record spools recs durably, as one group: it returns nil only once all
// are on disk. A full spool or a stopped log is an error at once; the
// caller must then not act on the decisions.
func (l *decisionLog) Record(ctx context.Context, recs ...*decisionRecord) error {
	if len(recs) == 0 {
		return nil
	}
	frame := make([]byte, 0, 512*len(recs))
	for _, rec := range recs {
		start := len(frame)
		frame = append(frame, make([]byte, frameHeaderBytes)...)
		frame = rec.appendBinary(frame)
		if n := len(frame) - start - frameHeaderBytes; n > maxRecordBytes {
			return fmt.Errorf("decision record is %d bytes; the limit is %d", n, maxRecordBytes)
		}
		sealSpoolFrame(frame[start:])
	}
	return l.recordFrames(ctx, frame, len(recs))
}

func (l *decisionLog) recordFrames(ctx context.Context, frame []byte, records int) error {
	if !l.running.Load() {
		// Not started yet (a request that came before Run got going):
		// wait a little; stopped: refuse.
		t := time.NewTimer(startWait)
		select {
		case <-l.started:
		case <-l.stopped:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if !l.running.Load() {
			return ErrDecisionLogClosed
		}
	}
	n := int64(len(frame))
	if l.unshipped.Load()+l.reserved.Add(n) > l.cfg.MaxBytes {
		l.reserved.Add(-n)
		l.metrics.spoolFull.Inc()
		return ErrSpoolFull
	}
	req := &writeReq{frame: frame, records: records, done: make(chan error, 1)}
	select {
	case l.reqs <- req:
	case <-l.stopped:
		l.reserved.Add(-n)
		return ErrDecisionLogClosed
	case <-ctx.Done():
		l.reserved.Add(-n)
		return fmt.Errorf("spool decision record: %w", ctx.Err())
	}
	select {
	case err := <-req.done:
		return err
	case <-l.stopped:
		// The writer replies to every request it took before it stops.
		select {
		case err := <-req.done:
			return err
		default:
			return ErrDecisionLogClosed
		}
	case <-ctx.Done():
		// The record may still be written; the caller was not told it was.
		return fmt.Errorf("spool decision record: %w", ctx.Err())
	}
}

// Run writes and ships decision records until ctx ends. On return every
// record that Record accepted is on disk, shipped or not; records not
// shipped are shipped by the next Run on the same spool.
func (l *decisionLog) Run(ctx context.Context) error {
	if !l.runMu.TryLock() {
		return errors.New("decision log: already running")
	}
	defer l.runMu.Unlock()
	select {
	case <-l.stopped:
		return errors.New("decision log: already stopped; open the spool again")
	default:
	}
	seg, err := l.openSegment(l.committed.Segment)
	if err != nil {
		close(l.stopped)
		return err
	}
	l.running.Store(true)
	close(l.started)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.ship(ctx)
	}()
	werr := l.write(ctx, seg)
	wg.Wait()
	return werr
}

// openSegment creates segment n and fsyncs the directory.
func (l *decisionLog) openSegment(n uint64) (*os.File, error) {
	f, err := os.OpenFile(l.segmentPath(n), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("decision log: create segment: %w", err)
	}
	if err := syncSpoolDir(l.cfg.Dir); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("decision log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("decision log: stat segment: %w", err)
	}
	l.mu.Lock()
	l.committed = spoolPos{Segment: n, Offset: st.Size()}
	l.segSizes[n] = st.Size()
	l.mu.Unlock()
	return f, nil
}

func syncSpoolDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open spool directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync spool directory: %w", err)
	}
	return nil
}

// write is the single writer: it group-commits waiting records until ctx
// ends, then commits what is still queued and stops.
func (l *decisionLog) write(ctx context.Context, seg *os.File) error {
	var (
		batch  []*writeReq
		buf    []byte
		broken error // a failed write or sync: the spool refuses further records
	)
	finish := func() {
		l.running.Store(false)
		close(l.stopped)
	}
	commit := func() {
		if len(batch) == 0 {
			return
		}
		buf = buf[:0]
		records := 0
		for _, r := range batch {
			buf = append(buf, r.frame...)
			records += r.records
		}
		n := int64(len(buf))
		err := broken
		if err == nil {
			err = l.commitBuf(&seg, buf)
			if err != nil {
				broken = err
				l.log.Error("decision log: spool write failed; decisions are denied until restart", slog.Any(logKeyDecErr, err))
			}
		}
		l.reserved.Add(-n)
		if err == nil {
			l.spoolBytes.Add(n)
			l.unshipped.Add(n)
			l.pending.Add(int64(records))
			l.metrics.spoolBytes.Set(float64(l.spoolBytes.Load()))
			l.metrics.pending.Set(float64(l.pending.Load()))
			l.metrics.commitBatch.Observe(float64(records))
			select {
			case l.notify <- struct{}{}:
			default:
			}
		} else {
			err = fmt.Errorf("decision log: %w", err)
		}
		for _, r := range batch {
			r.done <- err
		}
		clear(batch)
		batch = batch[:0]
	}
	take := func() {
		for len(batch) < maxWriteBatch {
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
			default:
				return
			}
		}
	}
	defer func() {
		if seg != nil {
			_ = seg.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			// Stop accepting, then commit everything already queued.
			l.running.Store(false)
			for {
				take()
				if len(batch) == 0 {
					break
				}
				commit()
			}
			finish()
			// Records sent after the last take are refused by Record
			// through l.stopped.
			return nil
		case r := <-l.reqs:
			batch = append(batch, r)
			take()
			if len(batch) > 1 {
				// Under load: wait briefly for more, one fsync for all.
				lingerFor(&batch, l.reqs, commitLinger)
			}
			commit()
		}
	}
}

// commitBuf appends buf to the current segment (rotating first if it is
// full) and fsyncs it.
func (l *decisionLog) commitBuf(seg **os.File, buf []byte) error {
	l.mu.Lock()
	cur := l.committed
	l.mu.Unlock()
	if cur.Offset > 0 && cur.Offset+int64(len(buf)) > l.cfg.SegmentBytes {
		if err := (*seg).Close(); err != nil {
			return fmt.Errorf("close segment: %w", err)
		}
		*seg = nil
		f, err := l.openSegment(cur.Segment + 1)
		if err != nil {
			return err
		}
		*seg = f
		cur = spoolPos{Segment: cur.Segment + 1}
	}
	if *seg == nil {
		return errors.New("no open segment")
	}
	if _, err := (*seg).Write(buf); err != nil {
		return fmt.Errorf("write segment: %w", err)
	}
	if err := (*seg).Sync(); err != nil {
		return fmt.Errorf("sync segment: %w", err)
	}
	l.mu.Lock()
	l.committed = spoolPos{Segment: cur.Segment, Offset: cur.Offset + int64(len(buf))}
	l.segSizes[cur.Segment] = l.committed.Offset
	l.mu.Unlock()
	return nil
}

// ship delivers spooled records to the audit log until ctx ends.
func (l *decisionLog) ship(ctx context.Context) {
	backoff := shipBackoffMin
	for {
		progressed, err := l.shipOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			l.metrics.shipErrors.Inc()
			l.log.Warn("decision log: shipping to the audit log failed; records stay in the spool",
				slog.Any(logKeyDecErr, err))
			if !sleepSpool(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, shipBackoffMax)
			continue
		}
		backoff = shipBackoffMin
		if progressed == shipFull {
			continue
		}
		if progressed == shipPartial {
			if !sleepSpool(ctx, shipLinger) {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-l.notify:
		}
	}
}

func sleepSpool(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// shipProgress is what one shipping step achieved.
type shipProgress int

const (
	shipNothing shipProgress = iota // nothing to ship
	shipPartial                     // shipped what there was, less than a batch
	shipFull                        // shipped a full batch or moved past a segment: there may be more
)

// shipOnce ships at most one batch from the cursor.
func (l *decisionLog) shipOnce(ctx context.Context) (shipProgress, error) {
	l.mu.Lock()
	committed := l.committed
	l.mu.Unlock()
	cur := l.cursor
	if cur.Segment > committed.Segment || (cur.Segment == committed.Segment && cur.Offset >= committed.Offset) {
		return shipNothing, nil
	}
	limit := int64(-1) // the whole file, for a segment no longer written
	if cur.Segment == committed.Segment {
		limit = committed.Offset
	}
	payloads, end, corrupt, err := l.readRecords(cur, limit)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && cur.Segment < committed.Segment {
			return shipFull, l.advance(spoolPos{Segment: cur.Segment + 1})
		}
		return shipNothing, err
	}
	if len(payloads) > 0 {
		if err := l.appendBatch(ctx, payloads); err != nil {
			return shipNothing, err
		}
		l.pending.Add(-int64(len(payloads)))
		l.metrics.pending.Set(float64(l.pending.Load()))
		l.metrics.shipped.Add(float64(len(payloads)))
	}
	l.unshipped.Add(-(end - cur.Offset))
	next := spoolPos{Segment: cur.Segment, Offset: end}
	if corrupt {
		l.log.Error("decision log: corrupt record in the spool; the rest of the segment is skipped",
			slog.String(logKeySpoolSegment, segmentName(cur.Segment)), slog.Int64(logKeySpoolOffset, end))
	}
	if cur.Segment < committed.Segment && len(payloads) < l.cfg.BatchSize {
		// The segment is complete and read to its end: move to the next.
		next = spoolPos{Segment: cur.Segment + 1}
	}
	if next == cur {
		return shipNothing, nil
	}
	progress := shipPartial
	if len(payloads) >= l.cfg.BatchSize || next.Segment != cur.Segment {
		progress = shipFull
	}
	return progress, l.advance(next)
}

// appendBatch appends the records to the audit log. An event the audit
// log refuses as invalid (it cannot become valid by retrying) is replaced
// by a minimal event that keeps its decision id and says why, so that it
// neither blocks the records behind it nor disappears; if even that is
// refused, it is logged and left out.
func (l *decisionLog) appendBatch(ctx context.Context, payloads [][]byte) error {
	events := make([]*audit.Event, 0, len(payloads))
	for _, p := range payloads {
		var rec decisionRecord
		if err := rec.decodeBinary(p); err != nil {
			l.log.Error("decision log: undecodable record skipped", slog.Any(logKeyDecErr, err))
			continue
		}
		events = append(events, rec.event())
	}
	for len(events) > 0 {
		actx, cancel := context.WithTimeout(ctx, shipAttemptTimeout)
		_, err := l.audit.Append(actx, events)
		cancel()
		if err == nil {
			return nil
		}
		var ve *audit.ValidationError
		if !errors.As(err, &ve) || ve.Index < 0 || ve.Index >= len(events) {
			return fmt.Errorf("append %d decision records: %w", len(events), err)
		}
		bad := events[ve.Index]
		id, _ := bad.Unmapped["decision_id"].(string)
		if bad.Message == repairedMessage {
			l.log.Error("decision log: the audit log refused a decision record; skipped",
				slog.Any(logKeyDecErr, err), slog.String(logKeyDecisionID, id))
			events = slices.Delete(events, ve.Index, ve.Index+1)
			continue
		}
		l.log.Error("decision log: the audit log refused a decision record; shipping a minimal record instead",
			slog.Any(logKeyDecErr, err), slog.String(logKeyDecisionID, id))
		events[ve.Index] = repairedEvent(bad, ve.Msg)
	}
	return nil
}

const repairedMessage = "authorization decision (record refused by the audit log)"

// repairedEvent is the minimal stand-in of a decision event the audit log
// refused: the time it is shipped, its outcome and its decision id.
func repairedEvent(bad *audit.Event, why string) *audit.Event {
	id, _ := bad.Unmapped["decision_id"].(string)
	status := bad.StatusID
	if status != audit.StatusSuccess {
		status = audit.StatusFailure
	}
	return &audit.Event{ClassUID: 6003, ActivityID: 99, ActivityName: "Authorize", StatusID: status, SeverityID: 3,
		Message:  repairedMessage,
		Metadata: audit.Metadata{UID: clipAuditString(bad.Metadata.UID), Product: "bulwark policy"},
		Unmapped: map[string]any{"decision_id": clipAuditString(id), "refused": clipAuditString(why)}}
}

// readRecords reads up to BatchSize records from pos, not past limit (-1:
// to the end of the file). It returns where the records end and whether a
// corrupt frame stopped the read.
func (l *decisionLog) readRecords(pos spoolPos, limit int64) (payloads [][]byte, end int64, corrupt bool, err error) {
	f, err := os.Open(l.segmentPath(pos.Segment))
	if err != nil {
		return nil, 0, false, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(pos.Offset, io.SeekStart); err != nil {
		return nil, 0, false, fmt.Errorf("seek segment: %w", err)
	}
	var src io.Reader = f
	if limit >= 0 {
		src = io.LimitReader(f, limit-pos.Offset)
	}
	r := bufio.NewReaderSize(src, 64<<10)
	end = pos.Offset
	for len(payloads) < l.cfg.BatchSize {
		p, err := readSpoolFrame(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// Corrupt: skip the rest of this segment (it is complete, or
			// the writer has moved on; the tail of the current segment
			// is always whole, being read only up to the committed end).
			if limit < 0 {
				st, serr := f.Stat()
				if serr != nil {
					return nil, 0, false, fmt.Errorf("stat segment: %w", serr)
				}
				limit = st.Size()
			}
			return payloads, limit, true, nil
		}
		payloads = append(payloads, p)
		end += frameHeaderBytes + int64(len(p))
	}
	return payloads, end, false, nil
}

// advance persists the cursor at next and deletes the segments before it.
func (l *decisionLog) advance(next spoolPos) error {
	b, err := json.Marshal(next)
	if err != nil {
		return fmt.Errorf("encode cursor: %w", err)
	}
	tmp := filepath.Join(l.cfg.Dir, cursorFile+".tmp")
	if err := writeSpoolFile(tmp, b); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(l.cfg.Dir, cursorFile)); err != nil {
		return fmt.Errorf("rename cursor: %w", err)
	}
	if err := syncSpoolDir(l.cfg.Dir); err != nil {
		return err
	}
	prev := l.cursor
	l.cursor = next
	for n := prev.Segment; n < next.Segment; n++ {
		if err := os.Remove(l.segmentPath(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove shipped segment: %w", err)
		}
		l.mu.Lock()
		size := l.segSizes[n]
		delete(l.segSizes, n)
		l.mu.Unlock()
		l.spoolBytes.Add(-size)
		l.metrics.spoolBytes.Set(float64(l.spoolBytes.Load()))
	}
	return nil
}

func writeSpoolFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", filepath.Base(path), err)
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("sync %s: %w", filepath.Base(path), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", filepath.Base(path), err)
	}
	return nil
}

// commitLinger is how long the spool writer, when it finds more than one
// record waiting (the service is under load), waits for more before it
// writes and fsyncs: it turns many small fsyncs into one (fsync costs CPU
// on virtual disks) at the price of at most this much latency. A lone
// record is committed at once.
const commitLinger = 1 * time.Millisecond

// lingerFor adds to batch what arrives on reqs within d.
func lingerFor(batch *[]*writeReq, reqs <-chan *writeReq, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for len(*batch) < maxWriteBatch {
		select {
		case r := <-reqs:
			*batch = append(*batch, r)
		case <-t.C:
			return
		}
	}
}
