package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Validate checks every field of c and returns an *Error listing each
// problem by key, or nil. It accepts Store.Path empty (not yet resolved).
func (c *Config) Validate() error {
	var v validator
	v.path("data_dir", c.DataDir, true)
	v.listen("listen", c.Listen)
	c.TLS.validate(&v)
	c.Store.validate(&v)
	c.Audit.validate(&v)
	c.Identity.validate(&v)
	c.CA.validate(&v)
	c.Agent.validate(&v)
	c.Gateway.validate(&v)
	c.Policy.validate(&v)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "text")
	if len(v.errs) == 0 {
		return nil
	}
	return &Error{Problems: v.errs}
}

func (t *TLS) validate(v *validator) {
	v.path("tls.cert_file", t.CertFile, false)
	v.path("tls.key_file", t.KeyFile, false)
	const both = "; set both tls.cert_file and tls.key_file, or neither to use a generated self-signed certificate"
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		v.fail("tls.cert_file", "tls.key_file must also be set"+both)
	case t.CertFile == "" && t.KeyFile != "":
		v.fail("tls.key_file", "tls.cert_file must also be set"+both)
	}
	if t.MinVersion != "1.2" && t.MinVersion != "1.3" {
		v.fail("tls.min_version", `must be "1.2" or "1.3", got %s (versions below 1.2 are not allowed)`, quote(t.MinVersion))
	}
}

func (s *Store) validate(v *validator) {
	v.oneOf("store.driver", s.Driver, DriverSQLite, DriverPostgres)
	switch s.Driver {
	case DriverSQLite:
		v.path("store.path", s.Path, false)
		if s.DSN != "" {
			v.fail("store.dsn", `is used only with store.driver "postgres"`)
		}
	case DriverPostgres:
		if s.Path != "" {
			v.fail("store.path", `is used only with store.driver "sqlite"`)
		}
		if s.DSN == "" {
			v.fail("store.dsn", `is required with store.driver "postgres"`)
		} else if msg := checkDSN(s.DSN); msg != "" {
			v.fail("store.dsn", "%s", msg)
		}
	}
	v.intRange("store.max_open_conns", s.MaxOpenConns, 1, 1000)
}

func (a *Audit) validate(v *validator) {
	if !validOrigin(a.Origin) {
		v.fail("audit.origin", "must be non-empty printable ASCII without spaces or '+', got %s", quote(a.Origin))
	}
	if d, lo, hi := a.CheckpointInterval, Duration(time.Second), Duration(24*time.Hour); d < lo || d > hi {
		v.fail("audit.checkpoint_interval", "must be between %s and %s, got %s", lo, hi, d)
	}
	v.intRange("audit.max_batch_events", a.MaxBatchEvents, 1, 10000)
	reqOK := v.sizeRange("audit.max_request_bytes", a.MaxRequestBytes, 1*KiB, 256*MiB)
	eventOK := v.sizeRange("audit.max_event_bytes", a.MaxEventBytes, 1*KiB, 64*MiB)
	if reqOK && eventOK && a.MaxEventBytes > a.MaxRequestBytes {
		v.fail("audit.max_event_bytes", "must not exceed audit.max_request_bytes (%s), got %s", a.MaxRequestBytes, a.MaxEventBytes)
	}
	v.intRange("audit.commit_batch", a.CommitBatch, 1, 65536)
}

