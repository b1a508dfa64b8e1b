// Package config holds the configuration of a Bulwark process: the structs
// read from its one YAML file, their defaults and their validation.
//
// Decoding is strict. The YAML is parsed into a node tree and walked against
// the structs by their yaml tags, so that an unknown key, a value of the
// wrong type, a duplicate key, an alias or a second document is an error
// naming the key and its line. Every problem in a file is reported at once,
// in an *Error. Nothing is read from the environment: a config file is the
// whole configuration, and it never holds a secret.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize is the largest config file Parse and Load accept, in bytes.
const MaxFileSize = 1 << 20

// Store drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Config is the configuration of a Bulwark process. Default returns it with
// every field at its documented default; YAML keys are in the yaml tags.
type Config struct {
	// DataDir is the directory holding the process's state: the SQLite
	// database, the generated TLS certificate and sealed keys. Default
	// "/var/lib/bulwark"; dev mode uses "./.bulwark".
	DataDir string `yaml:"data_dir"`
	// Listen is the host:port of the control plane's HTTPS listener.
	// Default "127.0.0.1:8443". Port 0 picks a free port (for tests); an
	// empty host listens on every interface.
	Listen string `yaml:"listen"`
	// TLS configures the serving certificate of the listener.
	TLS TLS `yaml:"tls"`
	// Store configures the database.
	Store Store `yaml:"store"`
	// Audit configures the audit log.
	Audit Audit `yaml:"audit"`
	// Identity configures the OAuth 2.0 / OpenID Connect authorization
	// server.
	Identity Identity `yaml:"identity"`
	// CA configures the workload certificate authority (SPIFFE).
	CA CA `yaml:"ca"`
	// Agent configures `bulwark agent`.
	Agent Agent `yaml:"agent"`
	// Gateway configures `bulwark gateway`.
	Gateway Gateway `yaml:"gateway"`
	// Policy configures the Cedar policy store, the decision service and
	// the signed policy bundles.
	Policy Policy `yaml:"policy"`
	// Log configures the process's own logs.
	Log Log `yaml:"log"`
}

// TLS configures the serving certificate. There is no plaintext mode.
type TLS struct {
	// CertFile is the PEM certificate chain to serve. Set both CertFile and
	// KeyFile, or neither: when both are empty (the default) a self-signed
	// certificate is generated and kept in <data_dir>/tls.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile. Default empty.
	KeyFile string `yaml:"key_file"`
	// MinVersion is the lowest TLS version accepted: "1.2" (default) or
	// "1.3". Nothing lower can be configured.
	MinVersion string `yaml:"min_version"`
}

// Store configures the database.
type Store struct {
	// Driver is "sqlite" (default, embedded) or "postgres".
	Driver string `yaml:"driver"`
	// Path is the SQLite database file, used only with the sqlite driver.
	// Default empty, which Parse and ResolvePaths turn into
	// <data_dir>/bulwark.db.
	Path string `yaml:"path"`
	// DSN is the PostgreSQL connection string, a postgres:// URL or libpq
	// key=value pairs; required with the postgres driver and used only
	// with it. It must not hold a password: credentials come from a
	// passfile or a client certificate. Default empty.
	DSN string `yaml:"dsn"`
	// MaxOpenConns bounds the open database connections. Default 16,
	// range 1..1000.
	MaxOpenConns int `yaml:"max_open_conns"`
}

// Audit configures the audit log.
type Audit struct {
	// Origin is the origin line of the log's signed checkpoints: printable
	// ASCII without spaces or '+'. Default "bulwark.local/audit".
	Origin string `yaml:"origin"`
	// CheckpointInterval is how often a checkpoint is signed. Default 10s,
	// range 1s..24h.
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
	// MaxBatchEvents bounds the events in one POST /v1/audit/events.
	// Default 1000, range 1..10000.
	MaxBatchEvents int `yaml:"max_batch_events"`
	// MaxRequestBytes bounds the body of one request. Default 8MiB, range
	// 1KiB..256MiB.
	MaxRequestBytes ByteSize `yaml:"max_request_bytes"`
	// MaxEventBytes bounds the canonical JSON of one event; events over
	// 64KiB are stored beside the log. Default 1MiB, range 1KiB..64MiB,
	// and at most MaxRequestBytes.
	MaxEventBytes ByteSize `yaml:"max_event_bytes"`
	// CommitBatch bounds the entries appended in one group commit.
	// Default 4096, range 1..65536.
	CommitBatch int `yaml:"commit_batch"`
}

