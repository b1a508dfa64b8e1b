package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written in YAML as a duration string with a
// unit, such as "10s", "1m30s" or "24h". A bare number is refused: "10"
// could mean seconds or nanoseconds, and a config file should not make the
// reader guess.
type Duration time.Duration

// String returns d in the form accepted by UnmarshalYAML, with zero minute
// and second parts left off ("24h", "1m", "1h30m", "10s", "1.5s").
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalYAML writes d as its String form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string with a unit from a scalar node.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	const want = `must be a duration with a unit, such as "10s" or "1m30s"`
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s, got %s", want, describe(n))
	}
	if tag := n.ShortTag(); tag != strTag {
		return fmt.Errorf("%s, got %s", want, describe(n))
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%s, got %s", want, quote(n.Value))
	}
	*d = v
	return nil
}

func parseDuration(s string) (Duration, error) {
	if !strings.ContainsFunc(s, unicode.IsLetter) {
		return 0, errors.New("missing unit")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	return Duration(v), nil
}

// ByteSize is a size in bytes. In YAML it is an integer number of bytes or a
// string of a whole number followed by a unit: B, KiB, MiB, GiB (powers of
// 1024) or KB, MB, GB (powers of 1000), such as "8MiB" or "1500 KB".
type ByteSize int64

// Units of ByteSize.
const (
	Byte ByteSize = 1
	KiB  ByteSize = 1 << 10
	MiB  ByteSize = 1 << 20
	GiB  ByteSize = 1 << 30
	KB   ByteSize = 1000
	MB   ByteSize = 1000 * KB
	GB   ByteSize = 1000 * MB
)

// byteUnits lists the units in the order String prefers them.
var byteUnits = []struct {
	name string
	size ByteSize
}{
	{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"GB", GB}, {"MB", MB}, {"KB", KB},
	{"B", Byte},
}

// String returns b with the largest unit that divides it exactly, binary
// units first: "8MiB", "1KiB", "1500KB", "123B".
func (b ByteSize) String() string {
	sign := ""
	// Converting before negating keeps math.MinInt64 right.
	u := uint64(b)
	if b < 0 {
		sign, u = "-", -u
	}
	for _, unit := range byteUnits {
		if u != 0 && u%uint64(unit.size) == 0 {
			return sign + strconv.FormatUint(u/uint64(unit.size), 10) + unit.name
		}
	}
	return "0B"
}

// MarshalYAML writes b as its String form.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// UnmarshalYAML reads a byte size from an integer or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	const want = `must be a number of bytes or a size with a unit (B, KiB, MiB, GiB, KB, MB, GB), such as "8MiB"`
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s, got %s", want, describe(n))
	}
	switch n.ShortTag() {
	case intTag:
		var v int64
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("%s, got %s (out of range)", want, quote(n.Value))
		}
		if v < 0 {
			return fmt.Errorf("%s, got %s", want, quote(n.Value))
		}
		*b = ByteSize(v)
		return nil
	case strTag:
		v, err := parseByteSize(n.Value)
		if err != nil {
			return fmt.Errorf("%s, got %s", want, quote(n.Value))
		}
		*b = v
		return nil
	default:
		return fmt.Errorf("%s, got %s", want, describe(n))
	}
}

// parseByteSize parses a whole number, an optional space and a unit.
func parseByteSize(s string) (ByteSize, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i <= 0 {
		return 0, errors.New("missing number or unit")
	}
	num, unit := s[:i], strings.TrimPrefix(s[i:], " ")
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, err
	}
	for _, u := range byteUnits {
		if u.name == unit {
			if n > math.MaxInt64/int64(u.size) {
				return 0, errors.New("too large")
			}
			return ByteSize(n) * u.size, nil
		}
	}
	return 0, fmt.Errorf("unknown unit %q", unit)
}
