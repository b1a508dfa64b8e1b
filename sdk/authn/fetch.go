package authn

import (
	"errors"
	"io"
	"math/rand/v2"
	"time"
)

// attrError is the log attribute key of an error.
const attrError = "error"

// errTooLarge is returned when a response exceeds maxDocument.
var errTooLarge = errors.New("response too large")

// limitedReader reads at most n bytes from r and fails, rather than
// truncating, on more.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// backoff is the wait before retry number failures (1, 2, ...): from half
// a second, doubling up to limit, with ±20% jitter.
func backoff(failures int, limit time.Duration) time.Duration {
	d := 500 * time.Millisecond
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	jitter := time.Duration(rand.Int64N(int64(d)/5 + 1))
	if rand.IntN(2) == 0 {
		return d - jitter
	}
	return d + jitter
}
