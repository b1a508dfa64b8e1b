package ca

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Paths of the CA's HTTP API on the control plane.
const (
	PathJoin          = "/v1/ca/join"
	PathAgentRenew    = "/v1/ca/agent/renew"
	PathAgentEntries  = "/v1/ca/agent/entries"
	PathAgentSVIDs    = "/v1/ca/agent/svids"
	PathAgentJWTSVIDs = "/v1/ca/agent/jwt-svids"
	PathAgentEvents   = "/v1/ca/agent/events"
	PathBundle        = "/v1/ca/bundle"
	PathDenyList      = "/v1/ca/denylist"
	PathEntries       = "/v1/ca/entries"
	PathJoinTokens    = "/v1/ca/join-tokens"
	PathRevoke        = "/v1/ca/revoke"
	PathQuarantine    = "/v1/ca/quarantine"
	PathCertificates  = "/v1/ca/certificates"
	PathRotate        = "/v1/ca/rotate"
	// PathIntermediateCSR and PathIntermediates rotate under an offline
	// root: the server makes the key and its CSR, the root signs it
	// offline, the server installs the certificate.
	PathIntermediateCSR = "/v1/ca/intermediate-csr"
	PathIntermediates   = "/v1/ca/intermediates"
)

// Stable error codes of the CA API, beside httpapi's.
const (
	// CodeInvalidJoinToken: the join token is unknown, used or expired.
	CodeInvalidJoinToken = "invalid_join_token"
	// CodeInvalidCSR: the CSR is malformed, has a weak key, extra SANs or
	// asks for an identity the caller is not entitled to.
	CodeInvalidCSR = "invalid_csr"
	// CodeInvalidEntry: a registration entry does not pass validation.
	CodeInvalidEntry = "invalid_entry"
	// CodeDenied: the identity or serial is revoked or quarantined.
	CodeDenied = "denied"
	// CodeForbidden: the agent asked for an identity that is not its own
	// to hand out.
	CodeForbidden = "forbidden"
	// CodeInvalidEvent: an agent's audit event does not pass validation.
	CodeInvalidEvent = "invalid_event"
)

// Limits of the API.
const (
	maxSmallBody     = 64 << 10 // join, renew, admin bodies
	maxSVIDsBody     = 2 << 20  // up to maxSVIDRequests CSRs
	maxEventsBody    = 1 << 20
	maxSVIDRequests  = 100
	maxAgentEvents   = 100
	maxDenyListWait  = 30 * time.Second
	defaultCertLimit = 100
	maxCertLimit     = 10000
)

// API serves the CA over HTTP: the agents' endpoints (authenticated by
// their X.509-SVID as TLS client certificate, except join), the public
// bundle and deny list, and the admin endpoints.
type API struct {
	a   *Authority
	log *slog.Logger
}

// NewAPI returns the HTTP API of a.
func NewAPI(a *Authority, logger *slog.Logger) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{a: a, log: logger}
}

// Register serves the API on mux. admin wraps the admin endpoints with
// admin authentication.
func (api *API) Register(mux *http.ServeMux, admin func(http.Handler) http.Handler) {
	mux.HandleFunc("POST "+PathJoin, api.join)
	mux.HandleFunc("POST "+PathAgentRenew, api.agent(api.renew))
	mux.HandleFunc("GET "+PathAgentEntries, api.agent(api.entries))
	mux.HandleFunc("POST "+PathAgentSVIDs, api.agent(api.svids))
	mux.HandleFunc("POST "+PathAgentJWTSVIDs, api.agent(api.jwtSVID))
	mux.HandleFunc("POST "+PathAgentEvents, api.agent(api.events))
	mux.HandleFunc("GET "+PathBundle, api.bundle)
	mux.HandleFunc("GET "+PathDenyList, api.denyList)
	api.registerAdmin(mux, admin)
}

// Wire types, shared with package caclient.

// SVIDAnswer is an issued X.509-SVID: the SPIFFE ID and the chain, leaf
// first, as DER (base64 in JSON). Join answers carry the trust bundle too.
type SVIDAnswer struct {
	SPIFFEID string   `json:"spiffe_id"`
	SVID     [][]byte `json:"svid"`
	Bundle   [][]byte `json:"bundle,omitempty"`
}

// JoinRequest is the body of POST /v1/ca/join.
type JoinRequest struct {
	Token string `json:"token"`
	CSR   []byte `json:"csr"`
}

// RenewRequest is the body of POST /v1/ca/agent/renew.
type RenewRequest struct {
	CSR []byte `json:"csr"`
}

// SelectorJSON is a selector on the wire.
type SelectorJSON struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// EntryJSON is a registration entry on the wire.
type EntryJSON struct {
	ID         string         `json:"id"`
	SPIFFEID   string         `json:"spiffe_id"`
	ParentID   string         `json:"parent_id"`
	Selectors  []SelectorJSON `json:"selectors"`
	TTLSeconds int64          `json:"ttl_seconds"`
	CreatedAt  *time.Time     `json:"created_at,omitempty"`
}

