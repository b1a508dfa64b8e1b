// Package spool is a durable, size-bounded, append-only local queue of
// opaque records: producers append records that are on disk (fsynced) when
// Append returns, and one consumer reads the oldest unacknowledged records
// and acknowledges them once it has delivered them elsewhere.
//
// Layout of a spool directory:
//
//	LOCK                  held with flock(2) by the one process that owns the spool
//	0000000000000001.seg  segments of records, written in order
//	0000000000000002.seg
//	cursor.json           how far the consumer has acknowledged: {segment, offset}
//
// A record is framed as
//
//	[4 bytes big-endian payload length][4 bytes CRC-32C of the payload][payload]
//
// On Open, a torn tail of the last segment (a crash in the middle of a
// write) is truncated. A record whose payload fails its CRC but is followed
// by valid records is skipped by Read and reported in Batch.Corrupt; a
// frame whose length is implausible makes Read skip the rest of that
// segment, also reported. A corrupt record is never returned.
//
// Delivery is at-least-once: a consumer that delivers a batch and crashes
// before Ack persists the cursor reads the same batch again after restart.
// Records should therefore carry a unique identifier by which the receiver
// (or a reader of its data) recognises duplicates.
package spool

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Errors a caller can test for with errors.Is.
var (
	// ErrFull is returned by Append when the records would take the
	// unacknowledged data over Config.MaxBytes. Nothing is written.
	ErrFull = errors.New("spool is full")
	// ErrClosed is returned by operations on a closed spool.
	ErrClosed = errors.New("spool is closed")
	// ErrLocked is returned by Open when another owner holds the spool.
	ErrLocked = errors.New("spool is in use by another owner")
	// ErrCorrupt marks corrupt data that Read skipped (see Batch.Corrupt).
	ErrCorrupt = errors.New("corrupt spool data")
	// ErrStaleBatch is returned by Ack for a batch that does not start
	// at the current cursor (read before another Ack).
	ErrStaleBatch = errors.New("batch does not start at the spool cursor")
)

