package authz

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cedar-policy/cedar-go"
)

// Context is the request context of a decision, as the schema's
// Bulwark::RequestContext declares it. [Context.Record] turns it into the
// Cedar record of [Request.Context].
type Context struct {
	// Time is when the request is made; the zero time means the Unix epoch.
	Time time.Time
	// Hour is the hour of day 0-23 in the bank's business time zone; -1
	// means Time's hour in UTC.
	Hour int
	// Zone is the network zone the request came from ("secure", "internal",
	// "public").
	Zone string
	// Region is the region the request is served in ("eu", "us").
	Region string
	// Amount is the amount in minor units of a money-moving request; nil
	// leaves it out of the record.
	Amount *int64
	// MFA is whether the caller completed multi-factor authentication.
	MFA bool
	// RiskScore is 0 (none) to 100 (certain fraud).
	RiskScore int
	// Scopes are the OAuth scopes of the caller's access token.
	Scopes []string
}

// Context record keys, as in the schema.
const (
	keyTime        = cedar.String("time")
	keyEpoch       = cedar.String("epoch")
	keyHour        = cedar.String("hour")
	keyZone        = cedar.String("zone")
	keyRegion      = cedar.String("region")
	keyAmount      = cedar.String("amount")
	keyMFA         = cedar.String("mfa")
	keyRiskScore   = cedar.String("riskScore")
	keyTokenScopes = cedar.String("tokenScopes")
)

// Record returns c as the Cedar record of the schema's RequestContext:
// time{epoch,hour}, zone, region, amount (when set), mfa, riskScore and
// tokenScopes.
func (c Context) Record() cedar.Record {
	hour := c.Hour
	if hour < 0 {
		hour = c.Time.UTC().Hour()
	}
	var epoch int64
	if !c.Time.IsZero() {
		epoch = c.Time.Unix()
	}
	m := contextMaps.Get().(cedar.RecordMap)
	m[keyTime] = timeRecord(epoch, int64(hour))
	m[keyZone] = cedar.String(c.Zone)
	m[keyRegion] = cedar.String(c.Region)
	if c.Amount != nil {
		m[keyAmount] = cedar.Long(*c.Amount)
	}
	m[keyMFA] = cedar.Boolean(c.MFA)
	m[keyRiskScore] = cedar.Long(c.RiskScore)
	if len(c.Scopes) == 0 {
		m[keyTokenScopes] = noScopes
	} else {
		scopes := make([]cedar.Value, len(c.Scopes))
		for i, s := range c.Scopes {
			scopes[i] = cedar.String(s)
		}
		m[keyTokenScopes] = cedar.NewSet(scopes...)
	}
	r := cedar.NewRecord(m)
	clear(m)
	contextMaps.Put(m)
	return r
}

// Building the context is on every decision's path, and cedar.NewRecord
// is most of its cost, so Record keeps two caches. They hold no state that
// changes a result: contextMaps are scratch maps (cleared before they go
// back; NewRecord copies them), and lastTime memoizes the time record of
// the last (epoch, hour), which every request within the same second
// shares. Records are immutable, so sharing one is safe.
var (
	contextMaps = sync.Pool{New: func() any { return make(cedar.RecordMap, 8) }}
	lastTime    atomic.Pointer[timeRec]
)

// noScopes is the empty set of scopes (cedar values are immutable).
var noScopes cedar.Value = cedar.NewSet()

type timeRec struct {
	epoch, hour int64
	rec         cedar.Record
}

// timeRecord returns the record {epoch, hour}.
func timeRecord(epoch, hour int64) cedar.Record {
	if t := lastTime.Load(); t != nil && t.epoch == epoch && t.hour == hour {
		return t.rec
	}
	t := &timeRec{epoch: epoch, hour: hour,
		rec: cedar.NewRecord(cedar.RecordMap{keyEpoch: cedar.Long(epoch), keyHour: cedar.Long(hour)})}
	lastTime.Store(t)
	return t.rec
}