func (id *Identity) validate(v *validator) {
	if id.Issuer != "" {
		if msg := checkIssuer(id.Issuer); msg != "" {
			v.fail("identity.issuer", "%s, got %s", msg, quote(id.Issuer))
		}
	}
	v.oneOf("identity.signing_alg", id.SigningAlg, AlgEdDSA, AlgES256, AlgPS256)
	v.durationRange("identity.key_rotation_interval", id.KeyRotationInterval, time.Hour, 8760*time.Hour)
	if v.durationRange("identity.key_publish_ahead", id.KeyPublishAhead, time.Minute, 168*time.Hour) &&
		id.KeyPublishAhead >= id.KeyRotationInterval {
		v.fail("identity.key_publish_ahead", "must be less than identity.key_rotation_interval (%s), got %s", id.KeyRotationInterval, id.KeyPublishAhead)
	}
	v.durationRange("identity.access_token_ttl", id.AccessTokenTTL, 30*time.Second, time.Hour)
	v.durationRange("identity.id_token_ttl", id.IDTokenTTL, 30*time.Second, time.Hour)
	v.durationRange("identity.refresh_token_ttl", id.RefreshTokenTTL, time.Minute, 2160*time.Hour)
	v.durationRange("identity.code_ttl", id.CodeTTL, time.Second, 60*time.Second)
	v.durationRange("identity.par_ttl", id.PARTTL, 5*time.Second, 600*time.Second)
	v.durationRange("identity.login_ttl", id.LoginTTL, time.Minute, time.Hour)
	v.durationRange("identity.dpop_proof_window", id.DPoPProofWindow, 5*time.Second, 300*time.Second)
	v.path("identity.mtls_client_ca_file", id.MTLSClientCAFile, false)
	v.intRange("identity.lockout.max_failures", id.Lockout.MaxFailures, 1, 100)
	v.durationRange("identity.lockout.duration", id.Lockout.Duration, time.Minute, 24*time.Hour)
	v.durationRange("identity.lockout.backoff_base", id.Lockout.BackoffBase, 0, time.Minute)
	v.intRange("identity.password_hash.memory_kib", id.PasswordHash.MemoryKiB, 1024, 4194304)
	v.intRange("identity.password_hash.iterations", id.PasswordHash.Iterations, 1, 100)
	v.intRange("identity.password_hash.parallelism", id.PasswordHash.Parallelism, 1, 64)
}

func (ca *CA) validate(v *validator) {
	if msg := checkTrustDomain(ca.TrustDomain); msg != "" {
		v.fail("ca.trust_domain", "%s, got %s", msg, quote(ca.TrustDomain))
	}
	svidOK := v.durationRange("ca.svid_ttl", ca.SVIDTTL, 10*time.Second, 24*time.Hour)
	v.durationRange("ca.jwt_svid_ttl", ca.JWTSVIDTTL, 10*time.Second, time.Hour)
	interOK := v.durationRange("ca.intermediate_ttl", ca.IntermediateTTL, time.Hour, 8760*time.Hour)
	if v.durationRange("ca.rotation_overlap", ca.RotationOverlap, time.Minute, 720*time.Hour) {
		if svidOK && ca.RotationOverlap <= ca.SVIDTTL {
			v.fail("ca.rotation_overlap", "must exceed ca.svid_ttl (%s) so that every SVID of the old intermediate expires within it, got %s", ca.SVIDTTL, ca.RotationOverlap)
		}
		if interOK && ca.RotationOverlap >= ca.IntermediateTTL {
			v.fail("ca.rotation_overlap", "must be less than ca.intermediate_ttl (%s), got %s", ca.IntermediateTTL, ca.RotationOverlap)
		}
	}
	v.durationRange("ca.join_token_ttl", ca.JoinTokenTTL, time.Minute, 24*time.Hour)
}

func (a *Agent) validate(v *validator) {
	if u, err := url.Parse(a.ServerURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		v.fail("agent.server_url", "must be an https URL such as \"https://cp.internal:8443\", got %s", quote(a.ServerURL))
	}
	v.path("agent.server_ca_file", a.ServerCAFile, false)
	v.path("agent.join_token_file", a.JoinTokenFile, false)
	v.path("agent.socket_path", a.SocketPath, false)
	if len(a.SocketPath) > 100 {
		v.fail("agent.socket_path", "must be at most 100 bytes (the limit of a unix socket path), got %d", len(a.SocketPath))
	}
	v.path("agent.proxy_file", a.ProxyFile, false)
	v.path("agent.spool_dir", a.SpoolDir, false)
	v.durationRange("agent.policy_max_staleness", a.PolicyMaxStaleness, 10*time.Second, 24*time.Hour)
}

