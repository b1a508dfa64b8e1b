package dpop

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// forbiddenHeaders are JOSE header parameters a proof must not carry: key
// references that would let the proof pick a key from elsewhere than its
// own jwk, critical extensions, and the unencoded-payload option.
var forbiddenHeaders = map[string]bool{
	"jku":  true,
	"x5u":  true,
	"x5c":  true,
	"crit": true,
	"b64":  true,
	"zip":  true,
	"enc":  true,
}

// checkHeader decodes the protected header segment of a compact JWS and
// refuses a header that is not a JSON object, repeats a parameter (parsers
// disagree on which copy wins), or holds a forbidden parameter.
func checkHeader(segment string) error {
	raw, err := base64.RawURLEncoding.DecodeString(segment)
	if err != nil {
		return errors.New("header is not base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return errors.New("header is not a JSON object")
	}
	seen := make(map[string]bool, 4)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errors.New("header is not a JSON object")
		}
		name, _ := tok.(string)
		if seen[name] {
			return fmt.Errorf("header repeats a parameter")
		}
		seen[name] = true
		if forbiddenHeaders[name] {
			return fmt.Errorf("header parameter %q is not allowed", name)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return errors.New("header is not a JSON object")
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return errors.New("header is not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("header has trailing data")
	}
	return nil
}
