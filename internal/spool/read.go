package spool

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Read returns up to max of the oldest unacknowledged records. Until Ack,
// every Read returns the same records again (and perhaps more after them).
// An empty batch means there is nothing to read now. Corrupt data on the way
// is skipped, never returned, and reported in Batch.Corrupt; acknowledging
// the batch moves past it.
func (s *Spool) Read(max int) (Batch, error) {
	if max <= 0 {
		return Batch{}, fmt.Errorf("spool: read: max must be positive, got %d", max)
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if s.closed() {
		return Batch{}, ErrClosed
	}
	s.mu.Lock()
	pos, committed := s.cursor, s.committed
	s.mu.Unlock()
	b := Batch{start: pos}
	var corrupt []error
	for len(b.Records) < max && pos.less(committed) {
		limit := int64(-1) // a finished segment: read to the end of the file
		if pos.Segment == committed.Segment {
			limit = committed.Offset
		}
		next, err := s.readSegment(&b, &corrupt, pos, limit, max, pos.Segment < committed.Segment)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && pos.Segment < committed.Segment {
				pos = Position{Segment: pos.Segment + 1}
				continue
			}
			return Batch{}, fmt.Errorf("spool: read %s: %w", segmentName(pos.Segment), err)
		}
		if next == pos && pos.Segment == committed.Segment {
			break
		}
		pos = next
	}
	b.end = pos
	b.Corrupt = errors.Join(corrupt...)
	return b, nil
}

// readSegment appends records of segment pos.Segment from pos.Offset (up to
// limit, or the file's end when limit < 0) to b until b holds max records.
// It returns where reading stopped: the start of the next segment when a
// finished segment (one no longer written) was read to its end.
func (s *Spool) readSegment(b *Batch, corrupt *[]error, pos Position, limit int64, max int, finished bool) (Position, error) {
	f, err := os.Open(s.segmentPath(pos.Segment))
	if err != nil {
		return pos, err
	}
	defer f.Close()
	if limit < 0 {
		st, err := f.Stat()
		if err != nil {
			return pos, fmt.Errorf("stat segment: %w", err)
		}
		limit = st.Size()
	}
	if pos.Offset >= limit {
		if finished {
			return Position{Segment: pos.Segment + 1}, nil
		}
		return pos, nil
	}
	if _, err := f.Seek(pos.Offset, io.SeekStart); err != nil {
		return pos, fmt.Errorf("seek segment: %w", err)
	}
	r := bufio.NewReaderSize(io.LimitReader(f, limit-pos.Offset), 64<<10)
	off := pos.Offset
	for len(b.Records) < max && off < limit {
		payload, n, err := readFrame(r)
		switch {
		case errors.Is(err, io.EOF):
			off = limit
		case err != nil:
			*corrupt = append(*corrupt, &CorruptError{Segment: pos.Segment, Offset: off,
				Reason: fmt.Sprintf("unparseable frame; %d bytes to the end of the segment skipped", limit-off)})
			b.skipped += limit - off
			off = limit
		case payload == nil:
			*corrupt = append(*corrupt, &CorruptError{Segment: pos.Segment, Offset: off,
				Reason: "record fails its CRC-32C; skipped"})
			b.skipped += n
			off += n
		default:
			b.Records = append(b.Records, payload)
			b.bytes += n
			off += n
		}
	}
	if off >= limit && finished {
		return Position{Segment: pos.Segment + 1}, nil
	}
	return Position{Segment: pos.Segment, Offset: off}, nil
}

// Ack acknowledges every record up to the end of b: it persists the cursor
// atomically (temporary file, rename, directory fsync) and deletes the
// segments that are wholly acknowledged. Acknowledging a batch twice is a
// no-op; a batch read before another Ack moved the cursor elsewhere is
// ErrStaleBatch.
func (s *Spool) Ack(b Batch) error {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if s.closed() {
		return ErrClosed
	}
	if b.Empty() {
		return nil
	}
	s.mu.Lock()
	cur := s.cursor
	s.mu.Unlock()
	if b.start != cur {
		if !cur.less(b.end) {
			return nil // already acknowledged
		}
		return ErrStaleBatch
	}
	data, err := json.Marshal(b.end)
	if err != nil {
		return fmt.Errorf("spool: encode cursor: %w", err)
	}
	tmp := filepath.Join(s.dir, cursorFile+".tmp")
	if err := writeFileSync(tmp, data); err != nil {
		return fmt.Errorf("spool: persist cursor: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, cursorFile)); err != nil {
		return fmt.Errorf("spool: persist cursor: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("spool: persist cursor: %w", err)
	}
	s.mu.Lock()
	s.cursor = b.end
	s.used = max(s.used-b.bytes-b.skipped, 0)
	s.records = max(s.records-int64(len(b.Records)), 0)
	s.mu.Unlock()
	for n := b.start.Segment; n < b.end.Segment; n++ {
		if err := os.Remove(s.segmentPath(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("spool: remove acknowledged segment: %w", err)
		}
	}
	return nil
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", filepath.Base(path), err)
	}
	if _, err := f.Write(data); err != nil {
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