// Signing algorithms of the authorization server.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
	AlgPS256 = "PS256"
)

// Identity configures the OAuth 2.0 / OpenID Connect authorization server
// (FAPI 2.0 profile).
type Identity struct {
	// Issuer is the issuer identifier: an https URL without query or
	// fragment that clients reach the server at. Default empty, which
	// means the listener's own URL (https://<listen>).
	Issuer string `yaml:"issuer"`
	// SigningAlg signs access and ID tokens: "EdDSA" (Ed25519, default),
	// "ES256" or "PS256". Symmetric algorithms and "none" do not exist here.
	SigningAlg string `yaml:"signing_alg"`
	// KeyRotationInterval is how long a signing key signs before the next
	// one takes over. Default 720h (30 days), range 1h..8760h.
	KeyRotationInterval Duration `yaml:"key_rotation_interval"`
	// KeyPublishAhead is how long a new key is published in the JWKS before
	// it signs, so verifiers have fetched it. Default 1h, range 1m..168h,
	// and less than KeyRotationInterval.
	KeyPublishAhead Duration `yaml:"key_publish_ahead"`
	// AccessTokenTTL is the lifetime of access tokens. Default 5m, range
	// 30s..1h.
	AccessTokenTTL Duration `yaml:"access_token_ttl"`
	// IDTokenTTL is the lifetime of ID tokens. Default 5m, range 30s..1h.
	IDTokenTTL Duration `yaml:"id_token_ttl"`
	// RefreshTokenTTL is the lifetime of refresh tokens. Default 24h, range
	// 1m..2160h.
	RefreshTokenTTL Duration `yaml:"refresh_token_ttl"`
	// CodeTTL is the lifetime of authorization codes. Default 60s, range
	// 1s..60s.
	CodeTTL Duration `yaml:"code_ttl"`
	// PARTTL is the lifetime of a pushed authorization request's
	// request_uri. Default 60s, range 5s..600s.
	PARTTL Duration `yaml:"par_ttl"`
	// LoginTTL bounds the time between the authorization request and the
	// end of login and consent. Default 10m, range 1m..1h.
	LoginTTL Duration `yaml:"login_ttl"`
	// DPoPProofWindow is how far a DPoP proof's or client assertion's iat
	// may be from now. Default 60s, range 5s..300s.
	DPoPProofWindow Duration `yaml:"dpop_proof_window"`
	// DPoPNonce requires DPoP proofs at the token and PAR endpoints to
	// carry a server-issued nonce (RFC 9449 §8). Default true.
	DPoPNonce bool `yaml:"dpop_nonce"`
	// MTLSClientCAFile is a PEM bundle of the CAs that issue client
	// certificates for tls_client_auth. Default empty: only
	// self_signed_tls_client_auth and private_key_jwt are possible.
	MTLSClientCAFile string `yaml:"mtls_client_ca_file"`
	// Lockout configures the defence against password guessing.
	Lockout Lockout `yaml:"lockout"`
	// PasswordHash sets the argon2id parameters for new password hashes.
	PasswordHash PasswordHash `yaml:"password_hash"`
}

// Lockout configures progressive back-off and lockout of user accounts.
type Lockout struct {
	// MaxFailures is the number of consecutive failed logins after which
	// the account is locked. Default 5, range 1..100.
	MaxFailures int `yaml:"max_failures"`
	// Duration is how long a locked account stays locked. Default 15m,
	// range 1m..24h.
	Duration Duration `yaml:"duration"`
	// BackoffBase is the delay after the first failure; it doubles with
	// each further failure up to Duration. Default 1s, range 0s..1m.
	BackoffBase Duration `yaml:"backoff_base"`
}

// PasswordHash sets argon2id parameters (RFC 9106).
type PasswordHash struct {
	// MemoryKiB is the memory cost. Default 19456 (19 MiB, OWASP's
	// minimum), range 1024..4194304.
	MemoryKiB int `yaml:"memory_kib"`
	// Iterations is the time cost. Default 2, range 1..100.
	Iterations int `yaml:"iterations"`
	// Parallelism is the lanes. Default 1, range 1..64.
	Parallelism int `yaml:"parallelism"`
}

