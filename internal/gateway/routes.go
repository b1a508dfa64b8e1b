package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bulwarksec/bulwark/internal/config"
	"github.com/bulwarksec/bulwark/internal/gateway/ratelimit"
	"github.com/bulwarksec/bulwark/internal/gateway/validate"
)

// WAFMode is how a route's requests are screened by the Core Rule Set.
type WAFMode string

// WAF modes.
const (
	// WAFOff does not screen the route's requests.
	WAFOff WAFMode = "off"
	// WAFDetect screens and audits, but lets matching requests pass.
	WAFDetect WAFMode = "detect"
	// WAFBlock refuses matching requests with 403 (the default).
	WAFBlock WAFMode = "block"
)

// Limits of a routes file.
const (
	// MaxRoutesFileBytes bounds the routes file read.
	MaxRoutesFileBytes = 1 << 20
	// MaxRoutes bounds the number of routes.
	MaxRoutes = 1000
	// MaxRouteTimeout bounds a route's timeout.
	MaxRouteTimeout = 5 * time.Minute
	// MaxRouteBodyBytes bounds a route's max_body_bytes.
	MaxRouteBodyBytes = 64 << 20
	// MaxRetries bounds a route's retries (the upstream pool's limit).
	MaxRetries = 3
)

// Defaults of a routes file's optional fields.
const (
	DefaultRouteTimeout      = 5 * time.Second
	DefaultRouteRetries      = 1
	DefaultRouteMaxBodyBytes = 1 << 20
)

// Default rate limits, applied when the routes file leaves one out: a limit
// cannot be switched off by omission.
var (
	DefaultPerIP     = ratelimit.Limit{Rate: 50, Burst: 100}
	DefaultPerClient = ratelimit.Limit{Rate: 100, Burst: 200}
	DefaultPerUser   = ratelimit.Limit{Rate: 20, Burst: 40}
)

// Routes is a parsed routes file: the rate limits, whether allowed requests
// are audited too, and the routes.
type Routes struct {
	// PerIP, PerClient and PerUser are the rate limits (requests per
	// second) per source address, per OAuth client and per end user.
	PerIP, PerClient, PerUser ratelimit.Limit
	// AuditAllowed sends an API Activity event for every request, not only
	// for refusals.
	AuditAllowed bool
	// Routes are the routes in file order.
	Routes []*Route
	// byLen holds the routes sorted by decreasing path length, for
	// matching the most specific prefix first.
	byLen []*Route
}

// Route is one route: which requests it matches and how they are checked and
// where they go.
type Route struct {
	// Name identifies the route: the Cedar Bulwark::Route entity id.
	Name string
	// Methods the route accepts.
	Methods []string
	// Path is the path prefix matched on whole segments.
	Path string
	// Service is the upstream service's name in the service directory.
	Service string
	// UpstreamPath replaces the matched Path prefix; empty keeps it.
	UpstreamPath string
	// Scopes the token must all carry.
	Scopes []string
	// Action is the Cedar action; empty means read for GET and HEAD,
	// write otherwise.
	Action string
	// OpenAPI is the OpenAPI document's path, if any (resolved against the
	// routes file's directory).
	OpenAPI string
	// WAF is the route's WAF mode.
	WAF WAFMode
	// Timeout bounds each attempt upstream.
	Timeout time.Duration
	// Retries is how many times a failed idempotent request is retried.
	Retries int
	// MaxBodyBytes bounds the request body.
	MaxBodyBytes int64

	validator *validate.Validator
}

// ActionFor returns the Cedar action of a request with method on r.
func (r *Route) ActionFor(method string) string {
	if r.Action != "" {
		return r.Action
	}
	if method == http.MethodGet || method == http.MethodHead {
		return "read"
	}
	return "write"
}

// rewrite returns the upstream path of a request path matched by r.
func (r *Route) rewrite(p string) string {
	if r.UpstreamPath == "" {
		return p
	}
	rest := strings.TrimPrefix(p, strings.TrimSuffix(r.Path, "/"))
	if rest == "" {
		return r.UpstreamPath
	}
	return strings.TrimSuffix(r.UpstreamPath, "/") + rest
}

// matches reports whether p is r.Path or below it, on segment boundaries.
func (r *Route) matches(p string) bool {
	if r.Path == "/" {
		return true
	}
	return p == r.Path || strings.HasPrefix(p, r.Path+"/")
}

