package workload_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/status"
)

// helperEnv makes the test binary act as a workload: it fetches its
// X.509-SVID from the socket named by the variable and prints the result.
const helperEnv = "BULWARK_WORKLOAD_HELPER_SOCKET"

func TestMain(m *testing.M) {
	if socket := os.Getenv(helperEnv); socket != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		xc, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+socket))
		cancel()
		if err != nil {
			fmt.Printf("ERR %s %v\n", status.Code(err), err)
		} else {
			fmt.Printf("OK %s\n", xc.DefaultSVID().ID)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// copyBinary copies the test binary to dir (mode 0755), with extra bytes
// appended when tamper is set, and returns its path and SHA-256.
func copyBinary(t *testing.T, dir, name string, tamper bool) (string, string) {
	t.Helper()
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, name)
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(dst, h), src); err != nil {
		t.Fatal(err)
	}
	if tamper {
		if _, err := io.MultiWriter(dst, h).Write([]byte("tampered")); err != nil {
			t.Fatal(err)
		}
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path, hex.EncodeToString(h.Sum(nil))
}

// TestOtherProcesses attests real separate processes: a genuine copy of a
// registered binary gets its SVID, a tampered copy (another hash) is
// refused; run as root, the workloads run as another uid (nobody), and one
// outside the socket's group cannot even connect.
func TestOtherProcesses(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, 0)
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a := joinAgentIn(t, cp, "node-proc", dir, nil)
	genuine, sum := copyBinary(t, dir, "payments", false)
	tampered, _ := copyBinary(t, dir, "payments-tampered", true)

	uid := os.Getuid()
	var cred *syscall.Credential
	if uid == 0 {
		// nobody, in the socket's group (root's): it may connect.
		uid = 65534
		cred = &syscall.Credential{Uid: 65534, Gid: uint32(os.Getgid()), Groups: []uint32{}}
	}
	td := cp.srv.CA().TrustDomain().String()
	want := "spiffe://" + td + "/ns/payments/sa/api"
	createEntry(t, cp, want, a.id, "unix:uid:"+strconv.Itoa(uid), "unix:sha256:"+sum)
	createEntry(t, cp, "spiffe://"+td+"/ns/payments/sa/admin", a.id, "unix:uid:"+strconv.Itoa(uid+1), "unix:sha256:"+sum)

	run := func(bin string, cred *syscall.Credential) string {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+a.socket)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("run %s: %v", bin, err)
		}
		return strings.TrimSpace(string(out))
	}
	type tc struct {
		name, bin string
		cred      *syscall.Credential
		want      string
	}
	tests := []tc{
		{"genuine binary gets its SVID, not the other uid's", genuine, cred, "OK " + want},
		{"tampered binary refused", tampered, cred, "ERR PermissionDenied"},
	}
	if cred != nil {
		tests = append(tests, tc{"outside the socket's group: no connection", genuine,
			&syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}, "ERR Unavailable"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			eventually(t, 10*time.Second, tt.name, func() error {
				got = run(tt.bin, tt.cred)
				if !strings.HasPrefix(got, tt.want) {
					return fmt.Errorf("workload printed %q, want %q", got, tt.want)
				}
				return nil
			})
		})
	}
	eventually(t, 10*time.Second, "refusal audited", func() error {
		return auditHas(t, cp, "workload API call refused", tampered, `"uid":"`+strconv.Itoa(uid)+`"`)
	})
}