// CA configures the workload certificate authority of the control plane.
type CA struct {
	// TrustDomain is the SPIFFE trust domain of every workload identity.
	// Default "bulwark.local".
	TrustDomain string `yaml:"trust_domain"`
	// SVIDTTL is the lifetime of X.509-SVIDs. Default 1h, range 10s..24h.
	SVIDTTL Duration `yaml:"svid_ttl"`
	// JWTSVIDTTL is the lifetime of JWT-SVIDs. Default 5m, range 10s..1h.
	JWTSVIDTTL Duration `yaml:"jwt_svid_ttl"`
	// IntermediateTTL is the lifetime of an intermediate signing
	// certificate. Default 720h, range 1h..8760h.
	IntermediateTTL Duration `yaml:"intermediate_ttl"`
	// RotationOverlap is how long the previous intermediate stays trusted
	// after a CA rotation. Default 2h, range 1m..720h; it must exceed
	// SVIDTTL so that every SVID it signed expires within it.
	RotationOverlap Duration `yaml:"rotation_overlap"`
	// JoinTokenTTL is the default lifetime of agent join tokens. Default
	// 10m, range 1m..24h.
	JoinTokenTTL Duration `yaml:"join_token_ttl"`
}

// Agent configures `bulwark agent`, the node agent that attests local
// workloads and serves them the SPIFFE Workload API.
type Agent struct {
	// ServerURL is the control plane's https URL. Default
	// "https://127.0.0.1:8443".
	ServerURL string `yaml:"server_url"`
	// ServerCAFile is the PEM CA bundle that verifies the control plane's
	// TLS certificate. Default empty: the system roots.
	ServerCAFile string `yaml:"server_ca_file"`
	// JoinTokenFile holds the one-time join token for the agent's first
	// start; it is not needed once the agent has joined. Default empty.
	JoinTokenFile string `yaml:"join_token_file"`
	// SocketPath is the unix socket of the Workload API. Default empty,
	// which means <data_dir>/agent/workload.sock.
	SocketPath string `yaml:"socket_path"`
	// ProxyFile is the YAML file naming the local services whose mTLS
	// proxy (inbound and outbound) the agent runs (see docs/mesh.md).
	// Default empty: the agent runs no proxy.
	ProxyFile string `yaml:"proxy_file"`
	// SpoolDir holds the durable spool of the proxy's audit events on
	// their way to the control plane. Default empty, which means
	// <data_dir>/agent/spool.
	SpoolDir string `yaml:"spool_dir"`
	// PolicyMaxStaleness is how long the proxy keeps deciding with its last
	// policy bundle while the control plane is unreachable; after it every
	// request is denied. Default 10m, range 10s..24h.
	PolicyMaxStaleness Duration `yaml:"policy_max_staleness"`
}

// Gateway configures `bulwark gateway`, the edge API gateway: its listener,
// how it reaches the control plane, and the credentials of its token
// exchange. Routes, rate limits and per-route controls are in RoutesFile.
type Gateway struct {
	// Listen is the host:port of the gateway's HTTPS listener. Default
	// "127.0.0.1:8444".
	Listen string `yaml:"listen"`
	// PublicURL is the https URL clients use to reach the gateway; DPoP
	// proofs must name it (htu). Default empty, which means https:// and
	// the request's Host.
	PublicURL string `yaml:"public_url"`
	// RoutesFile is the YAML file of routes, rate limits and per-route
	// controls (see docs/gateway.md). Required by bulwark gateway.
	RoutesFile string `yaml:"routes_file"`
	// CertFile and KeyFile are the PEM certificate and key of the
	// listener. Default empty: the gateway serves its X.509-SVID.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerURL is the control plane's https URL. Default
	// "https://127.0.0.1:8443".
	ServerURL string `yaml:"server_url"`
	// ServerCAFile is the PEM CA bundle that verifies the control plane's
	// TLS certificate. Default empty: the system roots.
	ServerCAFile string `yaml:"server_ca_file"`
	// WorkloadAPISocket is the unix socket of the agent's Workload API,
	// where the gateway gets its X.509-SVID. Default empty, which means
	// agent.socket_path.
	WorkloadAPISocket string `yaml:"workload_api_socket"`
	// Issuer is the authorization server whose access tokens the gateway
	// accepts. Default empty, which means server_url.
	Issuer string `yaml:"issuer"`
	// Audience is the aud that external access tokens must carry. Default
	// "bank-api".
	Audience string `yaml:"audience"`
	// ExchangeClientID is the gateway's OAuth client for token exchange
	// (RFC 8693). Default "bank-api": external tokens name it in aud.
	ExchangeClientID string `yaml:"exchange_client_id"`
	// ExchangeKeyFile is the PEM private key (PKCS #8) of that client,
	// which authenticates with private_key_jwt. Required by bulwark
	// gateway.
	ExchangeKeyFile string `yaml:"exchange_key_file"`
	// RedisAddr is the host:port of the Redis that holds the rate limits
	// shared by several gateway replicas. Default empty: limits are local
	// to each replica.
	RedisAddr string `yaml:"redis_addr"`
	// OTLPEndpoint is the OpenTelemetry collector's OTLP/HTTP traces URL
	// ("https://collector:4318/v1/traces"); the gateway exports a span per
	// request there, with its security context and never a token. Default
	// empty: spans are not exported.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// MetricsListen is the host:port of a plain-HTTP listener serving the
	// gateway's Prometheus metrics at /metrics (keep it on loopback or a
	// management network). Default empty: not served.
	MetricsListen string `yaml:"metrics_listen"`
	// SpoolDir holds the durable spool of the gateway's audit events on
	// their way to the control plane. Default empty, which means
	// <data_dir>/gateway/spool.
	SpoolDir string `yaml:"spool_dir"`
	// PolicyMaxStaleness is how long the gateway keeps deciding with its
	// last policy bundle while the control plane is unreachable; after it
	// every request is denied. Default 10m, range 10s..24h.
	PolicyMaxStaleness Duration `yaml:"policy_max_staleness"`
}

