package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestGolden parses every testdata/bad/NAME.yaml, which must fail with the
// text of NAME.golden, and every testdata/good/NAME.yaml, which must parse
// to the effective YAML in NAME.golden.
func TestGolden(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{"bad", "good"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			t.Fatalf("no test files in testdata/%s", dir)
		}
		for _, file := range files {
			name := strings.TrimSuffix(filepath.Base(file), ".yaml")
			t.Run(dir+"/"+name, func(t *testing.T) {
				t.Parallel()
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := Parse(data, filepath.Base(file))
				var got []byte
				switch dir {
				case "bad":
					if err == nil {
						t.Fatalf("Parse succeeded, want an error")
					}
					var cerr *Error
					if !errors.As(err, &cerr) {
						t.Fatalf("Parse error is %T, want *Error: %v", err, err)
					}
					got = []byte(err.Error() + "\n")
				case "good":
					if err != nil {
						t.Fatalf("Parse: %v", err)
					}
					if got, err = cfg.YAML(); err != nil {
						t.Fatal(err)
					}
				}
				checkGolden(t, strings.TrimSuffix(file, ".yaml")+".golden", got)
			})
		}
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	cfg := Default()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestParseEmpty(t *testing.T) {
	t.Parallel()
	want := Default()
	want.Store.Path = filepath.Join("/var/lib/bulwark", "bulwark.db")
	want.Agent.SocketPath = filepath.Join("/var/lib/bulwark", "agent", "workload.sock")
	want.Policy.DecisionLog.SpoolDir = filepath.Join("/var/lib/bulwark", "decision-spool")
	want.Agent.SpoolDir = filepath.Join("/var/lib/bulwark", "agent", "spool")
	want.Gateway.SpoolDir = filepath.Join("/var/lib/bulwark", "gateway", "spool")
	want.Gateway.WorkloadAPISocket = want.Agent.SocketPath
	for _, tc := range []struct{ name, yaml string }{
		{"nothing", ""},
		{"comments only", "# nothing here\n\n"},
		{"empty document", "---\n"},
		{"null document", "--- ~\n"},
		{"empty sections", "tls:\nstore:\naudit: {}\nlog:\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse([]byte(tc.yaml), "x.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if *cfg != want {
				t.Errorf("Parse(%q) = %+v, want %+v", tc.yaml, *cfg, want)
			}
		})
	}
}

