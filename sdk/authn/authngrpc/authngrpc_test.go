package authngrpc

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/bulwarksec/bulwark/sdk/authn"
	"github.com/bulwarksec/bulwark/sdk/dpop"
)

const audience = "https://ledger.example.com"

// issuer is a minimal HTTPS authorization server: metadata, one EdDSA key,
// and an empty revocation feed that honours wait.
type issuer struct {
	url string
	key ed25519.PrivateKey
	srv *httptest.Server
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss := &issuer{key: key}
	closing := make(chan struct{})
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]string{"issuer": iss.url, "jwks_uri": iss.url + "/jwks", "bulwark_revocation_feed_endpoint": iss.url + "/feed"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "EdDSA", Use: "sig"}}})
	})
	mux.HandleFunc("GET /feed", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") != "0" {
			select {
			case <-time.After(time.Second):
			case <-r.Context().Done():
				return
			case <-closing:
			}
		}
		writeJSON(w, map[string]any{"revocations": []any{}, "next": 0})
	})
	iss.srv = httptest.NewTLSServer(mux)
	iss.url = iss.srv.URL
	t.Cleanup(func() {
		close(closing)
		iss.srv.Close()
	})
	return iss
}

// token signs an access token for audience with extra claims.
func (iss *issuer) token(t *testing.T, extra map[string]any) string {
	t.Helper()
	now := time.Now()
	claims := map[string]any{
		"iss": iss.url, "sub": "svc_billing", "aud": audience, "client_id": "cli_billing",
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "jti": "at_" + now.Format(time.RFC3339Nano),
		"scope": "ledger:read",
	}
	for k, v := range extra {
		claims[k] = v
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: iss.key},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cert makes a self-signed certificate for 127.0.0.1.
func cert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// msg is the message of the test service; rawCodec sends it as bytes.
type msg struct{ s string }

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return []byte(v.(*msg).s), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	v.(*msg).s = string(b)
	return nil
}
func (rawCodec) Name() string { return "raw" }

// whoAmI is a handwritten service: Get and Watch answer with the caller's
// subject from authn.FromContext.
type whoAmI interface{}

var whoAmIDesc = grpc.ServiceDesc{
	ServiceName: "bulwark.test.WhoAmI",
	HandlerType: (*whoAmI)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Get", Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		in := new(msg)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, _ any) (any, error) {
			p, ok := authn.FromContext(ctx)
			if !ok {
				return nil, status.Error(codes.Internal, "no principal")
			}
			return &msg{s: p.Subject}, nil
		}
		if ic == nil {
			return h(ctx, in)
		}
		return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/bulwark.test.WhoAmI/Get"}, h)
	}}},
	Streams: []grpc.StreamDesc{{StreamName: "Watch", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
		p, ok := authn.FromContext(ss.Context())
		if !ok {
			return status.Error(codes.Internal, "no principal")
		}
		return ss.SendMsg(&msg{s: p.Subject})
	}}},
}

// refusals collects OnRefusal reports.
type refusals struct {
	mu   sync.Mutex
	list []authn.Refusal
}

func (r *refusals) add(_ context.Context, rf authn.Refusal) {
	r.mu.Lock()
	r.list = append(r.list, rf)
	r.mu.Unlock()
}

func (r *refusals) last() authn.Refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.list) == 0 {
		return authn.Refusal{}
	}
	return r.list[len(r.list)-1]
}