// Policy configures the Cedar policy store, the decision service (OpenID
// AuthZEN and Envoy ext_authz) and the signed bundles served to embedded
// enforcement points.
type Policy struct {
	// BundleTTL is how long a signed policy bundle is valid; the control
	// plane signs a fresh one at half of it. Enforcement points refuse an
	// expired bundle. Default 1h, range 1m..168h.
	BundleTTL Duration `yaml:"bundle_ttl"`
	// ExtAuthzListen is the address of the Envoy ext_authz v3 gRPC service
	// (mutual TLS: callers present an X.509-SVID). Empty (default) turns
	// it off.
	ExtAuthzListen string `yaml:"ext_authz_listen"`
	// MaxRequestBytes bounds an AuthZEN request body. Default 64KiB, range
	// 1KiB..8MiB.
	MaxRequestBytes ByteSize `yaml:"max_request_bytes"`
	// MaxBatchEvaluations bounds the evaluations of one AuthZEN batch
	// request. Default 100, range 1..10000.
	MaxBatchEvaluations int `yaml:"max_batch_evaluations"`
	// DecisionLog configures the durable spool of decision records.
	DecisionLog DecisionLog `yaml:"decision_log"`
}

// DecisionLog configures how decisions reach the audit log: each decision
// is first written to a local spool (fsynced in groups), then shipped to
// the audit log in batches. Nothing is dropped: when the spool is full the
// decision service denies instead of deciding unlogged.
type DecisionLog struct {
	// SpoolDir holds the spool. Default empty, which means
	// <data_dir>/decision-spool.
	SpoolDir string `yaml:"spool_dir"`
	// MaxSpoolBytes bounds the spool on disk. Default 1GiB, range
	// 1MiB..1TiB.
	MaxSpoolBytes ByteSize `yaml:"max_spool_bytes"`
	// BatchSize is the most decisions shipped to the audit log in one
	// append. Default 1000, range 1..10000.
	BatchSize int `yaml:"batch_size"`
}

// Log configures the process's own logs.
type Log struct {
	// Level is the lowest level logged: "debug", "info" (default), "warn"
	// or "error".
	Level string `yaml:"level"`
	// Format is "json" (default) or "text".
	Format string `yaml:"format"`
}