func TestResolvePaths(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		yaml string
		want string
	}{
		{"default data dir", "", "/var/lib/bulwark/bulwark.db"},
		{"own data dir", "data_dir: /srv/b\n", "/srv/b/bulwark.db"},
		{"relative data dir", "data_dir: .bulwark\n", ".bulwark/bulwark.db"},
		{"own path", "data_dir: /srv/b\nstore: {path: /db/x.db}\n", "/db/x.db"},
		{"postgres has none", "store: {driver: postgres, dsn: host=db}\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse([]byte(tc.yaml), "x.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Store.Path != tc.want {
				t.Errorf("Store.Path = %q, want %q", cfg.Store.Path, tc.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	t.Run("ok", func(t *testing.T) {
		t.Parallel()
		cfg, err := Load(write("ok.yaml", []byte("listen: 127.0.0.1:0\n")))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Listen != "127.0.0.1:0" {
			t.Errorf("Listen = %q", cfg.Listen)
		}
	})
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		_, err := Load(filepath.Join(dir, "missing.yaml"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Load of a missing file: %v, want os.ErrNotExist", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		t.Parallel()
		big := append([]byte("# "), bytes.Repeat([]byte("x"), MaxFileSize)...)
		path := write("big.yaml", big)
		_, err := Load(path)
		want := path + ": file is larger than the 1MiB limit"
		if err == nil || err.Error() != want {
			t.Errorf("Load of a big file: %v, want %q", err, want)
		}
	})
	t.Run("at the limit", func(t *testing.T) {
		t.Parallel()
		data := []byte("log: {level: debug}\n#")
		data = append(data, bytes.Repeat([]byte("x"), MaxFileSize-len(data))...)
		if _, err := Load(write("limit.yaml", data)); err != nil {
			t.Errorf("Load of a file of exactly MaxFileSize bytes: %v", err)
		}
	})
	t.Run("errors name the path", func(t *testing.T) {
		t.Parallel()
		path := write("bad.yaml", []byte("log:\n  level: loud\n"))
		_, err := Load(path)
		want := path + `:2:3: log.level: must be "debug", "info", "warn" or "error", got "loud"`
		if err == nil || err.Error() != want {
			t.Errorf("Load: %v, want %q", err, want)
		}
	})
}

// TestValidateWithoutFile checks the errors of Validate on a Config built in
// code: keys, no positions.
func TestValidateWithoutFile(t *testing.T) {
	t.Parallel()
	cfg := Default()
	cfg.Store.Driver = DriverPostgres
	cfg.Log.Format = "xml"
	err := cfg.Validate()
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("Validate() = %v, want *Error", err)
	}
	want := []FieldError{
		{Key: "store.dsn", Msg: `is required with store.driver "postgres"`},
		{Key: "log.format", Msg: `must be "json" or "text", got "xml"`},
	}
	if !reflect.DeepEqual(cerr.Problems, want) {
		t.Errorf("Problems = %+v, want %+v", cerr.Problems, want)
	}
	if got, want := err.Error(), "store.dsn: is required with store.driver \"postgres\"\nlog.format: must be \"json\" or \"text\", got \"xml\""; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestFieldErrorString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		p    FieldError
		want string
	}{
		{"all", FieldError{File: "b.yaml", Line: 7, Column: 3, Key: "store.driver", Msg: "bad"}, "b.yaml:7:3: store.driver: bad"},
		{"no file", FieldError{Line: 7, Column: 3, Key: "store.driver", Msg: "bad"}, "7:3: store.driver: bad"},
		{"no column", FieldError{File: "b.yaml", Line: 7, Msg: "bad"}, "b.yaml:7: bad"},
		{"no line", FieldError{File: "b.yaml", Key: "store.dsn", Msg: "bad"}, "b.yaml: store.dsn: bad"},
		{"message only", FieldError{Msg: "bad"}, "bad"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.p.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestNoSecretInErrors checks that a refused DSN is never echoed back.
func TestNoSecretInErrors(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-s3cr3t"
	for _, tc := range []struct{ name, dsn string }{
		{"url user info", "postgres://bulwark:" + secret + "@db.internal/bulwark"},
		{"url query", "postgresql://db.internal/bulwark?sslmode=verify-full&password=" + secret},
		{"url query upper case", "postgres://db.internal/bulwark?PASSWORD=" + secret},
		{"ssl key password", "postgres://db.internal/bulwark?sslpassword=" + secret},
		{"bad url escape", "postgres://bulwark:" + secret + "%zz@db.internal/bulwark"},
		{"key value", "host=db.internal password=" + secret + " dbname=bulwark"},
		{"key value quoted", "host=db.internal password = '" + secret + " x' dbname=bulwark"},
		{"key value unterminated", "host=db.internal password='" + secret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			yaml := "store:\n  driver: postgres\n  dsn: '" + strings.ReplaceAll(tc.dsn, "'", "''") + "'\n"
			_, err := Parse([]byte(yaml), "x.yaml")
			if err == nil {
				t.Fatal("Parse accepted a DSN with a password")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error repeats the secret: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "x.yaml:3:3: store.dsn: ") {
				t.Errorf("error does not name store.dsn on line 3: %v", err)
			}
		})
	}
}

func TestCheckDSN(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		dsn  string
		want string // substring of the message; "" for accepted
	}{
		{"url", "postgres://bulwark@db.internal:5432/bulwark?sslmode=verify-full&sslcert=/c.pem&sslkey=/k.pem", ""},
		{"postgresql url", "postgresql://db.internal/bulwark", ""},
		{"url multi host", "postgres://db1:5432,db2:5432/bulwark?target_session_attrs=read-write", ""},
		{"url passfile", "postgres://bulwark@db/bulwark?passfile=/etc/bulwark/pgpass", ""},
		{"url empty password", "postgres://bulwark:@db/bulwark", "found one in the URL's user:password@"},
		{"url password", "postgres://bulwark:pw@db/bulwark", "found one in the URL's user:password@"},
		{"url query password", "postgres://db/bulwark?password=pw", `found URL parameter "password"`},
		{"url bad query", "postgres://db/bulwark?a=%zz", "malformed query"},
		{"other scheme", "mysql://db/bulwark", "must be a postgres:// or postgresql:// URL"},
		{"key value", "host=db.internal port=5432 dbname=bulwark user=bulwark sslmode=verify-full", ""},
		{"key value quoted", `host=db application_name='bulwark \' server'`, ""},
		{"key value spaces", "host = db  dbname= bulwark", ""},
		{"key value password", "host=db password=pw", `found key "password"`},
		{"key value empty password", "password= host=db", `found key "password"`},
		{"key value ssl password", "host=db sslpassword='x y'", `found key "sslpassword"`},
		{"key value upper", "host=db Password=pw", `found key "Password"`},
		{"no equals", "just words", "key=value pairs"},
		{"unterminated", "host='db", "key=value pairs"},
		{"trailing backslash", `host=db\`, "key=value pairs"},
		{"control", "host=db\ndbname=x", "control characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := checkDSN(tc.dsn)
			if tc.want == "" && got != "" {
				t.Errorf("checkDSN(%q) = %q, want accepted", tc.dsn, got)
			}
			if tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("checkDSN(%q) = %q, want it to contain %q", tc.dsn, got, tc.want)
			}
		})
	}
}

func TestListen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:8443", true},
		{"127.0.0.1:0", true},
		{":8443", true},
		{"[::1]:8443", true},
		{"[fe80::1%eth0]:8443", true},
		{"control.bank.internal:443", true},
		{"localhost:65535", true},
		{"localhost:65536", false},
		{"localhost:https", false},
		{"localhost", false},
		{"", false},
		{"bad_host:1", false},
		{"-bad:1", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			var v validator
			v.listen("listen", tc.addr)
			if ok := len(v.errs) == 0; ok != tc.ok {
				t.Errorf("listen(%q): problems %v, want ok=%v", tc.addr, v.errs, tc.ok)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	keys := []string{"driver", "path", "dsn", "max_open_conns"}
	for _, tc := range []struct{ name, want string }{
		{"dirver", "driver"},
		{"Driver", "driver"},
		{"drivers", "driver"},
		{"dns", "dsn"},
		{"maxOpenConns", "max_open_conns"},
		{"max_conns", ""},
		{"pth", "path"},
		{"password", ""},
		{"x", ""},
		{strings.Repeat("driver", 100), ""},
	} {
		t.Run(tc.name[:min(len(tc.name), 20)], func(t *testing.T) {
			t.Parallel()
			if got := suggest(tc.name, keys); got != tc.want {
				t.Errorf("suggest(%q) = %q, want %q", tc.name, got, tc.want)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"abc", "", 3},
		{"driver", "driver", 0},
		{"dirver", "driver", 1},
		{"driver", "drive", 1},
		{"kitten", "sitting", 3},
		{"ca", "abc", 3},
	} {
		t.Run(tc.a+"/"+tc.b, func(t *testing.T) {
			t.Parallel()
			if got := editDistance(tc.a, tc.b); got != tc.want {
				t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
		})
	}
}
