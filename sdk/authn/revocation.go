package authn

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// feedSlack is added to the long-poll wait to bound one feed request.
	feedSlack = 15 * time.Second
	// feedMinInterval is the least time between two feed requests that
	// brought nothing, so a server that ignores wait is not hammered.
	feedMinInterval = time.Second
	// feedMaxBackoff caps the wait between failed feed requests.
	feedMaxBackoff = 30 * time.Second
	// feedPage is the most entries the server sends at once; a full page
	// means more may be waiting.
	feedPage = 1000
)

// revocations is the set of revoked, not yet expired token IDs.
type revocations struct {
	mu sync.RWMutex
	m  map[string]int64 // jti → exp, Unix seconds
}

func (r *revocations) revoked(jti string) bool {
	r.mu.RLock()
	_, ok := r.m[jti]
	r.mu.RUnlock()
	return ok
}

// add records entries and drops those whose token can no longer be
// accepted anyway (exp + leeway has passed).
func (r *revocations) add(entries []feedEntry, now time.Time, leeway time.Duration) {
	cutoff := now.Add(-leeway - time.Second).Unix()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range entries {
		if e.JTI != "" && e.Exp > cutoff {
			r.m[e.JTI] = e.Exp
		}
	}
	for jti, exp := range r.m {
		if exp <= cutoff {
			delete(r.m, jti)
		}
	}
}

// feedEntry is one revoked token in the feed.
type feedEntry struct {
	Seq int64  `json:"seq"`
	JTI string `json:"jti"`
	Exp int64  `json:"exp"`
}

// feedPageDoc is one response of the revocation feed.
type feedPageDoc struct {
	Revocations []feedEntry `json:"revocations"`
	Next        *int64      `json:"next"`
}

// feed follows the issuer's revocation feed:
// GET <endpoint>?after=<seq>&wait=<seconds> answers the revocations after
// seq, waiting up to wait seconds for one when there are none.
type feed struct {
	endpoint string
	client   *http.Client
	wait     time.Duration
	leeway   time.Duration
	now      func() time.Time
	log      *slog.Logger
	list     *revocations

	after    int64        // only touched by the goroutine that polls
	lastSync atomic.Int64 // Unix nanoseconds of the last good response
}

// poll makes one feed request and applies it. It reports how many entries
// came, and whether the feed moved (next changed).
func (f *feed) poll(ctx context.Context, wait time.Duration) (int, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+feedSlack)
	defer cancel()
	q := url.Values{"after": {strconv.FormatInt(f.after, 10)}, "wait": {strconv.Itoa(int(wait / time.Second))}}
	var page feedPageDoc
	if _, err := getJSON(ctx, f.client, f.endpoint+"?"+q.Encode(), &page); err != nil {
		return 0, false, fmt.Errorf("revocation feed: %w", err)
	}
	if page.Next == nil {
		return 0, false, fmt.Errorf("revocation feed: response without next")
	}
	f.list.add(page.Revocations, f.now(), f.leeway)
	if *page.Next < f.after {
		f.log.Warn("revocation feed went backwards; following it",
			slog.Int64("after", f.after), slog.Int64("next", *page.Next))
	}
	moved := *page.Next != f.after
	f.after = *page.Next
	f.lastSync.Store(time.Now().UnixNano())
	return len(page.Revocations), moved, nil
}

// sync reads the feed without waiting until it is drained.
func (f *feed) sync(ctx context.Context) error {
	for {
		n, _, err := f.poll(ctx, 0)
		if err != nil {
			return err
		}
		if n < feedPage {
			return nil
		}
	}
}

// run long-polls the feed until ctx ends, reconnecting with backoff.
func (f *feed) run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		start := time.Now()
		n, moved, err := f.poll(ctx, f.wait)
		var pause time.Duration
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failures++
			pause = backoff(failures, feedMaxBackoff)
			f.log.Warn("revocation feed request failed", slog.String(attrError, err.Error()), slog.Int("failures", failures))
		case n == 0 && !moved:
			failures = 0
			pause = feedMinInterval - time.Since(start)
		default:
			failures = 0
		}
		if pause > 0 {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}
