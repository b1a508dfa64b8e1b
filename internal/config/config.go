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