func TestInterceptors(t *testing.T) {
	iss := newIssuer(t)
	ctx, cancel := context.WithCancel(context.Background())
	rec := &refusals{}
	v, err := authn.New(ctx, authn.Config{
		Issuer: iss.url, Audience: audience, HTTPClient: iss.srv.Client(),
		OnRefusal: rec.add, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-v.Done()
	})

	serverCert := cert(t, "server")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12})),
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnaryInterceptor(UnaryServerInterceptor(v)),
		grpc.StreamInterceptor(StreamServerInterceptor(v)),
	)
	srv.RegisterService(&whoAmIDesc, struct{}{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	roots := x509.NewCertPool()
	roots.AddCert(serverCert.Leaf)
	dial := func(certs ...tls.Certificate) *grpc.ClientConn {
		conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(),
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12})),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	plain := dial()
	clientCert, otherCert := cert(t, "client"), cert(t, "other")
	withCert, withOther := dial(clientCert), dial(otherCert)

	_, dpopKey, _ := ed25519.GenerateKey(rand.Reader)
	holder, err := dpop.NewSigner(dpopKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(clientCert.Leaf.Raw)
	bearer := iss.token(t, nil)
	dpopBound := iss.token(t, map[string]any{"cnf": map[string]any{"jkt": holder.Thumbprint()}})
	certBound := iss.token(t, map[string]any{"cnf": map[string]any{"x5t#S256": base64.RawURLEncoding.EncodeToString(sum[:])}})
	authority := lis.Addr().String()
	proof := func(method string) string {
		p, err := holder.Proof("POST", "https://"+authority+method, "", dpopBound)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	for _, tc := range []struct {
		name   string
		conn   *grpc.ClientConn
		md     []string
		stream bool
		reason string // "" accepted
	}{
		{name: "bearer", conn: plain, md: []string{"authorization", "Bearer " + bearer}},
		{name: "bearer stream", conn: plain, md: []string{"authorization", "Bearer " + bearer}, stream: true},
		{name: "no token", conn: plain, reason: authn.ReasonMissingToken},
		{name: "no token stream", conn: plain, stream: true, reason: authn.ReasonMissingToken},
		{name: "garbage token", conn: plain, md: []string{"authorization", "Bearer a.b.c"}, reason: authn.ReasonMalformed},
		{name: "two tokens", conn: plain, md: []string{"authorization", "Bearer " + bearer, "authorization", "Bearer " + bearer}, reason: authn.ReasonInvalidRequest},
		{name: "DPoP", conn: plain, md: []string{"authorization", "DPoP " + dpopBound, "dpop", proof("/bulwark.test.WhoAmI/Get")}},
		{name: "DPoP stream", conn: plain, md: []string{"authorization", "DPoP " + dpopBound, "dpop", proof("/bulwark.test.WhoAmI/Watch")}, stream: true},
		{name: "DPoP proof for another method", conn: plain, md: []string{"authorization", "DPoP " + dpopBound, "dpop", proof("/bulwark.test.WhoAmI/Watch")}, reason: authn.ReasonDPoPInvalid},
		{name: "DPoP-bound token as bearer", conn: plain, md: []string{"authorization", "Bearer " + dpopBound}, reason: authn.ReasonDPoPRequired},
		{name: "certificate-bound", conn: withCert, md: []string{"authorization", "Bearer " + certBound}},
		{name: "certificate-bound stream", conn: withCert, md: []string{"authorization", "Bearer " + certBound}, stream: true},
		{name: "certificate-bound without a certificate", conn: plain, md: []string{"authorization", "Bearer " + certBound}, reason: authn.ReasonCertRequired},
		{name: "certificate-bound with another certificate", conn: withOther, md: []string{"authorization", "Bearer " + certBound}, reason: authn.ReasonBindingMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := metadata.AppendToOutgoingContext(t.Context(), tc.md...)
			var (
				out msg
				err error
			)
			if tc.stream {
				err = watch(ctx, tc.conn, &out)
			} else {
				err = tc.conn.Invoke(ctx, "/bulwark.test.WhoAmI/Get", &msg{}, &out)
			}
			if tc.reason == "" {
				if err != nil || out.s != "svc_billing" {
					t.Fatalf("call: %v, answer %q", err, out.s)
				}
				return
			}
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("call: %v, want Unauthenticated", err)
			}
			if rf := rec.last(); rf.Reason != tc.reason || rf.Path == "" || rf.RemoteAddr == "" {
				t.Errorf("refusal %+v, want reason %s", rf, tc.reason)
			}
		})
	}
}

// watch opens the Watch stream and reads its one message.
func watch(ctx context.Context, conn *grpc.ClientConn, out *msg) error {
	s, err := conn.NewStream(ctx, &whoAmIDesc.Streams[0], "/bulwark.test.WhoAmI/Watch")
	if err != nil {
		return err
	}
	if err := s.SendMsg(&msg{}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return s.RecvMsg(out)
}
