package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

func open(t *testing.T, dir string, cfg Config) *Spool {
	t.Helper()
	s, err := Open(dir, cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func rec(i int) []byte { return fmt.Appendf(nil, "record-%05d", i) }

// drain reads and acknowledges everything, max records per batch.
func drain(t *testing.T, s *Spool, max int) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		b, err := s.Read(max)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if b.Empty() {
			return out
		}
		out = append(out, b.Records...)
		if err := s.Ack(b); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestOrderAcrossRotation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		segment   int64
		n, perApp int
		readMax   int
	}{
		{"one segment", 0, 50, 1, 7},
		{"tiny segments", 64, 100, 1, 3},
		{"grouped appends", 200, 120, 5, 11},
		{"read all", 100, 40, 2, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := open(t, dir, Config{SegmentBytes: tc.segment})
			for i := 0; i < tc.n; i += tc.perApp {
				var rs [][]byte
				for j := i; j < i+tc.perApp; j++ {
					rs = append(rs, rec(j))
				}
				if err := s.Append(context.Background(), rs...); err != nil {
					t.Fatal(err)
				}
			}
			if st := s.Stats(); st.Records != int64(tc.n) {
				t.Fatalf("stats %+v, want %d records", st, tc.n)
			}
			if tc.segment > 0 && len(segments(t, dir)) < 2 {
				t.Fatalf("no rotation: %v", segments(t, dir))
			}
			got := drain(t, s, tc.readMax)
			if len(got) != tc.n {
				t.Fatalf("read %d records, want %d", len(got), tc.n)
			}
			for i, r := range got {
				if !bytes.Equal(r, rec(i)) {
					t.Fatalf("record %d = %q", i, r)
				}
			}
			if st := s.Stats(); st != (Stats{}) {
				t.Fatalf("stats after drain %+v", st)
			}
			if segs := segments(t, dir); len(segs) > 1 {
				t.Fatalf("acknowledged segments kept: %v", segs)
			}
		})
	}
}

func TestReadWithoutAckRepeats(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir(), Config{})
	for i := range 5 {
		if err := s.Append(context.Background(), rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := s.Read(3)
	b, _ := s.Read(3)
	if len(a.Records) != 3 || !slices.EqualFunc(a.Records, b.Records, bytes.Equal) {
		t.Fatalf("reads differ: %q %q", a.Records, b.Records)
	}
	if err := s.Ack(a); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(a); err != nil {
		t.Fatalf("second ack of the same batch: %v", err)
	}
	if err := s.Ack(b); err != nil {
		t.Fatalf("ack of an equal batch: %v", err)
	}
	c, _ := s.Read(10)
	if len(c.Records) != 2 || !bytes.Equal(c.Records[0], rec(3)) {
		t.Fatalf("after ack: %q", c.Records)
	}
}

func TestStaleBatch(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir(), Config{})
	for i := range 4 {
		_ = s.Append(context.Background(), rec(i))
	}
	one, _ := s.Read(1)
	two, _ := s.Read(2)
	if err := s.Ack(one); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(two); !errors.Is(err, ErrStaleBatch) {
		t.Fatalf("ack of a stale overlapping batch: %v", err)
	}
}

func TestRestartResumesAfterCursor(t *testing.T) {
	t.Parallel()
	for _, seg := range []int64{0, 80} {
		t.Run(fmt.Sprint("segment ", seg), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s, err := Open(dir, Config{SegmentBytes: seg})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 30 {
				if err := s.Append(context.Background(), rec(i)); err != nil {
					t.Fatal(err)
				}
			}
			b, _ := s.Read(11)
			if err := s.Ack(b); err != nil {
				t.Fatal(err)
			}
			unacked, _ := s.Read(5) // read but not acknowledged: must come again
			if len(unacked.Records) != 5 {
				t.Fatal("short read")
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = open(t, dir, Config{SegmentBytes: seg})
			if st := s.Stats(); st.Records != 19 {
				t.Fatalf("stats after restart %+v, want 19 records", st)
			}
			if err := s.Append(context.Background(), rec(30)); err != nil {
				t.Fatal(err)
			}
			got := drain(t, s, 4)
			if len(got) != 20 {
				t.Fatalf("got %d records after restart, want 20", len(got))
			}
			for i, r := range got {
				if !bytes.Equal(r, rec(11+i)) {
					t.Fatalf("record %d = %q, want %q", i, r, rec(11+i))
				}
			}
		})
	}
}

func TestConcurrentAppendersDurableInOneOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Config{SegmentBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 100
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				// Two records per call: they must stay adjacent.
				a := fmt.Appendf(nil, "w%d-%03d-a", w, i)
				b := fmt.Appendf(nil, "w%d-%03d-b", w, i)
				if err := s.Append(context.Background(), a, b); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Durable: a fresh owner sees everything.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Config{SegmentBytes: 4096})
	got := drain(t, s, 37)
	if len(got) != 2*writers*each {
		t.Fatalf("got %d records, want %d", len(got), 2*writers*each)
	}
	next := make([]int, writers)
	for i := 0; i < len(got); i += 2 {
		var w, n int
		if _, err := fmt.Sscanf(string(got[i]), "w%d-%03d-a", &w, &n); err != nil {
			t.Fatalf("record %d %q: %v", i, got[i], err)
		}
		if want := fmt.Sprintf("w%d-%03d-b", w, n); string(got[i+1]) != want {
			t.Fatalf("record %d = %q, want %q beside its pair", i+1, got[i+1], want)
		}
		if n != next[w] {
			t.Fatalf("writer %d: record %d after %d", w, n, next[w]-1)
		}
		next[w]++
	}
}

func TestFullRefusesWithoutDropping(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir(), Config{MaxBytes: 100, SegmentBytes: 64})
	frame := int64(frameHeaderBytes + len(rec(0))) // 20 bytes
	n := 0
	for ; int64(n+1)*frame <= 100; n++ {
		if err := s.Append(context.Background(), rec(n)); err != nil {
			t.Fatalf("append %d: %v", n, err)
		}
	}
	if err := s.Append(context.Background(), rec(n)); !errors.Is(err, ErrFull) {
		t.Fatalf("append to a full spool: %v", err)
	}
	if err := s.Append(context.Background(), []byte("x")); !errors.Is(err, ErrFull) {
		t.Fatalf("small append to a full spool: %v", err)
	}
	b, _ := s.Read(2)
	if err := s.Ack(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(context.Background(), rec(n)); err != nil {
		t.Fatalf("append after ack freed space: %v", err)
	}
	got := drain(t, s, 100)
	if len(got) != n-1 || !bytes.Equal(got[len(got)-1], rec(n)) {
		t.Fatalf("after full: %q", got)
	}
}

func TestTornTailTruncated(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		tail []byte
	}{
		{"half header", []byte{0, 0}},
		{"header only", frameHeader([]byte("0123456789"))},
		{"short payload", append(frameHeader([]byte("0123456789")), "01234"...)},
		{"zeros", make([]byte, 64)},
		{"bad crc last", append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 3), 7), "abc"...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s, err := Open(dir, Config{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				_ = s.Append(context.Background(), rec(i))
			}
			_ = s.Close()
			seg := segments(t, dir)[0]
			before, _ := os.ReadFile(seg)
			appendFile(t, seg, tc.tail)
			s = open(t, dir, Config{})
			after, _ := os.ReadFile(seg)
			if !bytes.Equal(before, after) {
				t.Fatalf("torn tail not truncated: %d bytes, want %d", len(after), len(before))
			}
			_ = s.Append(context.Background(), rec(3))
			b, err := s.Read(100)
			if err != nil || b.Corrupt != nil {
				t.Fatalf("read: %v, corrupt %v", err, b.Corrupt)
			}
			if len(b.Records) != 4 || !bytes.Equal(b.Records[3], rec(3)) {
				t.Fatalf("records %q", b.Records)
			}
		})
	}
}

