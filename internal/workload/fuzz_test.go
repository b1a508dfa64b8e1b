package workload

import (
	"math/big"
	"testing"
)

// FuzzNormalizeSerial: a deny-list serial from the network never panics,
// and a normalised serial is a fixed point in serialHex's form.
func FuzzNormalizeSerial(f *testing.F) {
	for _, s := range []string{"0a1b", "0x00ff", "01:02", "", "-1", "zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := normalizeSerial(s)
		if n == "" {
			return
		}
		v, ok := new(big.Int).SetString(n, 16)
		if !ok || serialHex(v) != n || normalizeSerial(n) != n {
			t.Fatalf("normalizeSerial(%q) = %q is not canonical", s, n)
		}
	})
}

// FuzzParseStartTime: a process status line never panics the parser, and
// a parsed start time is never 0 (0 marks "unknown").
func FuzzParseStartTime(f *testing.F) {
	f.Add("42 (a) b (c)) S 1 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10")
	f.Add("1 (x")
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := parseStartTime(s); err == nil && v == 0 {
			t.Fatal("start time 0 accepted")
		}
	})
}
