package policy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cedar-policy/cedar-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/sdk/authz"
)

// DecisionConfig configures the decision service. Zero values take the
// defaults noted.
type DecisionConfig struct {
	// BaseURL is the public base URL of the control plane, for the AuthZEN
	// metadata document (e.g. "https://bulwark.example:8443").
	BaseURL string
	// MaxRequestBytes bounds an AuthZEN request body; default 64KiB.
	MaxRequestBytes int64
	// MaxBatchEvaluations bounds the evaluations of one AuthZEN batch;
	// default 100.
	MaxBatchEvaluations int
	// SpoolDir is the decision log's spool directory; required.
	SpoolDir string
	// MaxSpoolBytes bounds the spool; default 1GiB. A full spool denies.
	MaxSpoolBytes int64
	// BatchSize is the most decision records per audit append; default 1000.
	BatchSize int
}

// DecisionDeps are the decision service's collaborators.
type DecisionDeps struct {
	// Source gives the current policy snapshot; required.
	Source Source
	// Audit receives the decision records; required.
	Audit *audit.Log
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics receives the service's Prometheus metrics; nil registers
	// nothing.
	Metrics prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Defaults of DecisionConfig.
const (
	DefaultMaxRequestBytes     = 64 << 10
	DefaultMaxBatchEvaluations = 100
)

// Decision APIs, as recorded in the decision log ("api").
const (
	APIAuthZEN  = "authzen"
	APIExtAuthz = "ext_authz"
)

// ReasonLogUnavailable is the reason of a denial made because the decision
// could not be logged.
const ReasonLogUnavailable = "decision log unavailable"

// maxEntityIDBytes bounds an entity type or ID taken from a request, so that
// every decision can be audited (the audit log bounds its strings).
const maxEntityIDBytes = 1024

// Least-privileged defaults of the request context.
const defaultRiskScore = 100

// DecisionService answers authorization requests over OpenID AuthZEN and
// Envoy ext_authz from one engine, and logs every decision durably before
// answering it.
type DecisionService struct {
	cfg     DecisionConfig
	source  Source
	log     *slog.Logger
	now     func() time.Time
	dlog    *decisionLog
	metrics *decisionMetrics
	ids     *decisionIDs
}

type decisionMetrics struct {
	decisions *prometheus.CounterVec
}

// NewDecisionService validates cfg and opens the decision log's spool.
// Call Run to ship decisions to the audit log; decisions made while Run is
// not running are denied with ReasonLogUnavailable.
func NewDecisionService(cfg DecisionConfig, deps DecisionDeps) (*DecisionService, error) {
	if deps.Source == nil {
		return nil, errors.New("decision service: no policy source")
	}
	if deps.Audit == nil {
		return nil, errors.New("decision service: no audit log")
	}
	if cfg.SpoolDir == "" {
		return nil, errors.New("decision service: spool_dir is empty")
	}
	if cfg.MaxRequestBytes < 0 || cfg.MaxBatchEvaluations < 0 || cfg.MaxSpoolBytes < 0 || cfg.BatchSize < 0 {
		return nil, errors.New("decision service: limits must not be negative")
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.MaxBatchEvaluations == 0 {
		cfg.MaxBatchEvaluations = DefaultMaxBatchEvaluations
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	lm, err := newDecisionLogMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("decision service: %w", err)
	}
	dm := &decisionMetrics{decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulwark_policy_decisions_total", Help: "Authorization decisions of the decision service, by API and outcome."},
		[]string{"api", "decision"})}
	if deps.Metrics != nil {
		if err := deps.Metrics.Register(dm.decisions); err != nil {
			return nil, fmt.Errorf("decision service: register metrics: %w", err)
		}
	}
	dl, err := newDecisionLog(decisionLogConfig{Dir: cfg.SpoolDir, MaxBytes: cfg.MaxSpoolBytes, BatchSize: cfg.BatchSize},
		deps.Audit, deps.Logger, lm)
	if err != nil {
		return nil, fmt.Errorf("decision service: %w", err)
	}
	return &DecisionService{cfg: cfg, source: deps.Source, log: deps.Logger, now: deps.Now, dlog: dl, metrics: dm,
		ids: newDecisionIDs()}, nil
}

// Run runs the decision log (its spool writer and its shipper to the audit
// log) until ctx ends. On return every spooled decision is either shipped
// or safely on disk, to be shipped by the next service on the same spool.
// Run is called once: afterwards every decision is denied with
// ReasonLogUnavailable.
func (d *DecisionService) Run(ctx context.Context) error {
	return d.dlog.Run(ctx)
}

// decisionInput is one request, mapped from either API.
type decisionInput struct {
	api                         string
	principal, action, resource cedar.EntityUID
	context                     cedar.Record
	entities                    cedar.EntityGetter
	// refusal, when set, denies without evaluation (the request could not
	// be mapped: no principal, a malformed header).
	refusal string
	// correlation is the request ID of the API call.
	correlation string
}

// request is the evaluator's request for in.
func (in *decisionInput) request() authz.Request {
	return authz.Request{
		Principal: in.principal, Action: in.action, Resource: in.resource,
		Context: in.context, Entities: in.entities,
	}
}

// decisionResult is the answer, as both APIs report it.
type decisionResult struct {
	ID            string
	Allowed       bool
	Reasons       []string
	Errors        []string
	Refusal       string
	BundleVersion int64
	PolicyVersion int64
}

// reasonAdmin is the human explanation of the result.
func (r *decisionResult) reasonAdmin() string {
	switch {
	case r.Allowed:
		return "permitted by policy " + strings.Join(r.Reasons, ", ")
	case r.Refusal != "":
		return r.Refusal
	case len(r.Errors) > 0:
		return "policy evaluation failed: " + strings.Join(r.Errors, "; ")
	case len(r.Reasons) > 0:
		return "forbidden by policy " + strings.Join(r.Reasons, ", ")
	default:
		return "no policy permits this request"
	}
}

// statusDetail is the audit event's status_detail: "allow: p1, p2",
// "deny: forbid p", "deny: no permit", "deny: <refusal>".
func (r *decisionResult) statusDetail() string {
	switch {
	case r.Allowed:
		return "allow: " + strings.Join(r.Reasons, ", ")
	case r.Refusal != "":
		return "deny: " + r.Refusal
	case len(r.Errors) > 0:
		return "deny: evaluation error"
	case len(r.Reasons) > 0:
		return "deny: forbid " + strings.Join(r.Reasons, ", ")
	default:
		return "deny: no permit"
	}
}

// decide answers in and logs the decision before returning it. A decision
// that cannot be logged is a denial with ReasonLogUnavailable: never an
// unlogged allow.
func (d *DecisionService) decide(ctx context.Context, in *decisionInput) decisionResult {
	res := []decisionResult{d.evaluate(in)}
	d.logDecisions(ctx, []*decisionInput{in}, res)
	return res[0]
}

// evaluate answers in, without logging it.
func (d *DecisionService) evaluate(in *decisionInput) decisionResult {
	snap := d.source.Snapshot()
	res := decisionResult{ID: d.ids.next()}
	if snap != nil {
		res.BundleVersion, res.PolicyVersion = snap.BundleVersion, snap.PolicyVersion
	}
	switch {
	case in.refusal != "":
		res.Refusal = in.refusal
	case snap == nil || snap.Evaluator == nil:
		res.Refusal = "no policy set"
	default:
		dec := snap.Evaluator.Decide(in.request())
		res.Allowed, res.Reasons, res.Errors, res.Refusal = dec.Allowed, dec.Reasons, dec.Errors, dec.Refusal
		if snap.BundleVersion == 0 {
			res.BundleVersion = dec.BundleVersion
		}
	}
	return res
}

// logDecisions spools the decisions res of ins durably, in one group; if
// they cannot be logged, each becomes a denial with ReasonLogUnavailable.
func (d *DecisionService) logDecisions(ctx context.Context, ins []*decisionInput, res []decisionResult) {
	recs := make([]*decisionRecord, len(ins))
	for i, in := range ins {
		recs[i] = d.decisionRecordOf(ctx, in, &res[i])
	}
	if err := d.dlog.Record(ctx, recs...); err != nil {
		d.log.ErrorContext(ctx, "decision service: decisions not logged; denying",
			slog.String(logKeyDecisionID, res[0].ID), slog.Int(logKeyCount, len(res)), slog.Any(logKeyDecErr, err))
		for i := range res {
			res[i] = decisionResult{ID: res[i].ID, Refusal: ReasonLogUnavailable,
				BundleVersion: res[i].BundleVersion, PolicyVersion: res[i].PolicyVersion}
		}
	}
	for i, in := range ins {
		outcome := "deny"
		if res[i].Allowed {
			outcome = "allow"
		}
		d.metrics.decisions.WithLabelValues(in.api, outcome).Inc()
	}
}

// decisionRecord is what the decision log spools of a decision: the
// principal, action and resource, the outcome and its reasons, and who
// asked. It never holds context values or token contents.
type decisionRecord struct {
	ID            string
	Time          int64 // ms since the Unix epoch
	API           string
	Allowed       bool
	PrincipalType string
	Principal     string
	Action        string
	ResourceType  string
	Resource      string
	Reasons       []string
	Errors        []string
	Refusal       string
	Detail        string
	BundleVersion int64
	PolicyVersion int64
	CallerKind    string
	CallerID      string
	Correlation   string
}

// decisionRecordOf is the record of the decision r of in.
func (d *DecisionService) decisionRecordOf(ctx context.Context, in *decisionInput, r *decisionResult) *decisionRecord {
	rec := &decisionRecord{
		ID: r.ID, Time: d.now().UnixMilli(), API: in.api, Allowed: r.Allowed,
		PrincipalType: clipAuditString(string(in.principal.Type)), Principal: clipAuditString(in.principal.String()),
		Action:       clipAuditString(in.action.String()),
		ResourceType: clipAuditString(string(in.resource.Type)), Resource: clipAuditString(in.resource.String()),
		Reasons: clipAuditStrings(r.Reasons), Errors: clipAuditStrings(r.Errors), Refusal: clipAuditString(r.Refusal),
		Detail:        clipAuditString(r.statusDetail()),
		BundleVersion: r.BundleVersion, PolicyVersion: r.PolicyVersion,
		Correlation: clipAuditString(in.correlation),
	}
	if c, ok := CallerFrom(ctx); ok {
		rec.CallerKind, rec.CallerID = clipAuditString(c.Kind), clipAuditString(c.ID)
	}
	return rec
}

// recordFormat is the version byte of the spool's record encoding.
const recordFormat = 1

// errRecordFormat is a spooled record that does not decode.
var errRecordFormat = errors.New("malformed decision record")

// appendBinary appends the record in the spool's encoding: a version byte,
// then each field in order, strings and string lists length-prefixed
// (uvarint), integers as varints. Hand-written because it is on every
// decision's path and every shipped record's.
func (r *decisionRecord) appendBinary(b []byte) []byte {
	b = append(b, recordFormat)
	b = appendRecordString(b, r.ID)
	b = binary.AppendVarint(b, r.Time)
	b = appendRecordString(b, r.API)
	if r.Allowed {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	for _, f := range [...]string{r.PrincipalType, r.Principal, r.Action, r.ResourceType, r.Resource} {
		b = appendRecordString(b, f)
	}
	for _, l := range [...][]string{r.Reasons, r.Errors} {
		b = binary.AppendUvarint(b, uint64(len(l)))
		for _, f := range l {
			b = appendRecordString(b, f)
		}
	}
	b = appendRecordString(b, r.Refusal)
	b = appendRecordString(b, r.Detail)
	b = binary.AppendVarint(b, r.BundleVersion)
	b = binary.AppendVarint(b, r.PolicyVersion)
	for _, f := range [...]string{r.CallerKind, r.CallerID, r.Correlation} {
		b = appendRecordString(b, f)
	}
	return b
}

func appendRecordString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// recordReader decodes the fields appendBinary wrote; the first error
// sticks.
type recordReader struct {
	p   []byte
	err error
}

func (d *recordReader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.err = errRecordFormat
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *recordReader) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.p)
	if n <= 0 {
		d.err = errRecordFormat
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *recordReader) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.p)) {
		d.err = errRecordFormat
		return ""
	}
	s := string(d.p[:n])
	d.p = d.p[n:]
	return s
}

