package redact

const (
	minCardDigits  = 13
	maxCardDigits  = 19
	minGroupDigits = 3 // shortest digit group of a separated card number
)

// luhn reports whether the digits of s, ignoring any other bytes, pass the
// Luhn check.
func luhn(s string) bool {
	sum, double := 0, false
	for i := len(s) - 1; i >= 0; i-- {
		c := s[i]
		if c < '0' || c > '9' {
			continue
		}
		sum += luhnDigit(int(c-'0'), double)
		double = !double
	}
	return sum%10 == 0
}

// luhnDigit is one digit's contribution to a Luhn sum: every second digit
// from the right is doubled, and a two-digit result counts as the sum of
// its digits.
func luhnDigit(d int, double bool) int {
	if !double {
		return d
	}
	if d *= 2; d > 9 {
		d -= 9
	}
	return d
}

// cardLikeUint reports whether u has 13 to 19 digits and passes the Luhn
// check.
func cardLikeUint(u uint64) bool {
	if u < 1e12 || u >= 1e19 { // not 13 to 19 digits
		return false
	}
	sum, double := 0, false
	for ; u > 0; u /= 10 {
		sum += luhnDigit(int(u%10), double)
		double = !double
	}
	return sum%10 == 0
}

// cardLikeInt is cardLikeUint for signed values: the sign is not part of a
// card number.
func cardLikeInt(n int64) bool {
	u := uint64(n)
	if n < 0 {
		u = -u
	}
	return cardLikeUint(u)
}

type digitGroup struct{ start, end int }

// cardSpans appends to out the spans of s that hold payment card numbers.
// skip holds sorted, disjoint spans already marked for redaction; they are
// treated as non-digits so that a second pass over the redacted text sees
// the same digit groups as the first.
//
// A candidate is a run of digit groups of at least minGroupDigits digits each,
// joined by a single space or dash. From each group, the longest run of
// groups with 13 to 19 digits in total that passes the Luhn check is a card
// number; scanning resumes after it.
func cardSpans(s string, skip, out []span) []span {
	var groupArr [8]digitGroup
	si := 0
	for i := 0; i < len(s); {
		limit := len(s)
		if si < len(skip) {
			if i >= skip[si].start {
				i = max(i, skip[si].end)
				si++
				continue
			}
			limit = skip[si].start
		}
		if !isDigit(s[i]) {
			i++
			continue
		}
		groups := groupArr[:0]
		for {
			j := i
			for j < limit && isDigit(s[j]) {
				j++
			}
			if j-i < minGroupDigits {
				i = j
				break
			}
			groups = append(groups, digitGroup{i, j})
			if j+1 < limit && (s[j] == ' ' || s[j] == '-') && isDigit(s[j+1]) {
				i = j + 1
				continue
			}
			i = j
			break
		}
		out = cardWindows(s, groups, out)
	}
	return out
}

func cardWindows(s string, g []digitGroup, out []span) []span {
	for a := 0; a < len(g); {
		best, n := -1, 0
		for b := a; b < len(g); b++ {
			n += g[b].end - g[b].start
			if n > maxCardDigits {
				break
			}
			if n >= minCardDigits && luhn(s[g[a].start:g[b].end]) {
				best = b
			}
		}
		if best < 0 {
			a++
			continue
		}
		out = append(out, span{g[a].start, g[best].end})
		a = best + 1
	}
	return out
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
