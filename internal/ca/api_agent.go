package ca

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/audit"
	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// agentHandler is an agent endpoint, called with the authenticated agent.
type agentHandler func(w http.ResponseWriter, r *http.Request, agent spiffeid.ID)

// agent authenticates the TLS client certificate as an agent SVID of this
// CA and calls h. Anything else is refused with 401 and audited.
func (api *API) agent(h agentHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var detail string
		var res []audit.Resource
		var id spiffeid.ID
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			detail = "no client certificate"
		} else {
			leaf := r.TLS.PeerCertificates[0]
			res = append(res, audit.Resource{Type: "certificate", UID: leaf.SerialNumber.Text(16)})
			var err error
			if id, err = api.a.VerifyAgent(r.TLS.PeerCertificates); err != nil {
				detail = "client certificate is not a valid agent SVID: " + err.Error()
			}
		}
		if detail != "" {
			e := refusal(apiClassAuthentication, apiActLogon, detail, res...)
			e.Actor = &audit.Actor{AppName: "bulwark agent"}
			_ = api.emit(r, e)
			api.fail(w, r, httpapi.Errorf(http.StatusUnauthorized, httpapi.CodeUnauthenticated,
				"agent endpoints need the agent's X.509-SVID as TLS client certificate"))
			return
		}
		h(w, r, id)
	}
}

func agentActor(agent spiffeid.ID) *audit.Actor {
	return &audit.Actor{AppName: "bulwark agent", AppUID: agent.String()}
}

// join exchanges a join token and a CSR for the agent's first SVID.
func (api *API) join(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	if err := httpapi.DecodeJSON(w, r, maxSmallBody, &req); err != nil {
		api.fail(w, r, err)
		return
	}
	// An empty token goes to Join too, which refuses and audits it.
	if len(req.CSR) == 0 {
		api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "csr is required"))
		return
	}
	iss, err := api.a.Join(r.Context(), req.Token, req.CSR)
	if err != nil {
		api.fail(w, r, csrError(err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, SVIDAnswer{
		SPIFFEID: iss.ID.String(), SVID: certsDER(iss.Certificates), Bundle: certsDER(api.a.X509Authorities()),
	})
}

// csrError maps an ErrInvalid of signing to invalid_csr.
func csrError(err error) error {
	if errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTokenInvalid) {
		return &httpapi.Error{Status: http.StatusBadRequest, Code: CodeInvalidCSR, Message: publicMessage(err), Err: err}
	}
	return err
}