func (g *Gateway) validate(v *validator) {
	v.listen("gateway.listen", g.Listen)
	if g.PublicURL != "" {
		v.httpsURL("gateway.public_url", g.PublicURL)
	}
	v.path("gateway.routes_file", g.RoutesFile, false)
	v.path("gateway.cert_file", g.CertFile, false)
	v.path("gateway.key_file", g.KeyFile, false)
	if (g.CertFile == "") != (g.KeyFile == "") {
		v.fail("gateway.cert_file", "set both gateway.cert_file and gateway.key_file, or neither to serve the X.509-SVID")
	}
	v.httpsURL("gateway.server_url", g.ServerURL)
	v.path("gateway.server_ca_file", g.ServerCAFile, false)
	v.path("gateway.workload_api_socket", g.WorkloadAPISocket, false)
	if len(g.WorkloadAPISocket) > 100 {
		v.fail("gateway.workload_api_socket", "must be at most 100 bytes (the limit of a unix socket path), got %d", len(g.WorkloadAPISocket))
	}
	if g.Issuer != "" {
		v.httpsURL("gateway.issuer", g.Issuer)
	}
	if strings.TrimSpace(g.Audience) == "" {
		v.fail("gateway.audience", "must not be empty")
	}
	if strings.TrimSpace(g.ExchangeClientID) == "" {
		v.fail("gateway.exchange_client_id", "must not be empty")
	}
	v.path("gateway.exchange_key_file", g.ExchangeKeyFile, false)
	if g.RedisAddr != "" {
		if _, _, err := net.SplitHostPort(g.RedisAddr); err != nil {
			v.fail("gateway.redis_addr", "must be host:port, got %s", quote(g.RedisAddr))
		}
	}
	if g.OTLPEndpoint != "" {
		if u, err := url.Parse(g.OTLPEndpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			v.fail("gateway.otlp_endpoint", "must be an http or https URL such as \"https://collector:4318/v1/traces\", got %s", quote(g.OTLPEndpoint))
		}
	}
	if g.MetricsListen != "" {
		v.listen("gateway.metrics_listen", g.MetricsListen)
	}
	v.path("gateway.spool_dir", g.SpoolDir, false)
	v.durationRange("gateway.policy_max_staleness", g.PolicyMaxStaleness, 10*time.Second, 24*time.Hour)
}

// httpsURL checks that s is an https URL with a host and no credentials.
func (v *validator) httpsURL(key, s string) {
	if u, err := url.Parse(s); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		v.fail(key, "must be an https URL such as \"https://host:8443\", got %s", quote(s))
	}
}

func (p *Policy) validate(v *validator) {
	v.durationRange("policy.bundle_ttl", p.BundleTTL, time.Minute, 168*time.Hour)
	if p.ExtAuthzListen != "" {
		v.listen("policy.ext_authz_listen", p.ExtAuthzListen)
	}
	v.sizeRange("policy.max_request_bytes", p.MaxRequestBytes, 1*KiB, 8*MiB)
	v.intRange("policy.max_batch_evaluations", p.MaxBatchEvaluations, 1, 10000)
	v.path("policy.decision_log.spool_dir", p.DecisionLog.SpoolDir, false)
	v.sizeRange("policy.decision_log.max_spool_bytes", p.DecisionLog.MaxSpoolBytes, 1*MiB, 1024*GiB)
	v.intRange("policy.decision_log.batch_size", p.DecisionLog.BatchSize, 1, 10000)
}

// checkTrustDomain checks a SPIFFE trust domain name: lowercase letters,
// digits, '.', '-' and '_', 1 to 255 characters. It returns a message or "".
func checkTrustDomain(s string) string {
	if s == "" || len(s) > 255 {
		return "must be 1 to 255 characters"
	}
	for i := range len(s) {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return "may hold only lowercase letters, digits, '.', '-' and '_'"
		}
	}
	return ""
}

// checkIssuer checks an OAuth issuer identifier (RFC 8414 §2): an https
// URL with a host and no query or fragment. It returns a message or "".
func checkIssuer(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "":
		return "must be an absolute https URL"
	case u.Scheme != "https":
		return "must use https"
	case u.RawQuery != "" || u.Fragment != "" || strings.Contains(s, "#") || strings.Contains(s, "?"):
		return "must not have a query or fragment"
	case u.User != nil:
		return "must not hold user information"
	case strings.HasSuffix(u.Path, "/"):
		return "must not end with /"
	}
	return ""
}

// validOrigin reports whether s can be a checkpoint origin line: non-empty
// printable ASCII with no space and no '+'.
func validOrigin(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if c := s[i]; c <= ' ' || c > '~' || c == '+' {
			return false
		}
	}
	return true
}

// validator collects problems by key.
type validator struct {
	errs []FieldError
}

func (v *validator) fail(key, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) oneOf(key, got string, allowed ...string) {
	if slices.Contains(allowed, got) {
		return
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(a)
	}
	list := strings.Join(quoted[:len(quoted)-1], ", ") + " or " + quoted[len(quoted)-1]
	v.fail(key, "must be %s, got %s", list, quote(got))
}

