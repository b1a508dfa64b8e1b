package directory

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// Limits of a service record.
const (
	// MaxIDLen bounds a SPIFFE ID in bytes.
	MaxIDLen = 2048
	// MaxNameLen bounds a service name (a DNS label).
	MaxNameLen = 63
	// MaxEndpoints bounds the endpoints of a service.
	MaxEndpoints = 16
	// MaxEndpointLen bounds one host:port endpoint in bytes.
	MaxEndpointLen = 261
	// MaxOwnerLen bounds the owner in bytes.
	MaxOwnerLen = 128
	// MaxDataClasses bounds the data classes of a service.
	MaxDataClasses = 16
	// MaxDataClassLen bounds one data class name in bytes.
	MaxDataClassLen = 32
	// MaxRegionLen bounds the region in bytes.
	MaxRegionLen = 64
	// MaxTrustDomainLen bounds the configured trust domain.
	MaxTrustDomainLen = 255
)

// ErrInvalid marks refused input; the *FieldError names the field.
var ErrInvalid = errors.New("invalid service")

// ErrNotFound is returned when no service has the given ID or name.
var ErrNotFound = errors.New("service not found")

// ErrConflict is returned when another service already has the name.
var ErrConflict = errors.New("service name conflict")

// FieldError is a refusal of one field of a service.
type FieldError struct {
	// Field is the JSON name of the field ("id", "endpoints[2]", ...).
	Field string
	// Reason says what is wrong, safe to show to the client.
	Reason string
	// Kind is ErrInvalid or ErrConflict.
	Kind error
}

// Error returns "field: reason".
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap returns the kind of refusal.
func (e *FieldError) Unwrap() error { return e.Kind }

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...), Kind: ErrInvalid}
}

var (
	trustDomainRE = regexp.MustCompile(`^[a-z0-9._-]+$`)
	pathSegmentRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	nameRE        = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	ownerRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]*$`)
	dataClassRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	regionRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	hostLabelRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
)

// validateTrustDomain checks a trust domain name (SPIFFE ID spec §2.1).
func validateTrustDomain(td string) error {
	if td == "" || len(td) > MaxTrustDomainLen || !trustDomainRE.MatchString(td) {
		return fmt.Errorf("trust domain %q must be 1 to %d characters of lowercase letters, digits, '.', '-' and '_'",
			clip(td, 64), MaxTrustDomainLen)
	}
	return nil
}

// validateID checks that id is a workload SPIFFE ID of trustDomain.
func validateID(id, trustDomain string) error {
	if id == "" {
		return invalid("id", "is required")
	}
	if len(id) > MaxIDLen {
		return invalid("id", "is %d bytes; the limit is %d", len(id), MaxIDLen)
	}
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return invalid("id", "must be a SPIFFE ID spiffe://<trust domain>/<path>")
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok || path == "" {
		return invalid("id", "must have a path after the trust domain (spiffe://%s/...)", trustDomain)
	}
	if validateTrustDomain(td) != nil {
		return invalid("id", "has an invalid trust domain")
	}
	if td != trustDomain {
		return invalid("id", "trust domain %q is not this control plane's (%q)", clip(td, 64), trustDomain)
	}
	for seg := range strings.SplitSeq(path, "/") {
		switch {
		case seg == "":
			return invalid("id", "path has an empty segment")
		case seg == "." || seg == "..":
			return invalid("id", "path must not contain '.' or '..' segments")
		case !pathSegmentRE.MatchString(seg):
			return invalid("id", "path segments may hold only letters, digits, '.', '-' and '_'")
		}
	}
	return nil
}

// validateEndpoint checks one host:port.
func validateEndpoint(field, ep string) error {
	if len(ep) > MaxEndpointLen {
		return invalid(field, "is %d bytes; the limit is %d", len(ep), MaxEndpointLen)
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return invalid(field, "must be host:port")
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
		return invalid(field, "port must be a number from 1 to 65535")
	}
	if host == "" {
		return invalid(field, "host is empty")
	}
	if ip := net.ParseIP(host); ip != nil {
		if strings.Contains(host, "%") || ip.IsUnspecified() {
			return invalid(field, "host must be a routable address, not %s", host)
		}
		return nil
	}
	if len(host) > 253 {
		return invalid(field, "host name is longer than 253 characters")
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(host, "."), ".") {
		if !hostLabelRE.MatchString(label) {
			return invalid(field, "host must be an IP address or a DNS name")
		}
	}
	return nil
}

// Validate checks s against the directory's rules for trustDomain and
// returns a *FieldError (wrapping ErrInvalid) naming the first bad field.
func (s *Service) Validate(trustDomain string) error {
	if err := validateID(s.ID, trustDomain); err != nil {
		return err
	}
	if !nameRE.MatchString(s.Name) {
		return invalid("name", "must be a DNS label: 1 to %d lowercase letters, digits and '-', not starting or ending with '-'", MaxNameLen)
	}
	if len(s.Endpoints) == 0 {
		return invalid("endpoints", "at least one host:port is required")
	}
	if len(s.Endpoints) > MaxEndpoints {
		return invalid("endpoints", "has %d entries; the limit is %d", len(s.Endpoints), MaxEndpoints)
	}
	seen := make(map[string]bool, len(s.Endpoints))
	for i, ep := range s.Endpoints {
		field := fmt.Sprintf("endpoints[%d]", i)
		if err := validateEndpoint(field, ep); err != nil {
			return err
		}
		if seen[ep] {
			return invalid(field, "duplicates an earlier endpoint")
		}
		seen[ep] = true
	}
	if s.Owner == "" {
		return invalid("owner", "is required")
	}
	if len(s.Owner) > MaxOwnerLen || !ownerRE.MatchString(s.Owner) {
		return invalid("owner", "must be 1 to %d letters, digits, '.', '_', '@' and '-'", MaxOwnerLen)
	}
	if len(s.DataClasses) > MaxDataClasses {
		return invalid("data_classes", "has %d entries; the limit is %d", len(s.DataClasses), MaxDataClasses)
	}
	classes := make(map[string]bool, len(s.DataClasses))
	for i, c := range s.DataClasses {
		field := fmt.Sprintf("data_classes[%d]", i)
		if len(c) > MaxDataClassLen || !dataClassRE.MatchString(c) {
			return invalid(field, "must be a name such as \"public\" or \"restricted\": 1 to %d lowercase letters, digits, '_' and '-'", MaxDataClassLen)
		}
		if classes[c] {
			return invalid(field, "duplicates an earlier data class")
		}
		classes[c] = true
	}
	if s.Region != "" && (len(s.Region) > MaxRegionLen || !regionRE.MatchString(s.Region)) {
		return invalid("region", "must be 1 to %d lowercase letters, digits and '-' (such as eu or eu-west-1)", MaxRegionLen)
	}
	return nil
}

// clip cuts s to n bytes for messages.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
