package audit

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Stable error codes of the audit API, beside httpapi's.
const (
	CodeTooManyEvents = "too_many_events"
	CodeOutOfRange    = "out_of_range"
	CodeEmptyBatch    = "empty_batch"
)

// APIConfig bounds the audit API.
type APIConfig struct {
	MaxBatchEvents  int   // default 1000
	MaxRequestBytes int64 // default 8 MiB
	// AppendAuth, if set, authenticates POST /v1/audit/events instead of
	// Register's auth: the control plane lets enforcement points (agents,
	// gateways) with an X.509-SVID append their security events.
	AppendAuth func(http.Handler) http.Handler
	// Reporter, if set, names the authenticated workload that appends, or
	// "" for an operator; each event it appends gets unmapped.reported_by
	// set to that name, overwriting any value the event carried, so a reader
	// knows which workload vouched for it.
	Reporter func(ctx context.Context) string
}

// maxEntriesPage is the most entries one GET /v1/audit/entries returns.
const maxEntriesPage = 1000

// API serves the audit log over HTTP under /v1/audit/.
type API struct {
	log  *Log
	cfg  APIConfig
	slog *slog.Logger
}

// NewAPI returns the HTTP API of l.
func NewAPI(l *Log, cfg APIConfig, logger *slog.Logger) (*API, error) {
	if l == nil {
		return nil, errors.New("audit API: no log")
	}
	if cfg.MaxBatchEvents <= 0 {
		cfg.MaxBatchEvents = 1000
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 8 << 20
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{log: l, cfg: cfg, slog: logger}, nil
}

// Register adds the routes to mux. auth wraps the handlers that need an
// authenticated caller: appending, reading entries and payloads, and
// forcing a checkpoint. Checkpoints, hash tiles and proofs hold only hashes
// and are public, so that witnesses and tile clients can follow the log.
func (a *API) Register(mux *http.ServeMux, auth func(http.Handler) http.Handler) {
	appendAuth := auth
	if a.cfg.AppendAuth != nil {
		appendAuth = a.cfg.AppendAuth
	}
	mux.Handle("POST /v1/audit/events", appendAuth(http.HandlerFunc(a.appendEvents)))
	mux.Handle("GET /v1/audit/entries", auth(http.HandlerFunc(a.entries)))
	mux.Handle("GET /v1/audit/blobs/{sha256}", auth(http.HandlerFunc(a.blob)))
	mux.Handle("POST /v1/audit/checkpoint", auth(http.HandlerFunc(a.issueCheckpoint)))
	mux.HandleFunc("GET /v1/audit/checkpoint", a.checkpoint)
	mux.HandleFunc("GET /v1/audit/key", a.key)
	mux.HandleFunc("GET /v1/audit/proofs/inclusion", a.inclusion)
	mux.HandleFunc("GET /v1/audit/proofs/consistency", a.consistency)
	mux.Handle("GET /v1/audit/tile/entries/", auth(http.HandlerFunc(a.tile)))
	mux.HandleFunc("GET /v1/audit/tile/", a.tile)
}

// AppendRequest is the body of POST /v1/audit/events.
type AppendRequest struct {
	Events []json.RawMessage `json:"events"`
}

// AppendResponse answers POST /v1/audit/events.
type AppendResponse struct {
	FirstIndex int64           `json:"first_index"`
	Count      int             `json:"count"`
	Entries    []AppendedEntry `json:"entries"`
}

// AppendedEntry is one appended event's index and leaf hash.
type AppendedEntry struct {
	Index    int64  `json:"index"`
	LeafHash []byte `json:"leaf_hash"`
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var apiErr *httpapi.Error
	var ve *ValidationError
	switch {
	case errors.As(err, &apiErr):
	case errors.As(err, &ve):
		apiErr = &httpapi.Error{Status: http.StatusBadRequest, Code: ve.Code, Message: ve.Error()}
	case errors.Is(err, ErrOutOfRange):
		apiErr = httpapi.Errorf(http.StatusBadRequest, CodeOutOfRange, "%v", err)
	case errors.Is(err, ErrNotFound):
		apiErr = httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "not found")
	case errors.Is(err, ErrClosed):
		apiErr = httpapi.Errorf(http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the audit log is shutting down")
	default:
		apiErr = &httpapi.Error{Status: http.StatusInternalServerError, Code: httpapi.CodeInternal,
			Message: "internal error; quote the request ID to an operator", Err: err}
	}
	a.log.metrics.rejected(apiErr.Code)
	httpapi.WriteError(w, r, a.slog, apiErr)
}

func (a *API) appendEvents(w http.ResponseWriter, r *http.Request) {
	var req AppendRequest
	if err := httpapi.DecodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if len(req.Events) == 0 {
		a.fail(w, r, httpapi.Errorf(http.StatusBadRequest, CodeEmptyBatch, "the batch has no events"))
		return
	}
	if len(req.Events) > a.cfg.MaxBatchEvents {
		a.fail(w, r, httpapi.Errorf(http.StatusRequestEntityTooLarge, CodeTooManyEvents,
			"the batch has %d events; the limit is %d", len(req.Events), a.cfg.MaxBatchEvents))
		return
	}
	events := make([]*Event, len(req.Events))
	for i, raw := range req.Events {
		e, err := DecodeEvent(raw)
		if err != nil {
			a.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidJSON, "event %d: %v", i, err))
			return
		}
		events[i] = e
	}
	if a.cfg.Reporter != nil {
		if who := a.cfg.Reporter(r.Context()); who != "" {
			for _, e := range events {
				if e.Unmapped == nil {
					e.Unmapped = map[string]any{}
				}
				e.Unmapped["reported_by"] = who
			}
		}
	}
	res, err := a.log.Append(r.Context(), events)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	resp := AppendResponse{FirstIndex: res.First, Count: len(events), Entries: make([]AppendedEntry, len(events))}
	for i, h := range res.LeafHashes {
		resp.Entries[i] = AppendedEntry{Index: res.First + int64(i), LeafHash: h[:]}
	}
	httpapi.WriteJSON(w, http.StatusCreated, resp)
}