func (v *validator) intRange(key string, got, lo, hi int) {
	if got < lo || got > hi {
		v.fail(key, "must be between %d and %d, got %d", lo, hi, got)
	}
}

func (v *validator) durationRange(key string, got Duration, lo, hi time.Duration) bool {
	if time.Duration(got) < lo || time.Duration(got) > hi {
		v.fail(key, "must be between %s and %s, got %s", Duration(lo), Duration(hi), got)
		return false
	}
	return true
}

func (v *validator) sizeRange(key string, got, lo, hi ByteSize) bool {
	if got < lo || got > hi {
		v.fail(key, "must be between %s and %s, got %s", lo, hi, got)
		return false
	}
	return true
}

// path checks a file system path: required if so, and free of control
// characters, which are never intended and would garble logs.
func (v *validator) path(key, p string, required bool) {
	switch {
	case p == "" && required:
		v.fail(key, "must not be empty")
	case strings.ContainsFunc(p, isControl):
		v.fail(key, "must not contain control characters, got %s", quote(p))
	}
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

// listen checks a host:port listen address with a numeric port.
func (v *validator) listen(key, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.fail(key, `must be host:port, such as "127.0.0.1:8443", got %s`, quote(addr))
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.fail(key, "port must be a number from 0 to 65535, got %s", quote(port))
	}
	if host != "" && !validHostname(host) {
		if _, err := netip.ParseAddr(host); err != nil {
			v.fail(key, "host must be an IP address or a DNS name, got %s", quote(host))
		}
	}
}

// validHostname reports whether s is a DNS name: dot-separated labels of
// letters, digits and hyphens, no label starting or ending with a hyphen.
func validHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := range len(label) {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// secretDSNKeys are the connection parameters that carry a secret.
var secretDSNKeys = []string{"password", "sslpassword"}

const dsnAdvice = "give PostgreSQL credentials with a passfile (PGPASSFILE or passfile=) or a client certificate (sslcert=, sslkey=)"

// checkDSN checks the form of a PostgreSQL DSN and that it holds no
// password. It returns a message, or "" if the DSN is fine. The message
// never repeats the DSN, which may hold the very secret it refuses.
func checkDSN(dsn string) string {
	if strings.ContainsFunc(dsn, isControl) {
		return "must not contain control characters"
	}
	lower := strings.ToLower(dsn)
	if strings.HasPrefix(lower, "postgres://") || strings.HasPrefix(lower, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "is not a valid postgres:// URL"
		}
		if _, ok := u.User.Password(); ok {
			return "must not contain a password (found one in the URL's user:password@); " + dsnAdvice
		}
		query, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return "is not a valid postgres:// URL: malformed query"
		}
		for key := range query {
			if slices.Contains(secretDSNKeys, strings.ToLower(key)) {
				return fmt.Sprintf("must not contain a password (found URL parameter %s); %s", quote(key), dsnAdvice)
			}
		}
		return ""
	}
	if strings.Contains(dsn, "://") {
		return `must be a postgres:// or postgresql:// URL, or key=value pairs`
	}
	keys, ok := dsnKeys(dsn)
	if !ok {
		return `must be a postgres:// URL or key=value pairs such as "host=db.internal dbname=bulwark user=bulwark"`
	}
	for _, key := range keys {
		if slices.Contains(secretDSNKeys, strings.ToLower(key)) {
			return fmt.Sprintf("must not contain a password (found key %s); %s", quote(key), dsnAdvice)
		}
	}
	return ""
}

// dsnKeys returns the keys of a libpq key=value connection string: pairs
// separated by spaces, spaces allowed around '=', a value either bare (with
// backslash escapes) or in single quotes (with \' and \\).
func dsnKeys(s string) ([]string, bool) {
	var keys []string
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	for {
		skipSpace()
		if i == len(s) {
			return keys, len(keys) > 0
		}
		start := i
		for i < len(s) && (s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9' || s[i] == '_') {
			i++
		}
		key := s[start:i]
		skipSpace()
		if key == "" || i == len(s) || s[i] != '=' {
			return nil, false
		}
		i++
		skipSpace()
		if i < len(s) && s[i] == '\'' {
			i++
			for i < len(s) && s[i] != '\'' {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(s) {
				return nil, false // unterminated quote
			}
			i++
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i > len(s) {
				return nil, false // trailing backslash
			}
		}
		keys = append(keys, key)
	}
}
