package workload_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// TestWorkloadGetsItsSVID: a workload whose uid and binary path match an
// entry gets that SVID (and only that one), JWT-SVIDs and bundles, with the
// unmodified go-spiffe client.
func TestWorkloadGetsItsSVID(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, 0)
	a := joinAgent(t, cp, "node-1", nil)
	uid, path, sum := self(t)
	td := cp.srv.CA().TrustDomain().String()
	want := "spiffe://" + td + "/ns/payments/sa/api"
	createEntry(t, cp, want, a.id, "unix:uid:"+uid, "unix:path:"+path)
	createEntry(t, cp, "spiffe://"+td+"/ns/payments/sa/other-uid", a.id, "unix:uid:"+uid+"9", "unix:path:"+path)
	createEntry(t, cp, "spiffe://"+td+"/ns/payments/sa/other-binary", a.id, "unix:uid:"+uid, "unix:sha256:"+zeroHash)
	createEntry(t, cp, "spiffe://"+td+"/ns/payments/sa/by-hash", spiffeid.ID{}, "unix:sha256:"+sum)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(a.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// The source returns the first SVID; wait until both matching entries
	// have theirs.
	var ids []string
	eventually(t, 10*time.Second, "both matching SVIDs", func() error {
		xc, err := fetchX509(ctx, a)
		if err != nil {
			return err
		}
		ids = ids[:0]
		for _, s := range xc.SVIDs {
			ids = append(ids, s.ID.String())
			if _, _, err := x509svid.Verify(s.Certificates, xc.Bundles); err != nil {
				t.Fatalf("SVID %s does not verify against the served bundle: %v", s.ID, err)
			}
		}
		if len(ids) != 2 {
			return fmt.Errorf("got SVIDs %v", ids)
		}
		return nil
	})
	for _, id := range ids {
		if id != want && id != "spiffe://"+td+"/ns/payments/sa/by-hash" {
			t.Fatalf("served an SVID of a non-matching entry: %s", id)
		}
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if len(svid.Certificates) != 2 || svid.Certificates[0].IsCA {
		t.Fatalf("want [leaf, intermediate], got %d certificates", len(svid.Certificates))
	}

	// JWT-SVID for the matching entry, validated by the agent.
	client, err := workloadapi.New(ctx, a.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	jwt, err := client.FetchJWTSVID(ctx, jwtParams(want, "payments-db"))
	if err != nil {
		t.Fatal(err)
	}
	if jwt.ID.String() != want {
		t.Fatalf("JWT-SVID for %s, want %s", jwt.ID, want)
	}
	got, err := client.ValidateJWTSVID(ctx, jwt.Marshal(), "payments-db")
	if err != nil || got.ID.String() != want {
		t.Fatalf("ValidateJWTSVID = %v, %v", got, err)
	}
	if _, err := client.ValidateJWTSVID(ctx, jwt.Marshal(), "other-audience"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a JWT-SVID for another audience validated: %v", err)
	}
	bundles, err := client.FetchJWTBundles(ctx)
	if err != nil || bundles.Len() != 1 {
		t.Fatalf("FetchJWTBundles = %v, %v", bundles, err)
	}
	xb, err := client.FetchX509Bundles(ctx)
	if err != nil || xb.Len() != 1 {
		t.Fatalf("FetchX509Bundles = %v, %v", xb, err)
	}
	// A JWT-SVID for an entry the caller does not match is refused.
	if _, err := client.FetchJWTSVID(ctx, jwtParams("spiffe://"+td+"/ns/payments/sa/other-uid", "x")); !isDenied(err) {
		t.Fatalf("JWT-SVID of a non-matching entry: %v", err)
	}
}

const zeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// TestNonMatchingWorkloadRefusedAndAudited: entries for another uid or
// another binary hash give the caller nothing: PermissionDenied, audited
// on the control plane.
func TestNonMatchingWorkloadRefusedAndAudited(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, 0)
	a := joinAgent(t, cp, "node-2", nil)
	uid, path, _ := self(t)
	td := cp.srv.CA().TrustDomain().String()
	createEntry(t, cp, "spiffe://"+td+"/ns/a/sa/other-uid", a.id, "unix:uid:"+uid+"9", "unix:path:"+path)
	createEntry(t, cp, "spiffe://"+td+"/ns/a/sa/other-hash", a.id, "unix:uid:"+uid, "unix:sha256:"+zeroHash)
	time.Sleep(time.Second) // let the agent sync the entries

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := fetchX509(ctx, a); !isDenied(err) {
		t.Fatalf("FetchX509SVID without a matching entry: %v, want PermissionDenied", err)
	}
	client, err := workloadapi.New(ctx, a.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.FetchJWTSVID(ctx, jwtParams("", "aud")); !isDenied(err) {
		t.Fatalf("FetchJWTSVID without a matching entry: %v, want PermissionDenied", err)
	}
	eventually(t, 10*time.Second, "refusal audited", func() error {
		return auditHas(t, cp, "workload API call refused", "no registration entry matches the caller", a.id.String(), `"uid":"`+uid+`"`)
	})
}

// TestHeaderRequired: every RPC without the workload.spiffe.io header is
// refused with InvalidArgument.
func TestHeaderRequired(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, 0)
	a := joinAgent(t, cp, "node-3", nil)
	uid, path, _ := self(t)
	createEntry(t, cp, "spiffe://"+cp.srv.CA().TrustDomain().String()+"/ns/a/sa/b", a.id, "unix:uid:"+uid, "unix:path:"+path)

	conn, err := grpc.NewClient("unix://"+a.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	calls := map[string]func() error{
		"FetchX509SVID": func() error {
			s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		},
		"FetchX509Bundles": func() error {
			s, err := c.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		},
		"FetchJWTBundles": func() error {
			s, err := c.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		},
		"FetchJWTSVID": func() error {
			_, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
			return err
		},
		"ValidateJWTSVID": func() error {
			_, err := c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "x.y.z"})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			if err := call(); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("without the security header: %v, want InvalidArgument", err)
			}
		})
	}
	eventually(t, 10*time.Second, "refusal audited", func() error {
		return auditHas(t, cp, "security header missing", `"rpc":"FetchX509SVID"`, a.id.String())
	})
}

func jwtParams(id, audience string) jwtsvid.Params {
	p := jwtsvid.Params{Audience: audience}
	if id != "" {
		p.Subject = spiffeid.RequireFromString(id)
	}
	return p
}