func (d *recordReader) strings() []string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.p)) { // every string takes at least a byte
		d.err = errRecordFormat
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = d.string()
	}
	return out
}

// decodeBinary decodes what appendBinary wrote.
func (r *decisionRecord) decodeBinary(p []byte) error {
	if len(p) < 2 || p[0] != recordFormat {
		return errRecordFormat
	}
	d := &recordReader{p: p[1:]}
	r.ID = d.string()
	r.Time = d.varint()
	r.API = d.string()
	if d.err == nil {
		if len(d.p) == 0 || d.p[0] > 1 {
			d.err = errRecordFormat
		} else {
			r.Allowed = d.p[0] == 1
			d.p = d.p[1:]
		}
	}
	r.PrincipalType, r.Principal, r.Action = d.string(), d.string(), d.string()
	r.ResourceType, r.Resource = d.string(), d.string()
	r.Reasons, r.Errors = d.strings(), d.strings()
	r.Refusal, r.Detail = d.string(), d.string()
	r.BundleVersion, r.PolicyVersion = d.varint(), d.varint()
	r.CallerKind, r.CallerID, r.Correlation = d.string(), d.string(), d.string()
	if d.err == nil && len(d.p) != 0 {
		d.err = errRecordFormat
	}
	return d.err
}

// event is the audit event of the decision: API Activity (6003), activity
// Other (99) "Authorize", success for an allow and failure for a deny.
func (r *decisionRecord) event() *audit.Event {
	ev := &audit.Event{
		ClassUID: 6003, ActivityID: 99, ActivityName: "Authorize",
		Time:         r.Time,
		SeverityID:   1,
		StatusID:     audit.StatusFailure,
		StatusDetail: r.Detail,
		Message:      "authorization decision",
		Actor:        recordActor(r.CallerKind, r.CallerID),
		Resources: []audit.Resource{
			{Type: r.PrincipalType, UID: r.Principal},
			{Type: r.ResourceType, UID: r.Resource},
		},
		Metadata: audit.Metadata{UID: r.ID, CorrelationUID: r.Correlation, Product: "bulwark policy"},
	}
	decision := "deny"
	if r.Allowed {
		ev.StatusID = audit.StatusSuccess
		decision = "allow"
	}
	// []any and int64, not []string: the audit log's fast canonical
	// encoder takes them (it falls back to a much slower one otherwise).
	reasons, errs := anySlice(r.Reasons), anySlice(r.Errors)
	ev.Unmapped = map[string]any{
		"decision_id":    r.ID,
		"api":            r.API,
		"principal":      r.Principal,
		"action":         r.Action,
		"resource":       r.Resource,
		"decision":       decision,
		"reasons":        reasons,
		"errors":         errs,
		"refusal":        r.Refusal,
		"bundle_version": r.BundleVersion,
		"policy_version": r.PolicyVersion,
	}
	return ev
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// recordActor is the enforcement point that asked: its SPIFFE ID or admin
// credential.
func recordActor(kind, id string) *audit.Actor {
	switch {
	case id == "":
		return &audit.Actor{AppName: "unknown enforcement point"}
	case kind == "admin":
		return &audit.Actor{User: &audit.User{UID: id, Type: "admin"}}
	default:
		return &audit.Actor{AppName: "enforcement point", AppUID: id}
	}
}

// clipAuditString makes s safe to put in an audit event: valid UTF-8, at most
// maxEntityIDBytes bytes.
func clipAuditString(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= maxEntityIDBytes {
		return s
	}
	cut := maxEntityIDBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func clipAuditStrings(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = clipAuditString(s)
	}
	return out
}

// decisionIDs hands out decision ids: a random 64-bit prefix drawn when
// the service starts and a counter, 32 hex digits. Unique across restarts
// and replicas (the prefix), cheap on every decision (no entropy drawn).
type decisionIDs struct {
	prefix [8]byte
	n      atomic.Uint64
}

func newDecisionIDs() *decisionIDs {
	ids := &decisionIDs{}
	_, _ = rand.Read(ids.prefix[:])
	return ids
}

func (ids *decisionIDs) next() string {
	var b [16]byte
	copy(b[:8], ids.prefix[:])
	binary.BigEndian.PutUint64(b[8:], ids.n.Add(1))
	return hex.EncodeToString(b[:])
}

// Context keys of the schema's RequestContext.
const (
	rcTime        = cedar.String("time")
	rcEpoch       = cedar.String("epoch")
	rcHour        = cedar.String("hour")
	rcZone        = cedar.String("zone")
	rcRegion      = cedar.String("region")
	rcAmount      = cedar.String("amount")
	rcMFA         = cedar.String("mfa")
	rcRiskScore   = cedar.String("riskScore")
	rcTokenScopes = cedar.String("tokenScopes")
)

// defaultRequestContext is the least-privileged request context: now, no zone or
// region, no MFA, the highest risk score and no scopes. Callers' keys
// replace these.
func defaultRequestContext(now time.Time) cedar.RecordMap {
	return cedar.RecordMap{
		rcTime: cedar.NewRecord(cedar.RecordMap{
			rcEpoch: cedar.Long(now.Unix()),
			rcHour:  cedar.Long(now.UTC().Hour()),
		}),
		rcZone:        cedar.String(""),
		rcRegion:      cedar.String(""),
		rcMFA:         cedar.False,
		rcRiskScore:   cedar.Long(defaultRiskScore),
		rcTokenScopes: cedar.NewSet(),
	}
}

// decisionNamespace prefixes unqualified entity types and actions.
const decisionNamespace = "Bulwark"

// requestEntityType maps a request's entity type to the schema's: "User",
// "user" and "Bulwark::User" are all Bulwark::User. A type that is already
// qualified is kept as it is.
func requestEntityType(t string) cedar.EntityType {
	if strings.Contains(t, "::") {
		return cedar.EntityType(t)
	}
	r, size := utf8.DecodeRuneInString(t)
	if r != utf8.RuneError && unicode.IsLower(r) {
		t = string(unicode.ToUpper(r)) + t[size:]
	}
	return cedar.EntityType(decisionNamespace + "::" + t)
}

// requestActionUID maps an action name to Bulwark::Action::"name".
func requestActionUID(name string) cedar.EntityUID {
	return cedar.NewEntityUID(decisionNamespace+"::Action", cedar.String(name))
}

// parseAmountHeader parses a decimal int64 amount in minor units.
func parseAmountHeader(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("amount %q is not a decimal integer", clipDecisionEcho(s))
	}
	return n, nil
}

// maxDecisionEchoLen bounds how much of a caller's input an answer repeats.
const maxDecisionEchoLen = 64

func clipDecisionEcho(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxDecisionEchoLen {
		return s
	}
	return clipAuditString(s[:maxDecisionEchoLen]) + "..."
}