const (
	frameHeaderBytes = 8
	// MaxRecordBytes is the largest record payload a spool accepts.
	MaxRecordBytes      = 1 << 20
	defaultMaxBytes     = 1 << 30
	maxDefaultSegment   = 16 << 20
	minDefaultSegment   = 4 << 10
	segmentSuffix       = ".seg"
	cursorFile          = "cursor.json"
	lockFile            = "LOCK"
	maxRecordsPerCommit = 4096
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Config configures a spool. The zero value is a valid default.
type Config struct {
	// MaxBytes bounds the bytes of unacknowledged records (frames
	// included); 0 means 1 GiB. The disk holds at most one partly
	// acknowledged segment more.
	MaxBytes int64
	// SegmentBytes is the size after which the writer starts a new
	// segment; 0 means min(16 MiB, max(MaxBytes/8, 4 KiB)).
	SegmentBytes int64
}

// Position is a place in the spool: a segment and a byte offset in it.
type Position struct {
	Segment uint64 `json:"segment"`
	Offset  int64  `json:"offset"`
}

func (p Position) less(q Position) bool {
	return p.Segment < q.Segment || (p.Segment == q.Segment && p.Offset < q.Offset)
}

// CorruptError describes corrupt data that was skipped. It matches
// ErrCorrupt under errors.Is.
type CorruptError struct {
	Segment uint64
	Offset  int64
	Reason  string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("spool segment %s offset %d: %s", segmentName(e.Segment), e.Offset, e.Reason)
}

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Batch is the result of Read: the oldest unacknowledged records, in order,
// and the opaque position to acknowledge them up to.
type Batch struct {
	// Records are the payloads, oldest first. They are not shared with
	// the spool.
	Records [][]byte
	// Corrupt is nil unless corrupt data was skipped to build this batch;
	// then it holds (errors.Join) one *CorruptError per skipped region.
	Corrupt error

	start, end Position
	bytes      int64 // frame bytes of the records (excluding skipped data)
	skipped    int64 // bytes skipped as corrupt
}

// Empty reports whether acknowledging b would change nothing.
func (b Batch) Empty() bool { return b.start == b.end }

// Stats are the spool's current counts.
type Stats struct {
	// Records is the number of valid unacknowledged records.
	Records int64
	// Bytes is the size of unacknowledged data, frames included.
	Bytes int64
}

// writeReq is one Append waiting for the writer.
type writeReq struct {
	frames  []byte
	records int
	done    chan error
}

// Spool is a durable queue in one directory. Append is safe for concurrent
// use; Read and Ack are meant for one consumer at a time (they are
// serialised internally).
type Spool struct {
	dir  string
	cfg  Config
	lock *os.File

	reqs     chan *writeReq
	quit     chan struct{} // closed by Close
	stopped  chan struct{} // closed when the writer has exited
	closeMu  sync.Once
	closeErr error

	mu        sync.Mutex
	committed Position // end of durable data in the current segment
	cursor    Position // acknowledged up to here (persisted)
	used      int64    // unacknowledged bytes on disk
	reserved  int64    // bytes accepted by Append, not yet written
	records   int64    // unacknowledged valid records
	broken    error    // a failed write: Append refuses from then on

	readMu sync.Mutex // serialises Read and Ack
}

// Open opens (creating if needed) the spool in dir, takes its lock,
// truncates a torn tail and starts the writer. Close releases it.
func Open(dir string, cfg Config) (*Spool, error) {
	if dir == "" {
		return nil, errors.New("spool: empty directory")
	}
	if cfg.MaxBytes < 0 || cfg.SegmentBytes < 0 {
		return nil, fmt.Errorf("spool: negative size in config (max %d, segment %d)", cfg.MaxBytes, cfg.SegmentBytes)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = defaultMaxBytes
	}
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = min(maxDefaultSegment, max(cfg.MaxBytes/8, minDefaultSegment))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: open lock file: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
	}
	s := &Spool{dir: dir, cfg: cfg, lock: lock,
		reqs: make(chan *writeReq, maxRecordsPerCommit), quit: make(chan struct{}), stopped: make(chan struct{})}
	seg, err := s.recover()
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("spool: open %s: %w", dir, err)
	}
	go s.write(seg)
	return s, nil
}

func segmentName(n uint64) string { return fmt.Sprintf("%016d%s", n, segmentSuffix) }

func (s *Spool) segmentPath(n uint64) string { return filepath.Join(s.dir, segmentName(n)) }