// Match returns the most specific route for a request: the longest path
// prefix, then the route of that prefix that accepts method. It returns nil
// and the methods allowed when the path matched but not the method, and nil
// and nil when nothing matched.
func (rs *Routes) Match(method, p string) (*Route, []string) {
	var allowed []string
	matchedLen := -1
	for _, r := range rs.byLen {
		if matchedLen >= 0 && len(r.Path) < matchedLen {
			break
		}
		if !r.matches(p) {
			continue
		}
		matchedLen = len(r.Path)
		if slices.Contains(r.Methods, method) {
			return r, nil
		}
		allowed = append(allowed, r.Methods...)
	}
	slices.Sort(allowed)
	return nil, slices.Compact(allowed)
}

// rawRoutes is the routes file as written.
type rawRoutes struct {
	RateLimits struct {
		PerIP     *rawLimit `yaml:"per_ip"`
		PerClient *rawLimit `yaml:"per_client"`
		PerUser   *rawLimit `yaml:"per_user"`
	} `yaml:"rate_limits"`
	AuditAllowed bool       `yaml:"audit_allowed"`
	Routes       []rawRoute `yaml:"routes"`
}

type rawLimit struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

type rawRoute struct {
	Name         string   `yaml:"name"`
	Methods      []string `yaml:"methods"`
	Path         string   `yaml:"path"`
	Service      string   `yaml:"service"`
	UpstreamPath string   `yaml:"upstream_path"`
	Scopes       []string `yaml:"scopes"`
	Action       string   `yaml:"action"`
	OpenAPI      string   `yaml:"openapi"`
	WAF          string   `yaml:"waf"`
	Timeout      string   `yaml:"timeout"`
	Retries      *int     `yaml:"retries"`
	MaxBodyBytes string   `yaml:"max_body_bytes"`
}

