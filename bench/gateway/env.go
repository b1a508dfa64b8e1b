package main

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/bulwarksec/bulwark/internal/audit"
)

// env is what the gateway side of the bench is built from.
type env struct {
	// dir is the run's temporary directory.
	dir string
	// issuer is the in-process control plane; its token is the one the
	// load sends.
	issuer *issuer
	// upstream are the upstream child's addresses; the gateway's route
	// goes to upstream.PaymentsInbound (payments' agent, mTLS).
	upstream upstreamAddrs
	// svidDir holds the SVIDs (the gateway's is "gateway").
	svidDir string
	// policyDir holds the reference bank policies.
	policyDir string
	// cert is the serving certificate (the one HAProxy serves too).
	cert   serverCert
	logger *slog.Logger
	// events counts the audit events the gateway sends.
	events *countingEvents
}

// countingEvents is the gateway's audit sink: it counts the events (the
// bench audits refusals only, so a measured run should send none).
type countingEvents struct{ n atomic.Int64 }

// Send counts events.
func (c *countingEvents) Send(_ context.Context, events ...*audit.Event) error {
	c.n.Add(int64(len(events)))
	return nil
}