// EntryList is the answer of GET /v1/ca/agent/entries and GET /v1/ca/entries.
type EntryList struct {
	Entries []EntryJSON `json:"entries"`
}

// SVIDsRequest is the body of POST /v1/ca/agent/svids.
type SVIDsRequest struct {
	Requests []SVIDRequestJSON `json:"requests"`
}

// SVIDRequestJSON asks for the SVID of one entry.
type SVIDRequestJSON struct {
	EntryID string `json:"entry_id"`
	CSR     []byte `json:"csr"`
}

// SVIDsAnswer is the answer of POST /v1/ca/agent/svids.
type SVIDsAnswer struct {
	SVIDs  []SVIDItem  `json:"svids"`
	Errors []SVIDError `json:"errors"`
}

// SVIDItem is one issued SVID of a batch.
type SVIDItem struct {
	EntryID   string    `json:"entry_id"`
	SPIFFEID  string    `json:"spiffe_id"`
	SVID      [][]byte  `json:"svid"`
	ExpiresAt time.Time `json:"expires_at"`
}

// SVIDError is one refused request of a batch.
type SVIDError struct {
	EntryID string `json:"entry_id"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// JWTSVIDRequest is the body of POST /v1/ca/agent/jwt-svids.
type JWTSVIDRequest struct {
	SPIFFEID string   `json:"spiffe_id"`
	Audience []string `json:"audience"`
}

// JWTSVIDAnswer is the answer of POST /v1/ca/agent/jwt-svids.
type JWTSVIDAnswer struct {
	Token string `json:"token"`
}

// BundleAnswer is the answer of GET /v1/ca/bundle.
type BundleAnswer struct {
	TrustDomain        string             `json:"trust_domain"`
	X509Authorities    [][]byte           `json:"x509_authorities"`
	JWTAuthorities     jose.JSONWebKeySet `json:"jwt_authorities"`
	RefreshHintSeconds int64              `json:"refresh_hint_seconds"`
	Sequence           uint64             `json:"sequence"`
}

// DenyEntryJSON is a deny-list entry on the wire.
type DenyEntryJSON struct {
	Seq    int64  `json:"seq"`
	Kind   string `json:"kind"`
	Value  string `json:"value"`
	Reason string `json:"reason"`
}

// DenyListAnswer is the answer of GET /v1/ca/denylist.
type DenyListAnswer struct {
	Entries []DenyEntryJSON `json:"entries"`
	Next    int64           `json:"next"`
}

// EventsRequest is the body of POST /v1/ca/agent/events.
type EventsRequest struct {
	Events []json.RawMessage `json:"events"`
}

// entryJSON converts e to its wire form.
func entryJSON(e *Entry) EntryJSON {
	out := EntryJSON{ID: e.ID, SPIFFEID: e.SPIFFEID.String(), TTLSeconds: int64(e.TTL / time.Second), Selectors: []SelectorJSON{}}
	if !e.ParentID.IsZero() {
		out.ParentID = e.ParentID.String()
	}
	for _, s := range e.Selectors {
		out.Selectors = append(out.Selectors, SelectorJSON(s))
	}
	if !e.CreatedAt.IsZero() {
		t := e.CreatedAt.UTC()
		out.CreatedAt = &t
	}
	return out
}

// EntryFromJSON converts a wire entry back; it is what agents use.
func EntryFromJSON(j EntryJSON) (Entry, error) {
	e := Entry{ID: j.ID, TTL: time.Duration(j.TTLSeconds) * time.Second}
	var err error
	if e.SPIFFEID, err = spiffeid.FromString(j.SPIFFEID); err != nil {
		return Entry{}, fmt.Errorf("entry %s: spiffe_id: %w", j.ID, err)
	}
	if j.ParentID != "" {
		if e.ParentID, err = spiffeid.FromString(j.ParentID); err != nil {
			return Entry{}, fmt.Errorf("entry %s: parent_id: %w", j.ID, err)
		}
	}
	for _, s := range j.Selectors {
		e.Selectors = append(e.Selectors, Selector(s))
	}
	if j.CreatedAt != nil {
		e.CreatedAt = *j.CreatedAt
	}
	return e, nil
}

func certsDER(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// bundle serves the trust bundle: the trusted intermediates and the JWT
// authorities. It is public: it holds only public keys.
func (api *API) bundle(w http.ResponseWriter, r *http.Request) {
	b := api.a.Bundle()
	ans := BundleAnswer{
		TrustDomain:        b.TrustDomain().Name(),
		X509Authorities:    certsDER(b.X509Authorities()),
		JWTAuthorities:     jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}},
		RefreshHintSeconds: -1,
	}
	if hint, ok := b.RefreshHint(); ok {
		ans.RefreshHintSeconds = int64(hint / time.Second)
	}
	if seq, ok := b.SequenceNumber(); ok {
		ans.Sequence = seq
	}
	for kid, key := range b.JWTAuthorities() {
		ans.JWTAuthorities.Keys = append(ans.JWTAuthorities.Keys, jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	}
	httpapi.WriteJSON(w, http.StatusOK, ans)
}

// denyList serves the deny list after a sequence number. With wait > 0 it
// holds the request until a new entry arrives, the wait ends or the
// request is canceled.
func (api *API) denyList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after int64
	if s := q.Get("after"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "after must be a sequence number ≥ 0"))
			return
		}
		after = v
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "wait must be a number of seconds ≥ 0"))
			return
		}
		wait = time.Duration(min(v, int(maxDenyListWait/time.Second))) * time.Second
	}
	ctx := r.Context()
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		changed := api.a.DenyChanged()
		list, err := api.a.DenyList(ctx, after)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			api.fail(w, r, fmt.Errorf("deny list: %w", err))
			return
		}
		if len(list) > 0 || timeout == nil {
			ans := DenyListAnswer{Entries: make([]DenyEntryJSON, 0, len(list)), Next: after}
			for _, d := range list {
				ans.Entries = append(ans.Entries, DenyEntryJSON{Seq: d.Seq, Kind: d.Kind, Value: d.Value, Reason: d.Reason})
				ans.Next = max(ans.Next, d.Seq)
			}
			httpapi.WriteJSON(w, http.StatusOK, ans)
			return
		}
		select {
		case <-changed:
		case <-timeout:
			timeout = nil
		case <-ctx.Done():
			// Shutdown (or a client gone): an empty answer, so that the
			// agent simply asks again.
			httpapi.WriteJSON(w, http.StatusOK, DenyListAnswer{Entries: []DenyEntryJSON{}, Next: after})
			return
		}
	}
}

// fail sends err; errors of the Authority map to their status and code.
func (api *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var apiErr *httpapi.Error
	if !errors.As(err, &apiErr) {
		switch {
		case errors.Is(err, ErrTokenInvalid):
			err = &httpapi.Error{Status: http.StatusUnauthorized, Code: CodeInvalidJoinToken, Message: "the join token is unknown, used or expired", Err: err}
		case errors.Is(err, ErrDenied):
			err = &httpapi.Error{Status: http.StatusForbidden, Code: CodeDenied, Message: "the identity is revoked or quarantined", Err: err}
		case errors.Is(err, ErrNotFound):
			err = &httpapi.Error{Status: http.StatusNotFound, Code: httpapi.CodeNotFound, Message: publicMessage(err), Err: err}
		case errors.Is(err, ErrInvalid):
			err = &httpapi.Error{Status: http.StatusBadRequest, Code: httpapi.CodeInvalidRequest, Message: publicMessage(err), Err: err}
		}
	}
	httpapi.WriteError(w, r, api.log, err)
}

// publicMessage is the message of a validation error of the Authority:
// those name the field and never carry internals.
func publicMessage(err error) string {
	msg := err.Error()
	if len(msg) > 512 {
		msg = msg[:512]
	}
	return msg
}

// emit completes e with the request's context and appends it to the audit
// log. A failure to audit is logged: it cannot be sent to the client the
// refusal is for.
func (api *API) emit(r *http.Request, e *audit.Event) error {
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ep := &audit.Endpoint{IP: host}
		ep.Port, _ = strconv.Atoi(port)
		e.SrcEndpoint = ep
	}
	if e.Metadata.CorrelationUID == "" {
		e.Metadata.CorrelationUID = httpapi.RequestID(r.Context())
	}
	e.Metadata.Product = "bulwark ca"
	if err := api.appendAudit(r.Context(), []*audit.Event{e}); err != nil {
		api.log.ErrorContext(r.Context(), "audit append failed", "class", e.ClassUID, "activity", e.ActivityID, "error", err)
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// appendAudit appends events to the Authority's audit log.
func (api *API) appendAudit(ctx context.Context, events []*audit.Event) error {
	_, err := api.a.audit.Append(ctx, events)
	return err
}

// OCSF classes and activities of the API's own events.
const (
	apiClassAuthentication = 3002
	apiClassEntity         = 3004
	apiClassAPIActivity    = 6003

	apiActLogon = 1 // Authentication: Logon (agent authentication)
	apiActRead  = 2 // API Activity: Read
)

// refusal returns a failure event of class/activity.
func refusal(class, activity int, detail string, resources ...audit.Resource) *audit.Event {
	return &audit.Event{ClassUID: class, ActivityID: activity, StatusID: audit.StatusFailure, SeverityID: 3,
		StatusDetail: detail, Resources: resources}
}
