package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
)

// Append writes records durably, in order and contiguously: it returns nil
// only once all of them are fsynced. Concurrent Appends share one write and
// one fsync (group commit). A spool that cannot take all the records
// returns ErrFull at once and writes none of them; nothing is ever dropped.
// If ctx ends while the records are queued, Append returns ctx's error and
// the records may or may not be written.
func (s *Spool) Append(ctx context.Context, records ...[]byte) error {
	if len(records) == 0 {
		return nil
	}
	if s.closed() {
		return ErrClosed
	}
	total := 0
	for i, r := range records {
		if len(r) == 0 || len(r) > MaxRecordBytes {
			return fmt.Errorf("spool: record %d is %d bytes; want 1 to %d", i, len(r), MaxRecordBytes)
		}
		total += frameHeaderBytes + len(r)
	}
	frames := make([]byte, 0, total)
	for _, r := range records {
		var hdr [frameHeaderBytes]byte
		binary.BigEndian.PutUint32(hdr[0:4], uint32(len(r)))
		binary.BigEndian.PutUint32(hdr[4:8], crc32.Checksum(r, castagnoli))
		frames = append(append(frames, hdr[:]...), r...)
	}
	n := int64(len(frames))
	s.mu.Lock()
	if s.broken != nil {
		err := s.broken
		s.mu.Unlock()
		return err
	}
	if s.used+s.reserved+n > s.cfg.MaxBytes {
		s.mu.Unlock()
		return ErrFull
	}
	s.reserved += n
	s.mu.Unlock()
	unreserve := func() {
		s.mu.Lock()
		s.reserved -= n
		s.mu.Unlock()
	}
	req := &writeReq{frames: frames, records: len(records), done: make(chan error, 1)}
	select {
	case s.reqs <- req:
	case <-s.quit:
		unreserve()
		return ErrClosed
	case <-ctx.Done():
		unreserve()
		return fmt.Errorf("spool: append: %w", ctx.Err())
	}
	select {
	case err := <-req.done:
		return err
	case <-s.stopped:
		// The writer answers every request it took before it stopped.
		select {
		case err := <-req.done:
			return err
		default:
			unreserve()
			return ErrClosed
		}
	case <-ctx.Done():
		return fmt.Errorf("spool: append: %w", ctx.Err())
	}
}

// write is the single writer goroutine: it takes every waiting request,
// writes them with one write and one fsync, and answers them.
func (s *Spool) write(seg *os.File) {
	defer close(s.stopped)
	defer func() {
		if seg != nil {
			_ = seg.Close()
		}
	}()
	var batch []*writeReq
	take := func() {
		for len(batch) < maxRecordsPerCommit {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				return
			}
		}
	}
	for {
		select {
		case <-s.quit:
			for {
				take()
				if len(batch) == 0 {
					return
				}
				s.commit(&seg, batch)
				clear(batch)
				batch = batch[:0]
			}
		case r := <-s.reqs:
			batch = append(batch, r)
			take()
			s.commit(&seg, batch)
			clear(batch)
			batch = batch[:0]
		}
	}
}

// commit writes one group of requests and answers them.
func (s *Spool) commit(seg **os.File, batch []*writeReq) {
	var buf []byte
	records := 0
	for _, r := range batch {
		buf = append(buf, r.frames...)
		records += r.records
	}
	n := int64(len(buf))
	s.mu.Lock()
	err := s.broken
	s.mu.Unlock()
	if err == nil {
		if err = s.commitBuf(seg, buf); err != nil {
			err = fmt.Errorf("spool: write failed, the spool refuses records until reopened: %w", err)
		}
	}
	s.mu.Lock()
	s.reserved -= n
	if err == nil {
		s.used += n
		s.records += int64(records)
	} else if s.broken == nil {
		s.broken = err
	}
	s.mu.Unlock()
	for _, r := range batch {
		r.done <- err
	}
}

// commitBuf appends buf to the current segment, rotating first when the
// segment is not empty and would grow over SegmentBytes, and fsyncs it.
func (s *Spool) commitBuf(seg **os.File, buf []byte) error {
	s.mu.Lock()
	cur := s.committed
	s.mu.Unlock()
	if cur.Offset > 0 && cur.Offset+int64(len(buf)) > s.cfg.SegmentBytes {
		if err := (*seg).Close(); err != nil {
			*seg = nil
			return fmt.Errorf("close segment: %w", err)
		}
		*seg = nil
		f, err := s.openSegment(cur.Segment + 1)
		if err != nil {
			return err
		}
		*seg = f
		cur = Position{Segment: cur.Segment + 1}
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
	s.mu.Lock()
	s.committed = Position{Segment: cur.Segment, Offset: cur.Offset + int64(len(buf))}
	s.mu.Unlock()
	return nil
}
