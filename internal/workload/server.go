package workload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Socket permissions, see the package documentation.
const (
	socketMode    os.FileMode = 0o660
	socketDirMode os.FileMode = 0o755
	headerKey                 = "workload.spiffe.io"
)

// listenSocket listens on the unix socket at path, removing a stale socket
// left by a previous agent but never a live one or another kind of file.
func listenSocket(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), socketDirMode); err != nil {
		return nil, fmt.Errorf("workload API socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("workload API socket: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("workload API socket: another process serves %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("workload API socket: remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("workload API socket: %w", err)
	}
	if err := os.Chmod(path, socketMode); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("workload API socket: %w", err)
	}
	return ln, nil
}

func (a *Agent) newGRPCServer() *grpc.Server {
	s := grpc.NewServer(
		grpc.Creds(peerCredentials{proc: a.attest.proc}),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := a.checkHeader(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := a.checkHeader(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	workload.RegisterSpiffeWorkloadAPIServer(s, &apiServer{a: a})
	return s
}

// checkHeader requires the Workload API's security header, which a
// request forged through an SSRF-prone proxy lacks; a refusal is audited.
func (a *Agent) checkHeader(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(headerKey); len(v) != 1 || v[0] != "true" {
		c, _ := a.attest.attest(ctx)
		a.auditRefusal(path.Base(method), c, "security header missing from request")
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// apiServer implements the SPIFFE Workload API.
type apiServer struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	a *Agent
}

// x509View is what one caller may receive now.
type x509View struct {
	svids   []*svid
	bundle  *spiffebundle.Bundle
	matched bool // some entry matched the caller
	changed <-chan struct{}
	expiry  time.Time // soonest expiry among svids
}

func (a *Agent) viewFor(c *caller) x509View {
	have := c.selectors()
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	v := x509View{bundle: a.st.bundle, changed: a.changed}
	for _, e := range a.st.entries {
		if !matches(e, have) {
			continue
		}
		v.matched = true
		sv, ok := a.st.svids[e.ID]
		if !ok || a.st.denied(sv.id, sv.serial()) || !now.Before(sv.chain[0].NotAfter) {
			continue
		}
		v.svids = append(v.svids, sv)
		if v.expiry.IsZero() || sv.chain[0].NotAfter.Before(v.expiry) {
			v.expiry = sv.chain[0].NotAfter
		}
	}
	return v
}

// attestOrRefuse attests the caller; a failure is audited and refused.
func (s *apiServer) attestOrRefuse(ctx context.Context, rpc string) (*caller, error) {
	c, err := s.a.attest.attest(ctx)
	if err != nil {
		s.a.auditRefusal(rpc, c, "attestation failed: "+err.Error())
		return nil, status.Error(codes.PermissionDenied, "workload attestation failed")
	}
	return c, nil
}

func (s *apiServer) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	var last []byte
	for {
		c, err := s.attestOrRefuse(ctx, "FetchX509SVID")
		if err != nil {
			return err
		}
		v := s.a.viewFor(c)
		if len(v.svids) == 0 || v.bundle == nil {
			reason := "no registration entry matches the caller"
			if v.matched {
				reason = "no valid SVID for the caller's entries (expired, denied or not issued)"
			}
			s.a.auditRefusal("FetchX509SVID", c, reason)
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		resp, key := x509Response(v)
		if !bytes.Equal(key, last) {
			if err := stream.Send(resp); err != nil {
				return err
			}
			last = key
		}
		timer := time.NewTimer(max(v.expiry.Sub(s.a.cfg.Now()), 0) + 10*time.Millisecond)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-v.changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// x509Response encodes a view; key identifies its content.
func x509Response(v x509View) (*workload.X509SVIDResponse, []byte) {
	bundleDER := concatDER(v.bundle.X509Authorities())
	h := sha256.New()
	h.Write(bundleDER)
	resp := &workload.X509SVIDResponse{}
	for _, sv := range v.svids {
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId:    sv.id.String(),
			X509Svid:    concatDER(sv.chain),
			X509SvidKey: sv.keyDER,
			Bundle:      bundleDER,
		})
		h.Write(sv.chain[0].Raw)
	}
	return resp, h.Sum(nil)
}

func concatDER(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, c.Raw...)
	}
	return b
}

// bundleView returns the current bundle and the change channel.
func (a *Agent) bundleView() (*spiffebundle.Bundle, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.bundle, a.changed
}

// streamBundle sends the bundle through send whenever it changes.
func (a *Agent) streamBundle(ctx context.Context, send func(*spiffebundle.Bundle) error) error {
	var last *spiffebundle.Bundle
	for {
		b, changed := a.bundleView()
		if b == nil {
			return status.Error(codes.Unavailable, "no trust bundle yet")
		}
		if last == nil || !last.Equal(b) {
			if err := send(b); err != nil {
				return err
			}
			last = b
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func (s *apiServer) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return s.a.streamBundle(stream.Context(), func(b *spiffebundle.Bundle) error {
		return stream.Send(&workload.X509BundlesResponse{
			Bundles: map[string][]byte{b.TrustDomain().IDString(): concatDER(b.X509Authorities())},
		})
	})
}

func (s *apiServer) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return s.a.streamBundle(stream.Context(), func(b *spiffebundle.Bundle) error {
		jwks, err := b.JWTBundle().Marshal()
		if err != nil {
			return status.Error(codes.Internal, "encode JWT bundle")
		}
		return stream.Send(&workload.JWTBundlesResponse{
			Bundles: map[string][]byte{b.TrustDomain().IDString(): jwks},
		})
	})
}

func (s *apiServer) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if len(req.GetAudience()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	var want spiffeid.ID
	if req.GetSpiffeId() != "" {
		id, err := spiffeid.FromString(req.GetSpiffeId())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
		want = id
	}
	c, err := s.attestOrRefuse(ctx, "FetchJWTSVID")
	if err != nil {
		return nil, err
	}
	ids := s.a.jwtIDsFor(c, want)
	if len(ids) == 0 {
		s.a.auditRefusal("FetchJWTSVID", c, "no registration entry matches the caller for the requested identity")
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	cp, err := s.a.controlPlane()
	if err != nil {
		return nil, status.Error(codes.Unavailable, "control plane unavailable")
	}
	resp := &workload.JWTSVIDResponse{}
	for _, id := range ids {
		token, err := cp.JWTSVID(ctx, id, req.GetAudience())
		if err != nil {
			s.a.log.Warn("JWT-SVID request failed", logSPIFFEID, id.String(), logErr, err)
			return nil, status.Error(codes.Unavailable, "could not obtain a JWT-SVID from the control plane")
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: id.String(), Svid: token})
	}
	return resp, nil
}

// jwtIDsFor returns the distinct, non-denied SPIFFE IDs of the entries the
// caller matches (only want, when it is set).
func (a *Agent) jwtIDsFor(c *caller, want spiffeid.ID) []spiffeid.ID {
	have := c.selectors()
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[spiffeid.ID]bool{}
	var ids []spiffeid.ID
	for _, e := range a.st.entries {
		if !matches(e, have) || seen[e.SPIFFEID] || a.st.deny.ids[e.SPIFFEID.String()] {
			continue
		}
		if !want.IsZero() && e.SPIFFEID != want {
			continue
		}
		seen[e.SPIFFEID] = true
		ids = append(ids, e.SPIFFEID)
	}
	return ids
}

func (s *apiServer) ValidateJWTSVID(_ context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if req.GetAudience() == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.GetSvid() == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	b, _ := s.a.bundleView()
	if b == nil {
		return nil, status.Error(codes.Unavailable, "no trust bundle yet")
	}
	sv, err := jwtsvid.ParseAndValidate(req.GetSvid(), b.JWTBundle(), []string{req.GetAudience()})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "invalid JWT-SVID: "+strings.TrimPrefix(err.Error(), "jwtsvid: "))
	}
	s.a.mu.Lock()
	denied := s.a.st.deny.ids[sv.ID.String()]
	s.a.mu.Unlock()
	if denied {
		return nil, status.Error(codes.InvalidArgument, "invalid JWT-SVID: the identity is denied")
	}
	claims, err := structpb.NewStruct(sv.Claims)
	if err != nil {
		return nil, status.Error(codes.Internal, "encode claims")
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: sv.ID.String(), Claims: claims}, nil
}

func bundleFromX509(td spiffeid.TrustDomain, certs []*x509.Certificate) (*spiffebundle.Bundle, error) {
	if len(certs) == 0 {
		return nil, errors.New("empty X.509 bundle")
	}
	return spiffebundle.FromX509Authorities(td, certs), nil
}