// renew issues the agent a new SVID of its own identity.
func (api *API) renew(w http.ResponseWriter, r *http.Request, agent spiffeid.ID) {
	var req RenewRequest
	if err := httpapi.DecodeJSON(w, r, maxSmallBody, &req); err != nil {
		api.fail(w, r, err)
		return
	}
	if len(req.CSR) == 0 {
		api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "csr is required"))
		return
	}
	iss, err := api.a.SignX509SVID(r.Context(), req.CSR, agent, 0, agent)
	if err != nil {
		api.fail(w, r, csrError(err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, SVIDAnswer{SPIFFEID: iss.ID.String(), SVID: certsDER(iss.Certificates)})
}

// entries lists the registration entries the agent serves.
func (api *API) entries(w http.ResponseWriter, r *http.Request, agent spiffeid.ID) {
	list, err := api.a.EntriesForAgent(r.Context(), agent)
	if err != nil {
		api.fail(w, r, fmt.Errorf("entries for agent: %w", err))
		return
	}
	ans := EntryList{Entries: make([]EntryJSON, 0, len(list))}
	for i := range list {
		ans.Entries = append(ans.Entries, entryJSON(&list[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, ans)
}

// svids signs a batch of workload SVIDs. Each request names an entry of
// this agent; an entry of another agent fails the whole batch (403,
// audited), an unknown one (deleted since) or a bad CSR fails its item.
func (api *API) svids(w http.ResponseWriter, r *http.Request, agent spiffeid.ID) {
	var req SVIDsRequest
	if err := httpapi.DecodeJSON(w, r, maxSVIDsBody, &req); err != nil {
		api.fail(w, r, err)
		return
	}
	if len(req.Requests) == 0 || len(req.Requests) > maxSVIDRequests {
		api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "requests must hold 1 to %d items, got %d", maxSVIDRequests, len(req.Requests)))
		return
	}
	ctx := r.Context()
	mine, err := api.a.EntriesForAgent(ctx, agent)
	if err != nil {
		api.fail(w, r, fmt.Errorf("entries for agent: %w", err))
		return
	}
	byID := make(map[string]*Entry, len(mine))
	for i := range mine {
		byID[mine[i].ID] = &mine[i]
	}
	var foreign []string
	for _, q := range req.Requests {
		if byID[q.EntryID] == nil {
			foreign = append(foreign, q.EntryID)
		}
	}
	if len(foreign) > 0 {
		all, err := api.a.ListEntries(ctx)
		if err != nil {
			api.fail(w, r, fmt.Errorf("list entries: %w", err))
			return
		}
		for _, e := range all {
			for _, id := range foreign {
				if e.ID == id {
					api.forbidden(w, r, agent, "entry "+id+" ("+e.SPIFFEID.String()+") is not registered for this agent")
					return
				}
			}
		}
	}
	ans := SVIDsAnswer{SVIDs: []SVIDItem{}, Errors: []SVIDError{}}
	// Sign every known entry's CSR in one batch (one inventory transaction
	// and one audit append for the whole request); answer in request order.
	var batch []SVIDRequest
	for _, q := range req.Requests {
		if e := byID[q.EntryID]; e != nil {
			batch = append(batch, SVIDRequest{ID: e.SPIFFEID, CSR: q.CSR, TTL: e.TTL})
		}
	}
	var results []SVIDResult
	if len(batch) > 0 {
		results = api.a.SignX509SVIDs(ctx, agent, batch)
		if ctx.Err() != nil {
			api.fail(w, r, ctx.Err())
			return
		}
	}
	for _, q := range req.Requests {
		if byID[q.EntryID] == nil {
			ans.Errors = append(ans.Errors, SVIDError{EntryID: q.EntryID, Code: httpapi.CodeNotFound, Message: "no such entry"})
			continue
		}
		res := results[0]
		results = results[1:]
		if res.Err != nil {
			ans.Errors = append(ans.Errors, svidError(q.EntryID, res.Err))
			continue
		}
		iss := res.Issued
		ans.SVIDs = append(ans.SVIDs, SVIDItem{EntryID: q.EntryID, SPIFFEID: iss.ID.String(), SVID: certsDER(iss.Certificates), ExpiresAt: iss.ExpiresAt.UTC()})
	}
	httpapi.WriteJSON(w, http.StatusOK, ans)
}

func svidError(entryID string, err error) SVIDError {
	switch {
	case errors.Is(err, ErrDenied):
		return SVIDError{EntryID: entryID, Code: CodeDenied, Message: "the identity is revoked or quarantined"}
	case errors.Is(err, ErrInvalid):
		return SVIDError{EntryID: entryID, Code: CodeInvalidCSR, Message: publicMessage(err)}
	}
	return SVIDError{EntryID: entryID, Code: httpapi.CodeInternal, Message: "internal error"}
}

// forbidden refuses an agent's request for an identity that is not its
// own to hand out, and audits it.
func (api *API) forbidden(w http.ResponseWriter, r *http.Request, agent spiffeid.ID, detail string) {
	e := refusal(apiClassAuthentication, apiActLogon, detail)
	e.ActivityID = 4 // Service Ticket Request
	e.Actor = agentActor(agent)
	_ = api.emit(r, e)
	api.fail(w, r, httpapi.Errorf(http.StatusForbidden, CodeForbidden, "%s", detail))
}

// jwtSVID signs a JWT-SVID for an identity registered for this agent.
func (api *API) jwtSVID(w http.ResponseWriter, r *http.Request, agent spiffeid.ID) {
	var req JWTSVIDRequest
	if err := httpapi.DecodeJSON(w, r, maxSmallBody, &req); err != nil {
		api.fail(w, r, err)
		return
	}
	id, err := spiffeid.FromString(req.SPIFFEID)
	if err != nil {
		api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "spiffe_id: %v", err))
		return
	}
	if len(req.Audience) == 0 {
		api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "audience is required"))
		return
	}
	for _, a := range req.Audience {
		if strings.TrimSpace(a) == "" || len(a) > 512 {
			api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "audience values must be non-empty and at most 512 bytes"))
			return
		}
	}
	mine, err := api.a.EntriesForAgent(r.Context(), agent)
	if err != nil {
		api.fail(w, r, fmt.Errorf("entries for agent: %w", err))
		return
	}
	found := false
	for _, e := range mine {
		found = found || e.SPIFFEID == id
	}
	if !found {
		api.forbidden(w, r, agent, "no entry of this agent has the SPIFFE ID "+id.String())
		return
	}
	token, err := api.a.SignJWTSVID(r.Context(), id, req.Audience, 0)
	if err != nil {
		api.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, JWTSVIDAnswer{Token: token})
}

