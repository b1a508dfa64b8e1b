package spool

import (
	"context"
	"testing"
)

// BenchmarkAppendParallel measures durable appends of 200-byte records by
// concurrent callers sharing group commits.
func BenchmarkAppendParallel(b *testing.B) {
	s, err := Open(b.TempDir(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := make([]byte, 200)
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Append(context.Background(), rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkReadAck measures reading and acknowledging batches of 500.
func BenchmarkReadAck(b *testing.B) {
	s, err := Open(b.TempDir(), Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := make([]byte, 200)
	batch := make([][]byte, 500)
	for i := range batch {
		batch[i] = rec
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Append(context.Background(), batch...); err != nil {
			b.Fatal(err)
		}
		bt, err := s.Read(500)
		if err != nil || len(bt.Records) != 500 {
			b.Fatalf("read %d: %v", len(bt.Records), err)
		}
		if err := s.Ack(bt); err != nil {
			b.Fatal(err)
		}
	}
}
