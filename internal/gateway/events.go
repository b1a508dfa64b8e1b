package gateway

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/correlation"
	"github.com/bulwarksec/bulwark/sdk/authn"
)

// OCSF classes and activities of the gateway's events.
const (
	classAPIActivity    = 6003
	classAuthentication = 3002
	activityCreate      = 1
	activityRead        = 2
	activityDelete      = 4
	activityLogon       = 1
	productName         = "bulwark-gateway"
	severityInfo        = 1
	severityLow         = 2
	severityMedium      = 3
	severityHigh        = 4
	auditSendTimeout    = 5 * time.Second
)

// Status details of refusals, stable for dashboards and alerts.
const (
	DetailNotFound          = "no route"
	DetailMethodNotAllowed  = "method not allowed"
	DetailBadPath           = "malformed path"
	DetailRateLimited       = "rate limited"
	DetailRateLimitError    = "rate limiter unavailable"
	DetailInsufficientScope = "insufficient scope"
	DetailDenied            = "denied by policy"
	DetailInvalidRequest    = "invalid request"
	DetailWAFBlocked        = "waf blocked"
	DetailWAFDetected       = "waf detected"
	DetailWAFError          = "waf error"
	DetailExchangeFailed    = "token exchange failed"
	DetailUnknownService    = "unknown service"
	DetailDirectoryDown     = "service directory unavailable"
	DetailUpstreamFailed    = "upstream unavailable"
	DetailHeadersStripped   = "client-set identity headers stripped"
	DetailAllowed           = "allowed"
)

// reqState is what the pipeline has learnt about one request, for its audit
// event, log record and span.
type reqState struct {
	start     time.Time
	requestID string
	trace     correlation.TraceContext
	method    string
	path      string
	remoteIP  string
	route     *Route
	principal *authn.Principal
	reasons   []string
	status    int
}

func activityOf(method string) int {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return activityCreate
	case http.MethodDelete:
		return activityDelete
	default:
		return activityRead
	}
}

// baseEvent fills the fields every event of st carries.
func (st *reqState) baseEvent(now time.Time, class, activity, statusID int, detail string) *audit.Event {
	ev := &audit.Event{
		ClassUID: class, ActivityID: activity, Time: now.UnixMilli(), StatusID: statusID, StatusDetail: detail,
		SeverityID: severityInfo,
		Metadata:   audit.Metadata{CorrelationUID: st.requestID, TraceUID: st.trace.TraceID, Product: productName},
		Unmapped:   map[string]any{"http_method": st.method, "http_path": st.path},
	}
	if st.status != 0 {
		ev.Unmapped["http_status"] = st.status
	}
	if st.remoteIP != "" {
		ev.SrcEndpoint = &audit.Endpoint{IP: st.remoteIP}
	}
	if p := st.principal; p != nil {
		a := &audit.Actor{AppUID: p.ClientID, AppName: p.ClientID, SessionUID: p.JTI}
		if p.IsUser() {
			a.User = &audit.User{UID: p.Subject, Type: "User"}
		}
		ev.Actor = a
	}
	if r := st.route; r != nil {
		ev.Resources = []audit.Resource{{Type: "route", UID: r.Name, Name: r.Path}, {Type: "service", Name: r.Service}}
	}
	if len(st.reasons) > 0 {
		ev.Unmapped["policies"] = st.reasons
	}
	return ev
}

// apiEvent is an API Activity event of st's request.
func (g *Gateway) apiEvent(st *reqState, statusID int, detail string) *audit.Event {
	ev := st.baseEvent(g.deps.Now(), classAPIActivity, activityOf(st.method), statusID, detail)
	if statusID == audit.StatusFailure {
		ev.SeverityID = severityLow
	}
	return ev
}

// authEvent is an Authentication (Logon) failure of st's request.
func (g *Gateway) authEvent(st *reqState, reason string) *audit.Event {
	ev := st.baseEvent(g.deps.Now(), classAuthentication, activityLogon, audit.StatusFailure, reason)
	ev.SeverityID = severityMedium
	return ev
}

// send hands events to the audit sender; a failure is logged and counted,
// never shown to the client.
func (g *Gateway) send(ctx context.Context, events ...*audit.Event) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditSendTimeout)
	defer cancel()
	if err := g.deps.Events.Send(ctx, events...); err != nil {
		g.metrics.auditErrors.Inc()
		g.logger.Error("gateway audit event not spooled", logKeyError, err)
	}
}

// onTrip audits a breaker state change of an upstream endpoint. It runs
// under the breaker's lock, so the event is sent from its own goroutine,
// bounded by auditSendTimeout.
func (g *Gateway) onTrip(name string, from, to gobreaker.State) {
	g.metrics.trips.WithLabelValues(to.String()).Inc()
	g.logger.Warn("gateway upstream breaker changed state", logKeyBreaker, name, logKeyFrom, from.String(), logKeyTo, to.String())
	statusID := audit.StatusSuccess
	if to == gobreaker.StateOpen {
		statusID = audit.StatusFailure
	}
	ev := &audit.Event{
		ClassUID: classAPIActivity, ActivityID: activityRead, Time: g.deps.Now().UnixMilli(), StatusID: statusID,
		StatusDetail: "circuit breaker " + to.String(), SeverityID: severityMedium,
		Metadata:  audit.Metadata{Product: productName},
		Resources: []audit.Resource{{Type: "upstream", Name: name}},
		Unmapped:  map[string]any{"breaker_from": from.String(), "breaker_to": to.String()},
	}
	go g.send(context.Background(), ev)
}

// remoteIP returns the IP of a "host:port" remote address.
func remoteIP(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return host
}

// DetailUpstreamDenied is the status detail of the event about an upstream
// instance refused because its SPIFFE ID or certificate is on the deny list.
const DetailUpstreamDenied = "upstream instance revoked or quarantined"

// onUpstreamDenied audits an upstream instance at endpoint that presented a
// revoked certificate or a quarantined SPIFFE ID; upstreams calls it once
// per endpoint and serial. It may run in a handshake or while a pool picks
// an endpoint, so the event is sent from its own goroutine, bounded by
// auditSendTimeout.
func (g *Gateway) onUpstreamDenied(endpoint, id, serial string) {
	ev := &audit.Event{
		ClassUID: classAPIActivity, ActivityID: activityRead, Time: g.deps.Now().UnixMilli(), StatusID: audit.StatusFailure,
		StatusDetail: DetailUpstreamDenied, SeverityID: severityHigh,
		Metadata:  audit.Metadata{Product: productName},
		Resources: []audit.Resource{{Type: "upstream", UID: id, Name: endpoint}},
		Unmapped:  map[string]any{"upstream_endpoint": endpoint, "upstream_spiffe_id": id, "upstream_serial": serial},
	}
	go g.send(context.Background(), ev)
}