// agentEventClasses are the classes an agent may append.
var agentEventClasses = map[int]bool{apiClassAuthentication: true, apiClassEntity: true, apiClassAPIActivity: true}

// events appends the agent's audit events (attestation failures and the
// like), with the agent as the actor. One bad event refuses the batch.
func (api *API) events(w http.ResponseWriter, r *http.Request, agent spiffeid.ID) {
	var req EventsRequest
	if err := httpapi.DecodeJSON(w, r, maxEventsBody, &req); err != nil {
		api.fail(w, r, err)
		return
	}
	if len(req.Events) == 0 || len(req.Events) > maxAgentEvents {
		api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "events must hold 1 to %d events, got %d", maxAgentEvents, len(req.Events)))
		return
	}
	now := api.a.now()
	events := make([]*audit.Event, len(req.Events))
	for i, raw := range req.Events {
		e, err := audit.DecodeEvent(raw)
		if err != nil {
			api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, CodeInvalidEvent, "event %d: %v", i, err))
			return
		}
		events[i] = e
		if !agentEventClasses[e.ClassUID] {
			api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, CodeInvalidEvent, "event %d: class_uid must be 3002, 3004 or 6003, got %d", i, e.ClassUID))
			return
		}
		if e.Actor == nil {
			e.Actor = &audit.Actor{}
		}
		// The agent speaks for itself only: the actor and product are
		// forced, so that no agent can pass an event off as another's or
		// as the control plane's.
		e.Actor.AppUID, e.Actor.AppName = agent.String(), "bulwark agent"
		e.Metadata.Product = "bulwark agent"
		if e.Metadata.CorrelationUID == "" {
			e.Metadata.CorrelationUID = httpapi.RequestID(r.Context())
		}
		if err := e.Normalize(now); err != nil {
			api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, CodeInvalidEvent, "event %d: %v", i, err))
			return
		}
		if !agentEventClasses[e.ClassUID] { // a class_name may not switch the class
			api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, CodeInvalidEvent, "event %d: class must be 3002, 3004 or 6003", i))
			return
		}
	}
	if err := api.appendAudit(r.Context(), events); err != nil {
		var ve *audit.ValidationError
		if errors.As(err, &ve) {
			api.fail(w, r, httpapi.Errorf(http.StatusBadRequest, CodeInvalidEvent, "event %d: %s", ve.Index, ve.Msg))
			return
		}
		api.fail(w, r, fmt.Errorf("append agent events: %w", err))
		return
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]int{"accepted": len(req.Events)})
}