func TestCorruptMiddleRecordSkipped(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// corrupt damages the file image of the first segment.
		corrupt func(b []byte)
		want    []int // record numbers that survive
	}{
		{"payload bit flip", func(b []byte) { b[20+frameHeaderBytes+3] ^= 0x40 }, []int{0, 2, 3, 4, 5}},
		{"length destroyed", func(b []byte) { binary.BigEndian.PutUint32(b[20:], 0xffffffff) }, []int{0, 3, 4, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			// 60-byte segments: three 20-byte records each.
			s, err := Open(dir, Config{SegmentBytes: 60})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 6 {
				_ = s.Append(context.Background(), rec(i))
			}
			_ = s.Close()
			seg := segments(t, dir)[0]
			img, _ := os.ReadFile(seg)
			tc.corrupt(img)
			if err := os.WriteFile(seg, img, 0o600); err != nil {
				t.Fatal(err)
			}
			s = open(t, dir, Config{SegmentBytes: 60})
			var got []int
			var corrupt []error
			for {
				b, err := s.Read(2)
				if err != nil {
					t.Fatal(err)
				}
				if b.Empty() {
					break
				}
				if b.Corrupt != nil {
					if !errors.Is(b.Corrupt, ErrCorrupt) {
						t.Fatalf("corrupt error %v is not ErrCorrupt", b.Corrupt)
					}
					corrupt = append(corrupt, b.Corrupt)
				}
				for _, r := range b.Records {
					var n int
					if _, err := fmt.Sscanf(string(r), "record-%05d", &n); err != nil {
						t.Fatalf("shipped a bad record %q", r)
					}
					got = append(got, n)
				}
				if err := s.Ack(b); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("records %v, want %v", got, tc.want)
			}
			if len(corrupt) != 1 {
				t.Fatalf("corruption reported %d times: %v", len(corrupt), corrupt)
			}
		})
	}
}

func TestSecondOpenRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, Config{})
	if s2, err := Open(dir, Config{}); !errors.Is(err, ErrLocked) {
		if s2 != nil {
			_ = s2.Close()
		}
		t.Fatalf("second open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(dir, Config{})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	_ = s3.Close()
}

func TestClosedAndInvalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"negative max", Config{MaxBytes: -1}},
		{"negative segment", Config{SegmentBytes: -1}},
	} {
		if _, err := Open(t.TempDir(), tc.cfg); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := Open("", Config{}); err == nil {
		t.Error("empty dir accepted")
	}
	s, err := Open(t.TempDir(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(context.Background(), nil); err == nil {
		t.Error("empty record accepted")
	}
	if err := s.Append(context.Background(), make([]byte, MaxRecordBytes+1)); err == nil {
		t.Error("oversized record accepted")
	}
	if _, err := s.Read(0); err == nil {
		t.Error("read 0 accepted")
	}
	_ = s.Close()
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := s.Append(context.Background(), rec(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("append after close: %v", err)
	}
	if _, err := s.Read(1); !errors.Is(err, ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
}

func frameHeader(p []byte) []byte {
	h := binary.BigEndian.AppendUint32(nil, uint32(len(p)))
	return binary.BigEndian.AppendUint32(h, crc32.Checksum(p, castagnoli))
}

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func FuzzRecovery(f *testing.F) {
	var good []byte
	for i := range 3 {
		good = append(append(good, frameHeader(rec(i))...), rec(i)...)
	}
	f.Add(good, []byte(nil), "")
	f.Add(good[:len(good)-3], good[5:], `{"segment":1,"offset":20}`)
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0, 'x'}, []byte{0xff, 0xff, 0xff, 0xff}, `{"segment":3,"offset":99}`)
	f.Add(append(slices.Clone(good[:20]), good...), []byte("junk"), `{"segment":2,"offset":7}`)
	f.Fuzz(func(t *testing.T, seg1, seg2 []byte, cursor string) {
		dir := t.TempDir()
		if cursor != "" {
			if err := os.WriteFile(filepath.Join(dir, cursorFile), []byte(cursor), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, segmentName(1)), seg1, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, segmentName(2)), seg2, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Config{})
		if err != nil {
			if cursor == "" {
				t.Fatalf("open: %v", err)
			}
			return // a corrupt cursor file is refused, not guessed at
		}
		defer s.Close()
		if err := s.Append(context.Background(), []byte("fresh")); err != nil {
			t.Fatalf("append: %v", err)
		}
		fresh := false
		// Every record returned must appear in a file framed with a
		// matching length and CRC.
		for range 1000 {
			b, err := s.Read(7)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if b.Empty() {
				if !fresh {
					t.Fatal("a record appended after recovery was never read")
				}
				return
			}
			for _, r := range b.Records {
				if string(r) == "fresh" {
					fresh = true
					continue
				}
				framed := append(frameHeader(r), r...)
				if !bytes.Contains(seg1, framed) && !bytes.Contains(seg2, framed) {
					t.Fatalf("record %q not framed with a valid CRC in the input", r)
				}
			}
			if err := s.Ack(b); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
		t.Fatal("read did not end")
	})
}
