package policy

// The Envoy ext_authz v3 gRPC service (envoy.service.auth.v3.Authorization).
//
// Mapping of a CheckRequest to a Cedar request:
//   - principal: the "sub" of the verified JWT that Envoy's jwt_authn filter
//     put in metadata_context.filter_metadata["envoy.filters.http.jwt_authn"]
//     under "jwt_payload" → Bulwark::User::"<sub>" (Bulwark::Client::"<sub>"
//     when its "client_id" equals "sub": a client-credentials token, RFC 9068
//     §2.2); else the peer's SPIFFE ID
//     (attributes.source.principal, from its client certificate) →
//     Bulwark::Service::"<spiffe id>"; else deny ("no principal").
//   - context_extensions (per route in Envoy's configuration, trusted):
//     "bulwark.action" (default "call" for a service; for a user "read" for
//     GET and HEAD, "write" otherwise); "bulwark.resource_type" and
//     "bulwark.resource_id" (default the destination service
//     Bulwark::Service::"<destination principal>"); "bulwark.zone",
//     "bulwark.region"; "bulwark.context", a JSON object of Cedar JSON values
//     merged over everything else.
//   - dynamic context: header "x-bulwark-amount" (a decimal int64) → amount;
//     from the JWT payload "amr" containing "mfa" → mfa, a number
//     "risk_score" (0-100) → riskScore, "scope" → tokenScopes.
//
// The decision log never receives the token or the context values.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/structpb"
)

// Keys of the ext_authz mapping.
const (
	JWTAuthnFilter     = "envoy.filters.http.jwt_authn"
	JWTPayloadKey      = "jwt_payload"
	ExtActionKey       = "bulwark.action"
	ExtResourceTypeKey = "bulwark.resource_type"
	ExtResourceIDKey   = "bulwark.resource_id"
	ExtZoneKey         = "bulwark.zone"
	ExtRegionKey       = "bulwark.region"
	ExtContextKey      = "bulwark.context"
	AmountHeader       = "x-bulwark-amount"
	DecisionIDHeader   = "x-bulwark-decision-id"
	// DecisionReasonsHeader carries the determining policy IDs of an
	// ext_authz answer, comma-separated and sorted (empty for a default deny).
	DecisionReasonsHeader = "x-bulwark-decision-reasons"
	maxRouteContextSize   = 64 << 10
)

type extAuthzServer struct {
	authv3.UnimplementedAuthorizationServer
	d *DecisionService
}

// RegisterExtAuthz serves envoy.service.auth.v3.Authorization on s. The
// server's mTLS is the control plane's; the caller's SPIFFE ID (the URI
// SAN of its certificate) is recorded as the decision's actor.
func (d *DecisionService) RegisterExtAuthz(s *grpc.Server) {
	authv3.RegisterAuthorizationServer(s, &extAuthzServer{d: d})
}

// Check implements authv3.AuthorizationServer.
func (s *extAuthzServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	d := s.d
	if _, ok := CallerFrom(ctx); !ok {
		if id := peerSPIFFEID(ctx); id != "" {
			ctx = WithCaller(ctx, Caller{Kind: "workload", ID: id})
		}
	}
	in := mapCheckRequest(req, d.now())
	res := d.decide(ctx, in)
	return checkResponse(&res), nil
}

// peerSPIFFEID is the first URI SAN of the gRPC peer's certificate.
func peerSPIFFEID(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return ""
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return ""
	}
	if uris := ti.State.PeerCertificates[0].URIs; len(uris) > 0 {
		return uris[0].String()
	}
	return ""
}

