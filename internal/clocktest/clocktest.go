// Package clocktest is a settable clock for tests of time-based behaviour
// (token expiry, certificate rotation, leases): real time plus an offset
// that the test moves forward.
package clocktest

import (
	"sync"
	"time"
)

// Clock is real time shifted by an offset; its zero value is real time.
// It is safe for concurrent use.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}