// Default returns the configuration with every field at its default. Store.Path
// is left empty: call ResolvePaths after settling DataDir.
func Default() Config {
	return Config{
		DataDir: "/var/lib/bulwark",
		Listen:  "127.0.0.1:8443",
		TLS: TLS{
			MinVersion: "1.2",
		},
		Store: Store{
			Driver:       DriverSQLite,
			MaxOpenConns: 16,
		},
		Audit: Audit{
			Origin:             "bulwark.local/audit",
			CheckpointInterval: Duration(10 * time.Second),
			MaxBatchEvents:     1000,
			MaxRequestBytes:    8 * MiB,
			MaxEventBytes:      1 * MiB,
			CommitBatch:        4096,
		},
		Identity: Identity{
			SigningAlg:          AlgEdDSA,
			KeyRotationInterval: Duration(720 * time.Hour),
			KeyPublishAhead:     Duration(time.Hour),
			AccessTokenTTL:      Duration(5 * time.Minute),
			IDTokenTTL:          Duration(5 * time.Minute),
			RefreshTokenTTL:     Duration(24 * time.Hour),
			CodeTTL:             Duration(60 * time.Second),
			PARTTL:              Duration(60 * time.Second),
			LoginTTL:            Duration(10 * time.Minute),
			DPoPProofWindow:     Duration(60 * time.Second),
			DPoPNonce:           true,
			Lockout: Lockout{
				MaxFailures: 5,
				Duration:    Duration(15 * time.Minute),
				BackoffBase: Duration(time.Second),
			},
			PasswordHash: PasswordHash{MemoryKiB: 19456, Iterations: 2, Parallelism: 1},
		},
		CA: CA{
			TrustDomain:     "bulwark.local",
			SVIDTTL:         Duration(time.Hour),
			JWTSVIDTTL:      Duration(5 * time.Minute),
			IntermediateTTL: Duration(720 * time.Hour),
			RotationOverlap: Duration(2 * time.Hour),
			JoinTokenTTL:    Duration(10 * time.Minute),
		},
		Agent: Agent{
			ServerURL:          "https://127.0.0.1:8443",
			PolicyMaxStaleness: Duration(10 * time.Minute),
		},
		Gateway: Gateway{
			Listen:             "127.0.0.1:8444",
			ServerURL:          "https://127.0.0.1:8443",
			Audience:           "bank-api",
			ExchangeClientID:   "bank-api",
			PolicyMaxStaleness: Duration(10 * time.Minute),
		},
		Policy: Policy{
			BundleTTL:           Duration(time.Hour),
			MaxRequestBytes:     64 * KiB,
			MaxBatchEvaluations: 100,
			DecisionLog: DecisionLog{
				MaxSpoolBytes: 1 * GiB,
				BatchSize:     1000,
			},
		},
		Log: Log{
			Level:  "info",
			Format: "json",
		},
	}
}

// ResolvePaths fills the defaults derived from DataDir that are still
// empty: Store.Path becomes <data_dir>/bulwark.db with the sqlite driver.
func (c *Config) ResolvePaths() {
	if c.Store.Driver == DriverSQLite && c.Store.Path == "" {
		c.Store.Path = filepath.Join(c.DataDir, "bulwark.db")
	}
	if c.Agent.SocketPath == "" {
		c.Agent.SocketPath = filepath.Join(c.DataDir, "agent", "workload.sock")
	}
	if c.Agent.SpoolDir == "" {
		c.Agent.SpoolDir = filepath.Join(c.DataDir, "agent", "spool")
	}
	if c.Gateway.SpoolDir == "" {
		c.Gateway.SpoolDir = filepath.Join(c.DataDir, "gateway", "spool")
	}
	if c.Gateway.WorkloadAPISocket == "" {
		c.Gateway.WorkloadAPISocket = c.Agent.SocketPath
	}
	if c.Policy.DecisionLog.SpoolDir == "" {
		c.Policy.DecisionLog.SpoolDir = filepath.Join(c.DataDir, "decision-spool")
	}
}

// Parse reads a configuration from the YAML in data over Default, validates
// it and resolves its derived defaults. An empty file gives the defaults.
// filename is used only in messages. On failure the error is an *Error
// holding every problem found.
func Parse(data []byte, filename string) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, &Error{Problems: []FieldError{{
			File: filename,
			Msg:  fmt.Sprintf("file is larger than the %s limit", ByteSize(MaxFileSize)),
		}}}
	}
	top, perr := parseDocument(data, filename)
	if perr != nil {
		return nil, perr
	}
	cfg := Default()
	d := newDecoder(filename)
	if top != nil {
		d.decode(top, reflect.ValueOf(&cfg).Elem(), "", top)
	}
	var verr *Error
	if errors.As(cfg.Validate(), &verr) {
		for _, p := range verr.Problems {
			if d.bad[p.Key] {
				// The value that failed to decode kept its default; the
				// decode error says more than a check of the default would.
				continue
			}
			p.File = filename
			if key, ok := d.keys[p.Key]; ok {
				p.Line, p.Column = key.Line, key.Column
			}
			d.errs = append(d.errs, p)
		}
	}
	if len(d.errs) > 0 {
		sortProblems(d.errs)
		return nil, &Error{Problems: d.errs}
	}
	cfg.ResolvePaths()
	return &cfg, nil
}

// Load reads the config file at path and parses it with Parse. A file over
// MaxFileSize is refused without reading it all.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return Parse(data, path)
}

// YAML returns c as a YAML document that Parse reads back to c, with every
// key present.
func (c *Config) YAML() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return b.Bytes(), nil
}