// listSegments returns the segment numbers in the directory, in order.
func (s *Spool) listSegments() ([]uint64, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	var out []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segmentSuffix)
		if !ok || e.IsDir() {
			continue
		}
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil || n == 0 {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// recover loads the cursor, removes acknowledged segments, counts the
// unacknowledged records, truncates a torn tail of the last segment and
// opens a new segment for writing.
func (s *Spool) recover() (*os.File, error) {
	if b, err := os.ReadFile(filepath.Join(s.dir, cursorFile)); err == nil {
		if err := json.Unmarshal(b, &s.cursor); err != nil {
			return nil, fmt.Errorf("corrupt %s: %w", cursorFile, err)
		}
		if s.cursor.Offset < 0 {
			return nil, fmt.Errorf("corrupt %s: negative offset", cursorFile)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", cursorFile, err)
	}
	segs, err := s.listSegments()
	if err != nil {
		return nil, err
	}
	var kept []uint64
	for _, n := range segs {
		if n < s.cursor.Segment {
			if err := os.Remove(s.segmentPath(n)); err != nil {
				return nil, fmt.Errorf("remove acknowledged segment: %w", err)
			}
			continue
		}
		kept = append(kept, n)
	}
	if !slices.Contains(kept, s.cursor.Segment) {
		// The cursor's segment is gone (it was read to its end, or the
		// directory was tampered with): nothing of it is left to skip.
		s.cursor.Offset = 0
	}
	for i, n := range kept {
		from := int64(0)
		if n == s.cursor.Segment {
			from = s.cursor.Offset
		}
		sc, err := scanSegment(s.segmentPath(n), from)
		if err != nil {
			return nil, err
		}
		size := sc.size
		if i == len(kept)-1 && sc.lastGood < sc.size {
			// The tail after the last valid record is torn: cut it.
			if err := truncateFile(s.segmentPath(n), sc.lastGood); err != nil {
				return nil, err
			}
			size = sc.lastGood
		}
		s.records += int64(sc.records)
		s.used += max(size-from, 0)
	}
	next := s.cursor.Segment
	if len(kept) > 0 {
		next = max(next, kept[len(kept)-1]+1)
	}
	next = max(next, 1)
	if s.cursor.Segment == 0 {
		s.cursor = Position{Segment: next}
		if len(kept) > 0 {
			s.cursor = Position{Segment: kept[0]}
		}
	}
	return s.openSegment(next)
}

// scan is what scanSegment found.
type scan struct {
	records  int   // valid records
	lastGood int64 // end of the last valid record (or from)
	size     int64
}

// scanSegment counts the valid records of path from offset from.
func scanSegment(path string, from int64) (scan, error) {
	f, err := os.Open(path)
	if err != nil {
		return scan{}, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return scan{}, fmt.Errorf("stat segment: %w", err)
	}
	sc := scan{size: st.Size()}
	from = min(from, sc.size)
	sc.lastGood = from
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return scan{}, fmt.Errorf("seek segment: %w", err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	off := from
	for {
		payload, n, err := readFrame(r)
		if err != nil {
			return sc, nil // clean end, torn or unparseable: valid data ends at lastGood
		}
		off += n
		if payload != nil {
			sc.records++
			sc.lastGood = off
		}
	}
}

// errBadFrame is a frame whose length is implausible or whose payload is
// cut short: nothing after it in the segment can be parsed.
var errBadFrame = errors.New("unparseable frame")

// readFrame reads one frame. It returns the payload and the frame's size;
// a nil payload with a nil error is a whole frame with a bad CRC (skip it).
// io.EOF marks a clean end, errBadFrame the end of parseable data.
func readFrame(r *bufio.Reader) ([]byte, int64, error) {
	var hdr [frameHeaderBytes]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, io.EOF
		}
		return nil, 0, errBadFrame
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	if n == 0 || n > MaxRecordBytes {
		return nil, 0, errBadFrame
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, 0, errBadFrame
	}
	size := int64(frameHeaderBytes) + int64(n)
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(hdr[4:8]) {
		return nil, size, nil
	}
	return payload, size, nil
}

func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open segment for truncation: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate segment: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync truncated segment: %w", err)
	}
	return nil
}

// openSegment creates segment n, fsyncs the directory and makes it the
// segment being written.
func (s *Spool) openSegment(n uint64) (*os.File, error) {
	f, err := os.OpenFile(s.segmentPath(n), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		_ = f.Close()
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("stat segment: %w", err)
	}
	s.mu.Lock()
	s.committed = Position{Segment: n, Offset: st.Size()}
	s.mu.Unlock()
	return f, nil
}

func syncDir(dir string) error {
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

// Stats returns the current counts of unacknowledged data.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Records: s.records, Bytes: s.used}
}

// Close stops the writer (Appends already accepted are written first),
// and releases the lock. It is safe to call more than once.
func (s *Spool) Close() error {
	s.closeMu.Do(func() {
		close(s.quit)
		<-s.stopped
		s.readMu.Lock()
		defer s.readMu.Unlock()
		if err := s.lock.Close(); err != nil {
			s.closeErr = fmt.Errorf("spool: release lock: %w", err)
		}
	})
	return s.closeErr
}

func (s *Spool) closed() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}
