package gateway

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/types"
)

// crsBlockingRule is the CRS rule that refuses a request whose inbound
// anomaly score reached the threshold; in detection mode its match is the
// verdict that would have blocked.
const crsBlockingRule = 949110

// wafEngine screens requests with the OWASP Core Rule Set in one mode.
type wafEngine struct {
	mode WAFMode
	waf  coraza.WAF
}

// wafVerdict is the outcome of screening one request.
type wafVerdict struct {
	// Matched is true when the request reached the anomaly threshold.
	Matched bool
	// Rules are the IDs of the attack rules that matched (not the
	// scoring bookkeeping), for the audit event.
	Rules []int
	// Status is the interruption's status in blocking mode (0 when none).
	Status int
}

// newWAF builds the Core Rule Set engine for mode (detect or block).
func newWAF(mode WAFMode, bodyLimit int64) (*wafEngine, error) {
	engine := "On"
	if mode == WAFDetect {
		engine = "DetectionOnly"
	}
	directives := "Include @coraza.conf-recommended\n" +
		"Include @crs-setup.conf.example\n" +
		"Include @owasp_crs/*.conf\n" +
		"SecRuleEngine " + engine + "\n" +
		"SecRequestBodyAccess On\n" +
		"SecResponseBodyAccess Off\n" +
		"SecAuditEngine Off\n" +
		"SecDebugLogLevel 0\n"
	cfg := coraza.NewWAFConfig().WithRootFS(coreruleset.FS).WithDirectives(directives).
		WithRequestBodyAccess().WithRequestBodyLimit(int(bodyLimit)).WithRequestBodyInMemoryLimit(int(bodyLimit))
	w, err := coraza.NewWAF(cfg)
	if err != nil {
		return nil, fmt.Errorf("waf %s: %w", mode, err)
	}
	return &wafEngine{mode: mode, waf: w}, nil
}

// check screens r, whose body is body (already read and bounded), with the
// request path as the client sent it.
func (e *wafEngine) check(r *http.Request, body []byte) (wafVerdict, error) {
	tx := e.waf.NewTransaction()
	defer func() {
		tx.ProcessLogging()
		_ = tx.Close()
	}()
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		p, _ := strconv.Atoi(port)
		tx.ProcessConnection(host, p, "", 0)
	}
	tx.ProcessURI(r.URL.RequestURI(), r.Method, r.Proto)
	for k, vs := range r.Header {
		if k == "Authorization" || k == "Dpop" {
			// Verified credentials, replaced before forwarding: scanning
			// them costs time and hands a token to the rule engine.
			continue
		}
		for _, v := range vs {
			tx.AddRequestHeader(k, v)
		}
	}
	if r.Host != "" {
		tx.AddRequestHeader("Host", r.Host)
	}
	var v wafVerdict
	if it := tx.ProcessRequestHeaders(); it != nil {
		return e.verdict(tx, it), nil
	}
	if len(body) > 0 {
		if it, _, err := tx.WriteRequestBody(body); err != nil {
			return v, fmt.Errorf("waf body: %w", err)
		} else if it != nil {
			return e.verdict(tx, it), nil
		}
	}
	it, err := tx.ProcessRequestBody()
	if err != nil {
		return v, fmt.Errorf("waf body: %w", err)
	}
	return e.verdict(tx, it), nil
}

func (e *wafEngine) verdict(tx types.Transaction, it *types.Interruption) wafVerdict {
	var v wafVerdict
	if it != nil {
		v.Matched, v.Status = true, it.Status
	}
	for _, m := range tx.MatchedRules() {
		id := m.Rule().ID()
		if id == crsBlockingRule {
			v.Matched = true
		}
		// Attack rules carry an attack-* tag; the scoring and paranoia
		// bookkeeping rules do not.
		if isAttackRule(m.Rule().Tags()) && !slices.Contains(v.Rules, id) {
			v.Rules = append(v.Rules, id)
		}
	}
	slices.Sort(v.Rules)
	if len(v.Rules) > 16 {
		v.Rules = v.Rules[:16]
	}
	return v
}

func isAttackRule(tags []string) bool {
	return slices.ContainsFunc(tags, func(t string) bool { return strings.HasPrefix(t, "attack-") })
}
