package workload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// peerCreds are the kernel's credentials of the process at the other end
// of a unix socket, taken when it connected.
type peerCreds struct {
	PID      int32
	UID, GID uint32
	// Start is the process's start time (in clock ticks after boot, from
	// /proc/<pid>/stat) read at connection: a later RPC whose pid has
	// another start time comes from a pid reused by another process.
	Start uint64
}

// AuthType implements credentials.AuthInfo.
func (peerCreds) AuthType() string { return "unix-peercred" }

// peerCredentials is a gRPC transport credential for unix sockets that
// records the caller's SO_PEERCRED; it adds no encryption (the socket never
// leaves the host). proc is the procfs mount, "/proc".
type peerCredentials struct{ proc string }

var _ credentials.TransportCredentials = peerCredentials{}

func (peerCredentials) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, nil, errors.New("peer credentials are server-side only")
}

func (pcr peerCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("workload API: not a unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("workload API: peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, nil, fmt.Errorf("workload API: peer credentials: %w", err)
	}
	if serr != nil {
		return nil, nil, fmt.Errorf("workload API: peer credentials: %w", serr)
	}
	pc := peerCreds{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
	if pc.PID > 0 {
		// A failure leaves Start 0, which attest refuses.
		pc.Start, _ = procStartTime(pcr.proc, pc.PID)
	}
	return c, pc, nil
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peercred"}
}
func (pcr peerCredentials) Clone() credentials.TransportCredentials { return pcr }

// OverrideServerName implements the deprecated interface method.
func (peerCredentials) OverrideServerName(string) error { return nil }

// caller is an attested workload.
type caller struct {
	peerCreds
	Path   string
	SHA256 string
}

// selectors returns the caller's selectors, "unix" type.
func (c *caller) selectors() map[Selector]bool {
	s := map[Selector]bool{
		{"unix", "uid:" + strconv.FormatUint(uint64(c.UID), 10)}: true,
		{"unix", "gid:" + strconv.FormatUint(uint64(c.GID), 10)}: true,
	}
	if c.Path != "" {
		s[Selector{"unix", "path:" + c.Path}] = true
	}
	if c.SHA256 != "" {
		s[Selector{"unix", "sha256:" + c.SHA256}] = true
	}
	return s
}

// matches reports whether every selector of e is in have; an
// entry without selectors matches nothing.
func matches(e Entry, have map[Selector]bool) bool {
	if len(e.Selectors) == 0 {
		return false
	}
	for _, s := range e.Selectors {
		if !have[s] {
			return false
		}
	}
	return true
}

// fileKey identifies one version of a file for the hash cache.
type fileKey struct {
	dev, ino  uint64
	size      int64
	mtimeSec  int64
	mtimeNsec int64
	ctimeSec  int64
	ctimeNsec int64
}

// attestor resolves peer credentials into a caller.
type attestor struct {
	proc string // "/proc", replaceable in tests

	mu     sync.Mutex
	hashes map[fileKey]string
}

func newAttestor() *attestor { return &attestor{proc: "/proc", hashes: map[fileKey]string{}} }

// attest identifies the caller of an RPC.
func (at *attestor) attest(ctx context.Context) (*caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, errors.New("no peer information")
	}
	pc, ok := p.AuthInfo.(peerCreds)
	if !ok {
		return nil, errors.New("no peer credentials")
	}
	c := &caller{peerCreds: pc}
	if pc.PID <= 0 {
		return c, errors.New("peer has no pid (another pid namespace)")
	}
	if err := at.sameProcess(pc); err != nil {
		return c, err
	}
	exe := fmt.Sprintf("%s/%d/exe", at.proc, pc.PID)
	path, err := os.Readlink(exe)
	if err != nil {
		return c, fmt.Errorf("read binary path of pid %d: %w", pc.PID, err)
	}
	c.Path = path
	if c.SHA256, err = at.hash(exe); err != nil {
		return c, fmt.Errorf("hash binary of pid %d: %w", pc.PID, err)
	}
	// Checked again after reading: the pid was not reused meanwhile.
	if err := at.sameProcess(pc); err != nil {
		return c, err
	}
	return c, nil
}

// sameProcess verifies that pc.PID still names the process that connected.
func (at *attestor) sameProcess(pc peerCreds) error {
	start, err := procStartTime(at.proc, pc.PID)
	if err != nil {
		return fmt.Errorf("process %d: %w", pc.PID, err)
	}
	if pc.Start == 0 || start != pc.Start {
		return fmt.Errorf("process %d is not the process that connected (pid reused)", pc.PID)
	}
	return nil
}

// procStartTime returns field 22 (starttime) of /proc/<pid>/stat. The
// command name (field 2) may hold spaces and parentheses: fields are
// counted after its last ')'.
func procStartTime(proc string, pid int32) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", proc, pid))
	if err != nil {
		return 0, fmt.Errorf("read process status: %w", err)
	}
	return parseStartTime(string(b))
}

func parseStartTime(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed process status")
	}
	fields := strings.Fields(stat[i+1:])
	const startField = 22 - 3 // fields after ')' begin with field 3
	if len(fields) <= startField {
		return 0, errors.New("malformed process status")
	}
	start, err := strconv.ParseUint(fields[startField], 10, 64)
	if err != nil || start == 0 {
		return 0, errors.New("malformed process start time")
	}
	return start, nil
}

// hash returns the SHA-256 of the binary behind /proc/<pid>/exe, cached by
// device, inode, size, mtime and ctime of the file actually opened.
func (at *attestor) hash(exe string) (string, error) {
	f, err := os.Open(exe)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", errors.New("no file status")
	}
	k := fileKey{dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtimeSec: int64(st.Mtim.Sec), mtimeNsec: int64(st.Mtim.Nsec),
		ctimeSec: int64(st.Ctim.Sec), ctimeNsec: int64(st.Ctim.Nsec)}
	at.mu.Lock()
	h, ok := at.hashes[k]
	at.mu.Unlock()
	if ok {
		return h, nil
	}
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		return "", err
	}
	h = hex.EncodeToString(sum.Sum(nil))
	at.mu.Lock()
	if len(at.hashes) > 1024 {
		clear(at.hashes)
	}
	at.hashes[k] = h
	at.mu.Unlock()
	return h, nil
}
