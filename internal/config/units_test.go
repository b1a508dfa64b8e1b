package config

import (
	"math"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// unmarshalScalar decodes src, a YAML value, with u's UnmarshalYAML.
func unmarshalScalar(t *testing.T, src string, u yaml.Unmarshaler) error {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("yaml.Unmarshal(%q): %v", src, err)
	}
	return u.UnmarshalYAML(doc.Content[0])
}

func TestDuration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		yaml string
		want time.Duration
		ok   bool
	}{
		{"10s", 10 * time.Second, true},
		{"1m30s", 90 * time.Second, true},
		{"24h", 24 * time.Hour, true},
		{"1.5s", 1500 * time.Millisecond, true},
		{"250ms", 250 * time.Millisecond, true},
		{`"10s"`, 10 * time.Second, true},
		{"!!str 10s", 10 * time.Second, true},
		{"10", 0, false},
		{`"10"`, 0, false},
		{"0", 0, false},
		{"1.5", 0, false},
		{"ten", 0, false},
		{"10 s", 0, false},
		{"10S", 0, false},
		{"[10s]", 0, false},
		{"{a: 1}", 0, false},
		{"9999999999h", 0, false},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			t.Parallel()
			var d Duration
			err := unmarshalScalar(t, tc.yaml, &d)
			if (err == nil) != tc.ok {
				t.Fatalf("UnmarshalYAML(%q) error = %v, want ok=%v", tc.yaml, err, tc.ok)
			}
			if tc.ok && time.Duration(d) != tc.want {
				t.Errorf("UnmarshalYAML(%q) = %v, want %v", tc.yaml, time.Duration(d), tc.want)
			}
		})
	}
}

func TestDurationString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{10 * time.Second, "10s"},
		{time.Minute, "1m"},
		{90 * time.Second, "1m30s"},
		{10 * time.Minute, "10m"},
		{time.Hour, "1h"},
		{24 * time.Hour, "24h"},
		{70 * time.Minute, "1h10m"},
		{time.Hour + time.Second, "1h0m1s"},
		{1500 * time.Millisecond, "1.5s"},
		{100 * time.Millisecond, "100ms"},
		{-time.Minute, "-1m"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			t.Parallel()
			got := Duration(tc.d).String()
			if got != tc.want {
				t.Errorf("Duration(%v).String() = %q, want %q", tc.d, got, tc.want)
			}
			back, err := parseDuration(got)
			if err != nil || time.Duration(back) != tc.d {
				t.Errorf("parseDuration(%q) = %v, %v; want %v", got, time.Duration(back), err, tc.d)
			}
		})
	}
}

func TestByteSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		yaml string
		want ByteSize
		ok   bool
	}{
		{"0", 0, true},
		{"1024", KiB, true},
		{"0x400", KiB, true},
		{"1_024", KiB, true},
		{"8MiB", 8 * MiB, true},
		{"8 MiB", 8 * MiB, true},
		{`"8MiB"`, 8 * MiB, true},
		{"1KiB", 1024, true},
		{"2GiB", 2 * GiB, true},
		{"1KB", 1000, true},
		{"1500 KB", 1500 * KB, true},
		{"3MB", 3000000, true},
		{"1GB", 1000000000, true},
		{"512B", 512, true},
		{"0B", 0, true},
		{"8589934591GiB", 8589934591 * GiB, true},
		{"8589934592GiB", 0, false},
		{"99999999999999999999B", 0, false},
		{"-1", 0, false},
		{"-1KiB", 0, false},
		{`"1024"`, 0, false},
		{"1.5MiB", 0, false},
		{"1e6", 0, false},
		{"8mib", 0, false},
		{"8kb", 0, false},
		{"8TiB", 0, false},
		{"8  MiB", 0, false},
		{"MiB", 0, false},
		{"", 0, false},
		{"[1]", 0, false},
		{"true", 0, false},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			t.Parallel()
			b := ByteSize(-1)
			err := unmarshalScalar(t, "v: "+tc.yaml+"\n", &mapValue{&b})
			if (err == nil) != tc.ok {
				t.Fatalf("UnmarshalYAML(%q) error = %v, want ok=%v", tc.yaml, err, tc.ok)
			}
			if tc.ok && b != tc.want {
				t.Errorf("UnmarshalYAML(%q) = %d, want %d", tc.yaml, b, tc.want)
			}
		})
	}
}

// mapValue unmarshals the value of the one-key mapping "v: ..." into b, so
// that an empty value can be tested.
type mapValue struct{ b *ByteSize }

func (m *mapValue) UnmarshalYAML(n *yaml.Node) error { return m.b.UnmarshalYAML(n.Content[1]) }

func TestByteSizeString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		b    ByteSize
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1023, "1023B"},
		{KiB, "1KiB"},
		{1536, "1536B"},
		{8 * MiB, "8MiB"},
		{MiB + 1, "1048577B"},
		{1000, "1KB"},
		{1500 * KB, "1500KB"},
		{2 * MB, "2MB"},
		{GiB, "1GiB"},
		{GB, "1GB"},
		{-KiB, "-1KiB"},
		{math.MaxInt64, "9223372036854775807B"},
		{math.MinInt64, "-8589934592GiB"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			t.Parallel()
			if got := tc.b.String(); got != tc.want {
				t.Errorf("ByteSize(%d).String() = %q, want %q", int64(tc.b), got, tc.want)
			}
			if tc.b < 0 {
				return
			}
			back, err := parseByteSize(tc.b.String())
			if err != nil || back != tc.b {
				t.Errorf("parseByteSize(%q) = %d, %v; want %d", tc.b.String(), back, err, tc.b)
			}
		})
	}
}

func TestUnitsMarshal(t *testing.T) {
	t.Parallel()
	out, err := yaml.Marshal(struct {
		D Duration `yaml:"d"`
		B ByteSize `yaml:"b"`
	}{Duration(90 * time.Second), 8 * MiB})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), "d: 1m30s\nb: 8MiB"; got != want {
		t.Errorf("yaml.Marshal = %q, want %q", got, want)
	}
}