// EntriesResponse answers GET /v1/audit/entries.
type EntriesResponse struct {
	TreeSize int64       `json:"tree_size"`
	Entries  []EntryJSON `json:"entries"`
}

// EntryJSON is one entry: its exact bytes (base64) and, for reading, the
// same bytes as a JSON value.
type EntryJSON struct {
	Index    int64           `json:"index"`
	LeafHash []byte          `json:"leaf_hash"`
	Data     []byte          `json:"data"`
	Event    json.RawMessage `json:"event,omitempty"`
}

func (a *API) entries(w http.ResponseWriter, r *http.Request) {
	start, err := queryInt(r, "start", 0)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit, err := queryInt(r, "limit", 100)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if start < 0 || limit < 1 || limit > maxEntriesPage {
		a.fail(w, r, httpapi.Errorf(http.StatusBadRequest, CodeOutOfRange, "need start >= 0 and 1 <= limit <= %d", maxEntriesPage))
		return
	}
	size, err := a.log.Size(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	entries, err := a.log.Entries(r.Context(), start, int(min(limit, max(size-start, 0))))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	resp := EntriesResponse{TreeSize: size, Entries: make([]EntryJSON, len(entries))}
	for i, e := range entries {
		h := tlog.RecordHash(e.Data)
		ej := EntryJSON{Index: e.Index, LeafHash: h[:], Data: e.Data}
		if json.Valid(e.Data) {
			ej.Event = e.Data
		}
		resp.Entries[i] = ej
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
}

func (a *API) blob(w http.ResponseWriter, r *http.Request) {
	data, err := a.log.Blob(r.Context(), r.PathValue("sha256"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	_, _ = w.Write(data)
}

func (a *API) checkpoint(w http.ResponseWriter, r *http.Request) {
	ck, err := a.log.LatestCheckpoint(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeText(w, ck.Note, "no-cache")
}

func (a *API) issueCheckpoint(w http.ResponseWriter, r *http.Request) {
	ck, err := a.log.IssueCheckpoint(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeText(w, ck.Note, "no-store")
}

func (a *API) key(w http.ResponseWriter, _ *http.Request) {
	writeText(w, []byte(a.log.VerifierKey()+"\n"), "public, max-age=3600")
}

func writeText(w http.ResponseWriter, body []byte, cache string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", cache)
	_, _ = w.Write(body)
}

// InclusionResponse answers GET /v1/audit/proofs/inclusion.
type InclusionResponse struct {
	Index    int64    `json:"index"`
	TreeSize int64    `json:"tree_size"`
	LeafHash []byte   `json:"leaf_hash"`
	Proof    [][]byte `json:"proof"`
	// Checkpoint is the signed checkpoint of TreeSize, when one exists.
	Checkpoint string `json:"checkpoint,omitempty"`
}

func (a *API) inclusion(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	index, err := queryInt(r, "index", -1)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if index < 0 {
		a.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "query parameter index is required"))
		return
	}
	var ck *Checkpoint
	treeSize, err := queryInt(r, "tree_size", -1)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if treeSize < 0 {
		if ck, err = a.log.LatestCheckpoint(ctx); err != nil {
			a.fail(w, r, err)
			return
		}
		treeSize = ck.Size
	} else if ck, err = a.log.checkpointAt(ctx, treeSize); err != nil && !errors.Is(err, ErrNotFound) {
		a.fail(w, r, err)
		return
	}
	proof, err := a.log.InclusionProof(ctx, index, treeSize)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	leaf, err := a.log.reader(ctx).ReadHashes([]int64{tlog.StoredHashIndex(0, index)})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	resp := InclusionResponse{Index: index, TreeSize: treeSize, LeafHash: leaf[0][:], Proof: hashesToBytes(proof)}
	if ck != nil {
		resp.Checkpoint = string(ck.Note)
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
}

// ConsistencyResponse answers GET /v1/audit/proofs/consistency.
type ConsistencyResponse struct {
	From  int64    `json:"from"`
	To    int64    `json:"to"`
	Proof [][]byte `json:"proof"`
}

func (a *API) consistency(w http.ResponseWriter, r *http.Request) {
	from, err := queryInt(r, "from", -1)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	to, err := queryInt(r, "to", -1)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if from < 0 || to < 0 {
		a.fail(w, r, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "query parameters from and to are required"))
		return
	}
	proof, err := a.log.ConsistencyProof(r.Context(), from, to)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, ConsistencyResponse{From: from, To: to, Proof: hashesToBytes(proof)})
}

func (a *API) tile(w http.ResponseWriter, r *http.Request) {
	rel := r.URL.Path[len("/v1/audit/"):]
	t, err := ParseTilePath(rel)
	if err != nil {
		a.fail(w, r, httpapi.Errorf(http.StatusNotFound, httpapi.CodeNotFound, "%v", err))
		return
	}
	data, err := a.log.ReadTile(r.Context(), t)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	// Full tiles never change; partial ones are replaced as the tree grows.
	// Entry bundles are readable only with a credential: never in shared caches.
	scope, age := "public", "max-age=31536000, immutable"
	if t.L < 0 {
		scope = "private"
	}
	if t.W < 1<<TileHeight {
		age = "no-cache"
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", scope+", "+age)
	_, _ = w.Write(data)
}

func hashesToBytes(hs []tlog.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

func queryInt(r *http.Request, name string, def int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRequest, "query parameter %s=%q is not an integer", name, s)
	}
	return v, nil
}
