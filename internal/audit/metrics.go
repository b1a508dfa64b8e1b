package audit

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the audit log's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	appended       prometheus.Counter
	failedBatches  prometheus.Counter
	batchSize      prometheus.Histogram
	commitDuration prometheus.Histogram
	ackLatency     prometheus.Histogram
	treeSize       prometheus.Gauge
	checkpointSize prometheus.Gauge
	checkpointTime prometheus.Gauge
	// Rejected counts refused API requests by stable error code.
	Rejected *prometheus.CounterVec
}

// NewMetrics creates the audit metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_audit_entries_appended_total", Help: "Entries durably appended to the audit log."}),
		failedBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bulwark_audit_append_failures_total", Help: "Append requests that failed to commit."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bulwark_audit_commit_batch_entries", Help: "Entries per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		commitDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bulwark_audit_commit_seconds", Help: "Duration of one group commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bulwark_audit_append_ack_seconds", Help: "Time from an append request to its durable acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		treeSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulwark_audit_tree_size", Help: "Entries in the audit log."}),
		checkpointSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulwark_audit_checkpoint_size", Help: "Tree size of the latest signed checkpoint."}),
		checkpointTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bulwark_audit_checkpoint_timestamp_seconds", Help: "When the latest checkpoint was signed."}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bulwark_audit_requests_rejected_total", Help: "Audit API requests refused, by error code."}, []string{"code"}),
	}
	if reg != nil {
		reg.MustRegister(m.appended, m.failedBatches, m.batchSize, m.commitDuration, m.ackLatency,
			m.treeSize, m.checkpointSize, m.checkpointTime, m.Rejected)
	}
	return m
}

func (m *Metrics) committed(entries, _ int, d time.Duration, size int64) {
	if m == nil {
		return
	}
	m.appended.Add(float64(entries))
	m.batchSize.Observe(float64(entries))
	m.commitDuration.Observe(d.Seconds())
	m.treeSize.Set(float64(size))
}

// startedAt publishes the tree size found at start-up, before any append.
func (m *Metrics) startedAt(size int64) {
	if m != nil {
		m.treeSize.Set(float64(size))
	}
}

func (m *Metrics) acked(d time.Duration) {
	if m != nil {
		m.ackLatency.Observe(d.Seconds())
	}
}

func (m *Metrics) appendFailed(requests int) {
	if m != nil {
		m.failedBatches.Add(float64(requests))
	}
}

func (m *Metrics) checkpointed(size int64) {
	if m != nil {
		m.checkpointSize.Set(float64(size))
		m.checkpointTime.SetToCurrentTime()
	}
}

func (m *Metrics) rejected(code string) {
	if m != nil {
		m.Rejected.WithLabelValues(code).Inc()
	}
}