var (
	routeNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	actionRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	scopeRE     = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]{1,128}$`)
	yamlLineRE  = regexp.MustCompile(`line ([0-9]+): (.*)`)
	knownMethod = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}
)

// RoutesError is an invalid routes file: every problem found, each naming
// file:line.
type RoutesError struct {
	Problems []string
}

// Error returns the problems, one a line.
func (e *RoutesError) Error() string {
	return "invalid routes file:\n" + strings.Join(e.Problems, "\n")
}

// LoadRoutes reads and validates the routes file at path. OpenAPI documents
// named by routes are read relative to the file's directory.
func LoadRoutes(p string) (*Routes, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("routes file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxRoutesFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("routes file %s: %w", p, err)
	}
	if len(data) > MaxRoutesFileBytes {
		return nil, fmt.Errorf("routes file %s: larger than %d bytes", p, MaxRoutesFileBytes)
	}
	return ParseRoutes(data, p, filepath.Dir(p))
}

// ParseRoutes parses a routes file's content. name names it in errors; dir is
// where relative OpenAPI paths are read from ("" refuses every openapi key).
func ParseRoutes(data []byte, name, dir string) (*Routes, error) {
	if len(data) > MaxRoutesFileBytes {
		return nil, fmt.Errorf("routes file %s: larger than %d bytes", name, MaxRoutesFileBytes)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &RoutesError{Problems: []string{yamlProblem(name, err)}}
	}
	if n := findAlias(&doc); n != nil {
		return nil, &RoutesError{Problems: []string{fmt.Sprintf("%s:%d: YAML aliases are not allowed", name, n.Line)}}
	}
	var raw rawRoutes
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, &RoutesError{Problems: []string{yamlProblem(name, err)}}
	}
	var top *yaml.Node
	if len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
		top = doc.Content[0]
	}
	p := &parser{name: name}
	rs := &Routes{AuditAllowed: raw.AuditAllowed}
	limits := mapValue(top, "rate_limits")
	rs.PerIP = p.limit(raw.RateLimits.PerIP, DefaultPerIP, mapValue(limits, "per_ip"), "rate_limits.per_ip")
	rs.PerClient = p.limit(raw.RateLimits.PerClient, DefaultPerClient, mapValue(limits, "per_client"), "rate_limits.per_client")
	rs.PerUser = p.limit(raw.RateLimits.PerUser, DefaultPerUser, mapValue(limits, "per_user"), "rate_limits.per_user")

	items := mapValue(top, "routes")
	switch {
	case len(raw.Routes) == 0:
		p.addf(top, "routes: at least one route is required")
	case len(raw.Routes) > MaxRoutes:
		p.addf(items, "routes: at most %d routes, got %d", MaxRoutes, len(raw.Routes))
	}
	names := map[string]bool{}
	type pm struct{ path, method string }
	seen := map[pm]string{}
	for i := range raw.Routes {
		if len(raw.Routes) > MaxRoutes {
			break
		}
		var item *yaml.Node
		if items != nil && i < len(items.Content) {
			item = items.Content[i]
		}
		r := p.route(&raw.Routes[i], item, i, dir)
		if r == nil {
			continue
		}
		if names[r.Name] {
			p.addf(mapKey(item, "name"), "routes[%d].name: %q is used by another route", i, r.Name)
		}
		names[r.Name] = true
		for _, m := range r.Methods {
			if other, dup := seen[pm{r.Path, m}]; dup {
				p.addf(mapKey(item, "path"), "routes[%d]: %s %s is already routed by %q", i, m, r.Path, other)
			}
			seen[pm{r.Path, m}] = r.Name
		}
		rs.Routes = append(rs.Routes, r)
	}
	if len(p.problems) > 0 {
		return nil, &RoutesError{Problems: p.problems}
	}
	rs.byLen = slices.Clone(rs.Routes)
	slices.SortStableFunc(rs.byLen, func(a, b *Route) int { return len(b.Path) - len(a.Path) })
	return rs, nil
}

type parser struct {
	name     string
	problems []string
	// validators are compiled once per document and body limit.
	validators map[string]*validate.Validator
}

func (p *parser) addf(at *yaml.Node, format string, args ...any) {
	loc := p.name
	if at != nil {
		loc += ":" + strconv.Itoa(at.Line)
	}
	p.problems = append(p.problems, loc+": "+fmt.Sprintf(format, args...))
}

func (p *parser) limit(raw *rawLimit, def ratelimit.Limit, at *yaml.Node, key string) ratelimit.Limit {
	if raw == nil {
		return def
	}
	l := ratelimit.Limit{Rate: raw.Rate, Burst: raw.Burst}
	if err := l.Validate(); err != nil {
		p.addf(at, "%s: %v", key, err)
	}
	return l
}

func (p *parser) route(raw *rawRoute, item *yaml.Node, i int, dir string) *Route {
	before := len(p.problems)
	at := func(key string) *yaml.Node {
		if n := mapKey(item, key); n != nil {
			return n
		}
		return item
	}
	field := func(key string) string { return fmt.Sprintf("routes[%d].%s", i, key) }
	r := &Route{Name: raw.Name, Path: raw.Path, Service: raw.Service, UpstreamPath: raw.UpstreamPath,
		Scopes: raw.Scopes, Action: raw.Action, WAF: WAFMode(raw.WAF)}
	if !routeNameRE.MatchString(r.Name) {
		p.addf(at("name"), "%s: %q must be a DNS label (lowercase letters, digits, '-', at most 63)", field("name"), r.Name)
	}
	if len(raw.Methods) == 0 {
		p.addf(at("methods"), "%s: at least one method is required", field("methods"))
	}
	for _, m := range raw.Methods {
		if !slices.Contains(knownMethod, m) {
			p.addf(at("methods"), "%s: %q is not one of %s", field("methods"), m, strings.Join(knownMethod, ", "))
			continue
		}
		if !slices.Contains(r.Methods, m) {
			r.Methods = append(r.Methods, m)
		}
	}
	if err := checkRoutePath(r.Path); err != nil {
		p.addf(at("path"), "%s: %v", field("path"), err)
	}
	if r.UpstreamPath != "" {
		if err := checkRoutePath(r.UpstreamPath); err != nil {
			p.addf(at("upstream_path"), "%s: %v", field("upstream_path"), err)
		}
	}
	if !routeNameRE.MatchString(r.Service) {
		p.addf(at("service"), "%s: %q must be a service name (a DNS label)", field("service"), r.Service)
	}
	for _, s := range r.Scopes {
		if !scopeRE.MatchString(s) {
			p.addf(at("scopes"), "%s: %q is not a valid OAuth scope", field("scopes"), s)
		}
	}
	if r.Action != "" && !actionRE.MatchString(r.Action) {
		p.addf(at("action"), "%s: %q is not a Cedar action name", field("action"), r.Action)
	}
	switch r.WAF {
	case "":
		r.WAF = WAFBlock
	case WAFOff, WAFDetect, WAFBlock:
	default:
		p.addf(at("waf"), "%s: %q must be off, detect or block", field("waf"), raw.WAF)
	}
	r.Timeout = DefaultRouteTimeout
	if raw.Timeout != "" {
		var d config.Duration
		if err := d.UnmarshalYAML(&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: raw.Timeout}); err != nil {
			p.addf(at("timeout"), "%s: %v", field("timeout"), err)
		} else if time.Duration(d) <= 0 || time.Duration(d) > MaxRouteTimeout {
			p.addf(at("timeout"), "%s: must be more than 0 and at most %s", field("timeout"), MaxRouteTimeout)
		} else {
			r.Timeout = time.Duration(d)
		}
	}
	r.Retries = DefaultRouteRetries
	if raw.Retries != nil {
		if *raw.Retries < 0 || *raw.Retries > MaxRetries {
			p.addf(at("retries"), "%s: must be 0 to %d", field("retries"), MaxRetries)
		}
		r.Retries = *raw.Retries
	}
	r.MaxBodyBytes = DefaultRouteMaxBodyBytes
	if raw.MaxBodyBytes != "" {
		var b config.ByteSize
		if err := b.UnmarshalYAML(&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: raw.MaxBodyBytes}); err != nil {
			p.addf(at("max_body_bytes"), "%s: %v", field("max_body_bytes"), err)
		} else if b <= 0 || b > MaxRouteBodyBytes {
			p.addf(at("max_body_bytes"), "%s: must be more than 0 and at most %d bytes", field("max_body_bytes"), MaxRouteBodyBytes)
		} else {
			r.MaxBodyBytes = int64(b)
		}
	}
	if raw.OpenAPI != "" && len(p.problems) == before {
		p.openAPI(r, raw.OpenAPI, dir, at("openapi"), field("openapi"))
	}
	if len(p.problems) > before {
		return nil
	}
	return r
}

// openAPI reads and compiles the route's OpenAPI document.
func (p *parser) openAPI(r *Route, file, dir string, at *yaml.Node, field string) {
	if dir == "" {
		p.addf(at, "%s: no directory to read %q from", field, file)
		return
	}
	full := file
	if !filepath.IsAbs(full) {
		full = filepath.Join(dir, file)
	}
	key := full + "\x00" + strconv.FormatInt(r.MaxBodyBytes, 10)
	if v, ok := p.validators[key]; ok {
		r.OpenAPI, r.validator = full, v
		return
	}
	spec, err := readBounded(full, MaxRoutesFileBytes*8)
	if err != nil {
		p.addf(at, "%s: %v", field, err)
		return
	}
	v, err := validate.New(validate.Config{Spec: spec, MaxBodyBytes: r.MaxBodyBytes})
	if err != nil {
		p.addf(at, "%s: %s: %v", field, file, err)
		return
	}
	if p.validators == nil {
		p.validators = map[string]*validate.Validator{}
	}
	p.validators[key] = v
	r.OpenAPI, r.validator = full, v
}

func readBounded(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return b, nil
}

// checkRoutePath accepts an absolute, clean path without a trailing slash
// (except "/"), of unreserved characters.
func checkRoutePath(p string) error {
	switch {
	case p == "":
		return errors.New("is required")
	case len(p) > 1024:
		return errors.New("longer than 1024 bytes")
	case p[0] != '/':
		return fmt.Errorf("%q must start with /", p)
	case path.Clean(p) != p:
		return fmt.Errorf("%q is not clean (no //, ., .. or trailing /)", p)
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/-._~", c)) {
			return fmt.Errorf("%q: character %q is not allowed", p, c)
		}
	}
	return nil
}

// yamlProblem formats a YAML error as file:line: message.
func yamlProblem(name string, err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	var out []string
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if m := yamlLineRE.FindStringSubmatch(l); m != nil {
			text := m[2]
			if f, ok := strings.CutPrefix(text, "field "); ok {
				if k, _, ok := strings.Cut(f, " not found"); ok {
					text = fmt.Sprintf("unknown key %q", k)
				}
			}
			out = append(out, name+":"+m[1]+": "+text)
			continue
		}
		out = append(out, name+": "+l)
	}
	return strings.Join(out, "\n")
}

// findAlias returns the first alias node under n.
func findAlias(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		return n
	}
	for _, c := range n.Content {
		if a := findAlias(c); a != nil {
			return a
		}
	}
	return nil
}

// mapKey returns the key node of key in mapping m, or nil.
func mapKey(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i]
		}
	}
	return nil
}

// mapValue returns the value node of key in mapping m, or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
