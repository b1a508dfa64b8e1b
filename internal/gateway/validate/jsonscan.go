package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// scanJSON walks body token by token (no recursion, so no stack growth
// whatever the nesting) and refuses nesting deeper than maxDepth, a key
// repeated in one object (compared case-insensitively, as Go's decoder
// matches struct fields, so {"amount":1,"AMOUNT":-1} cannot smuggle a
// second value past the schema), invalid JSON and trailing data.
func scanJSON(body []byte, maxDepth int) *Error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	// keys[i] holds the keys seen in the i-th open container; nil for arrays.
	var keys []map[string]struct{}
	// wantKey[i]: the next token in the i-th open container is a key.
	var wantKey []bool
	started := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if !started || len(keys) != 0 {
				return invalidJSON()
			}
			return nil
		}
		if err != nil {
			return invalidJSON()
		}
		if started && len(keys) == 0 {
			// A second top-level value.
			return invalidJSON()
		}
		started = true
		inObject := len(wantKey) > 0 && keys[len(keys)-1] != nil
		if inObject && wantKey[len(wantKey)-1] {
			k, ok := tok.(string)
			if !ok {
				if d, isDelim := tok.(json.Delim); isDelim && d == '}' {
					keys, wantKey = keys[:len(keys)-1], wantKey[:len(wantKey)-1]
					markValueDone(keys, wantKey)
					continue
				}
				return invalidJSON()
			}
			set := keys[len(keys)-1]
			fk := foldKey(k)
			if _, dup := set[fk]; dup {
				return refuse(http.StatusBadRequest, CodeDuplicateKey, "duplicate key %q in JSON body", safeName(k))
			}
			set[fk] = struct{}{}
			wantKey[len(wantKey)-1] = false
			continue
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if len(keys) >= maxDepth {
					return refuse(http.StatusBadRequest, CodeJSONTooDeep, "JSON body nested deeper than %d levels", maxDepth)
				}
				if t == '{' {
					keys = append(keys, map[string]struct{}{})
				} else {
					keys = append(keys, nil)
				}
				wantKey = append(wantKey, t == '{')
			case '}', ']':
				keys, wantKey = keys[:len(keys)-1], wantKey[:len(wantKey)-1]
				markValueDone(keys, wantKey)
			}
		default:
			markValueDone(keys, wantKey)
		}
	}
}

// markValueDone records that a complete value ended in the innermost
// container: in an object the next token is a key again.
func markValueDone(keys []map[string]struct{}, wantKey []bool) {
	if n := len(keys); n > 0 && keys[n-1] != nil {
		wantKey[n-1] = true
	}
}

// foldKey is the comparison form of a key: case-folded like Go's JSON
// decoder's field matching, and a bit wider (lower then upper, so the
// Kelvin sign and "k" collide too).
func foldKey(k string) string { return strings.ToUpper(strings.ToLower(k)) }

func invalidJSON() *Error {
	return refuse(http.StatusBadRequest, httpapi.CodeInvalidJSON, "request body is not a single valid JSON value")
}

// safeName bounds a client-supplied name before it goes into a message and
// keeps only printable ASCII.
func safeName(s string) string {
	const maxLen = 64
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxLen {
			b.WriteString("...")
			break
		}
		if r < 0x20 || r > 0x7e {
			b.WriteByte('?')
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