// mapCheckRequest maps a CheckRequest to a decision input; a request that
// cannot be mapped gets a refusal (it is denied and logged).
func mapCheckRequest(req *authv3.CheckRequest, now time.Time) *decisionInput {
	in := &decisionInput{api: APIExtAuthz}
	attrs := req.GetAttributes()
	httpReq := attrs.GetRequest().GetHttp()
	in.correlation = httpReq.GetId()
	ext := attrs.GetContextExtensions()
	ctx := defaultRequestContext(now)

	// Principal.
	payload := jwtPayload(attrs.GetMetadataContext())
	isUser := false
	if sub := stringField(payload, "sub"); sub != "" {
		// A client-credentials token names the client as its subject
		// (RFC 9068 §2.2): the client acts on its own behalf.
		typ := "::User"
		if stringField(payload, "client_id") == sub {
			typ = "::Client"
		}
		in.principal = cedar.NewEntityUID(cedar.EntityType(decisionNamespace+typ), cedar.String(sub))
		isUser = true
	} else if p := attrs.GetSource().GetPrincipal(); p != "" {
		in.principal = cedar.NewEntityUID(decisionNamespace+"::Service", cedar.String(p))
	} else {
		in.refusal = "no principal: neither a verified JWT subject nor a peer SPIFFE ID"
	}
	if len(in.principal.ID) > maxEntityIDBytes {
		in.refusal = fmt.Sprintf("principal id is longer than %d bytes", maxEntityIDBytes)
	}

	// Action.
	action := ext[ExtActionKey]
	if action == "" {
		switch {
		case !isUser:
			action = "call"
		case httpReq.GetMethod() == http.MethodGet || httpReq.GetMethod() == http.MethodHead:
			action = "read"
		default:
			action = "write"
		}
	}
	in.action = requestActionUID(action)

	// Resource.
	rt, rid := ext[ExtResourceTypeKey], ext[ExtResourceIDKey]
	switch {
	case rt != "" && rid != "":
		in.resource = cedar.NewEntityUID(requestEntityType(rt), cedar.String(rid))
	case rt != "" || rid != "":
		in.refusal = firstRefusal(in.refusal, "route sets only one of "+ExtResourceTypeKey+" and "+ExtResourceIDKey)
	case attrs.GetDestination().GetPrincipal() != "":
		in.resource = cedar.NewEntityUID(decisionNamespace+"::Service", cedar.String(attrs.GetDestination().GetPrincipal()))
	default:
		in.refusal = firstRefusal(in.refusal, "no resource: the route sets no "+ExtResourceTypeKey+
			" and the destination has no SPIFFE ID")
	}
	if len(in.resource.ID) > maxEntityIDBytes {
		in.refusal = firstRefusal(in.refusal, fmt.Sprintf("resource id is longer than %d bytes", maxEntityIDBytes))
	}

	// Context: route values, then the request's, then the route's static
	// context over everything.
	if z, ok := ext[ExtZoneKey]; ok {
		ctx[rcZone] = cedar.String(z)
	}
	if r, ok := ext[ExtRegionKey]; ok {
		ctx[rcRegion] = cedar.String(r)
	}
	if raw, ok := checkHeader(httpReq, AmountHeader); ok {
		amount, err := parseAmountHeader(raw)
		if err != nil {
			in.refusal = firstRefusal(in.refusal, "malformed "+AmountHeader+" header: "+err.Error())
		} else {
			ctx[rcAmount] = cedar.Long(amount)
		}
	}
	if payload != nil {
		if hasMFA(payload) {
			ctx[rcMFA] = cedar.True
		}
		if v, ok := payload.GetFields()["risk_score"]; ok {
			if n, isNum := v.GetKind().(*structpb.Value_NumberValue); isNum {
				f := n.NumberValue
				if f >= 0 && f <= 100 && f == math.Trunc(f) {
					ctx[rcRiskScore] = cedar.Long(int64(f))
				}
			}
		}
		if scope := stringField(payload, "scope"); scope != "" {
			fields := strings.Fields(scope)
			vals := make([]cedar.Value, len(fields))
			for i, f := range fields {
				vals[i] = cedar.String(f)
			}
			ctx[rcTokenScopes] = cedar.NewSet(vals...)
		}
	}
	if raw := ext[ExtContextKey]; raw != "" {
		var rec cedar.Record
		if len(raw) > maxRouteContextSize {
			in.refusal = firstRefusal(in.refusal, ExtContextKey+" is too large")
		} else if err := json.Unmarshal([]byte(raw), &rec); err != nil {
			in.refusal = firstRefusal(in.refusal, ExtContextKey+" is not a JSON object of Cedar values")
		} else {
			for k, v := range rec.All() {
				ctx[k] = v
			}
		}
	}
	in.context = cedar.NewRecord(ctx)
	return in
}

func firstRefusal(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// jwtPayload is the verified JWT payload that jwt_authn stored, or nil.
func jwtPayload(md *corev3.Metadata) *structpb.Struct {
	s := md.GetFilterMetadata()[JWTAuthnFilter]
	if s == nil {
		return nil
	}
	return s.GetFields()[JWTPayloadKey].GetStructValue()
}

func stringField(s *structpb.Struct, key string) string {
	if s == nil {
		return ""
	}
	return s.GetFields()[key].GetStringValue()
}

func hasMFA(payload *structpb.Struct) bool {
	for _, v := range payload.GetFields()["amr"].GetListValue().GetValues() {
		if v.GetStringValue() == "mfa" {
			return true
		}
	}
	return false
}

// header returns a request header by its lowercase name.
func checkHeader(h *authv3.AttributeContext_HttpRequest, name string) (string, bool) {
	if v, ok := h.GetHeaders()[name]; ok {
		return v, true
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), name) {
			if v := hv.GetValue(); v != "" {
				return v, true
			}
			return string(hv.GetRawValue()), true
		}
	}
	return "", false
}

// deniedBody is the JSON body of a denied request.
type deniedBody struct {
	Decision   bool     `json:"decision"`
	DecisionID string   `json:"decision_id"`
	Reasons    []string `json:"reasons"`
	Reason     string   `json:"reason"`
}

func checkResponse(res *decisionResult) *authv3.CheckResponse {
	idHeader := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: DecisionIDHeader, Value: res.ID}}
	// The determining policies, comma-separated and sorted; empty for a
	// default deny.
	reasonsHeader := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: DecisionReasonsHeader, Value: strings.Join(res.Reasons, ",")}}
	if res.Allowed {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{idHeader, reasonsHeader},
			}},
		}
	}
	reasons := res.Reasons
	if reasons == nil {
		reasons = []string{}
	}
	body, err := json.Marshal(deniedBody{DecisionID: res.ID, Reasons: reasons, Reason: res.reasonAdmin()})
	if err != nil {
		body = []byte(`{"decision":false}`)
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied), Message: "denied by policy"},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: []*corev3.HeaderValueOption{idHeader, reasonsHeader,
				{Header: &corev3.HeaderValue{Key: "content-type", Value: "application/json"}}},
			Body: string(body),
		}},
	}
}
