package redact

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// BenchmarkHandle compares a plain JSON handler with the redacting one on a
// typical request record of six attributes, with nothing to redact ("clean")
// and with a secret in the message and one attribute ("secret").
func BenchmarkHandle(b *testing.B) {
	ctx := context.Background()
	at := time.Date(2026, 1, 15, 10, 30, 0, 0, time.UTC)
	clean := slog.NewRecord(at, slog.LevelInfo, "request handled", 0)
	clean.AddAttrs(
		slog.String("method", "POST"),
		slog.String("path", "/v1/payments/transfer"),
		slog.Int("status", 201),
		slog.Duration("latency", 3*time.Millisecond),
		slog.String("request_id", "3f2a9c1e-7b4d-4e8a-9f10-2c3d4e5f6a7b"),
		slog.String("user_id", "usr_8HkY2mQ"),
	)
	secret := slog.NewRecord(at, slog.LevelInfo, "upstream call failed: password=hunter2 host=db", 0)
	secret.AddAttrs(
		slog.String("method", "POST"),
		slog.String("path", "/v1/payments/transfer"),
		slog.Int("status", 502),
		slog.Duration("latency", 3*time.Millisecond),
		slog.String("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"),
		slog.String("user_id", "usr_8HkY2mQ"),
	)
	plain := slog.NewJSONHandler(io.Discard, nil)
	redacting := NewHandler(slog.NewJSONHandler(io.Discard, nil), nil)
	for _, bc := range []struct {
		name string
		h    slog.Handler
		r    slog.Record
	}{
		{"json/clean", plain, clean},
		{"redact/clean", redacting, clean},
		{"json/secret", plain, secret},
		{"redact/secret", redacting, secret},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.h.Handle(ctx, bc.r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkString measures scrubbing alone on a clean and a dirty string.
func BenchmarkString(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"short", "request handled"},
		{"clean", "ledger: post entry 42 for account acc_123: context deadline exceeded"},
		{"secret", "dial failed: password=hunter2 host=db card 4111 1111 1111 1111"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = String(bc.in)
			}
		})
	}
}
