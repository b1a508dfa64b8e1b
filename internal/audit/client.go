package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Bounds on what the client reads from a server: a misbehaving or hostile
// server cannot make it buffer more than these.
const (
	maxErrorBodyBytes  = 64 << 10
	maxKeyBytes        = 4 << 10
	maxProofBodyBytes  = 64 << 10 // 64 hashes in base64 JSON and a checkpoint
	maxAppendRespBytes = 16 << 20
	maxBlobBytes       = 64 << 20
	// maxEntryBundleBytes is a full entry bundle of maximal entries.
	maxEntryBundleBytes = (1 << TileHeight) * (2 + MaxEntryBytes)
	// maxProofHashes bounds a proof: a tree of 2^62 entries needs 62.
	maxProofHashes = 64
)

// maxEntriesRespBytes bounds an entries page of limit entries: each entry
// is sent as base64 and again as JSON.
func maxEntriesRespBytes(limit int) int64 {
	return int64(limit)*3*(MaxEntryBytes+1024) + 64<<10
}

// APIError is an error answer from the audit API: the HTTP status and the
// stable code, message and request ID of its JSON error body.
type APIError struct {
	Method    string
	Path      string // the request path, without the query
	Status    int
	Code      string
	Message   string
	RequestID string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "audit API %s %s: %d", e.Method, e.Path, e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.RequestID != "" {
		b.WriteString(" (request ID " + e.RequestID + ")")
	}
	return b.String()
}

// Is lets errors.Is(err, ErrNotFound) match a 404 answer.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
}

// Client calls the audit HTTP API of a Bulwark control plane. It is safe for
// concurrent use. The credential is sent only as a bearer token and never
// appears in errors.
type Client struct {
	base       *url.URL
	hc         *http.Client
	credential string
}

// NewClient returns a client of the audit API at baseURL (the control
// plane's URL; the API lives under /v1/audit/). hc nil means
// http.DefaultClient. The credential (a bwk_ admin credential) may be empty
// for the public routes. A credential is sent over plain HTTP only to a
// loopback address.
func NewClient(baseURL string, hc *http.Client, credential string) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil {
		return nil, fmt.Errorf("audit client: server URL: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("audit client: server URL %q must be https://host[:port]", baseURL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("audit client: server URL must not carry user info, a query or a fragment")
	}
	if u.Scheme == "http" && credential != "" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("audit client: refusing to send a credential over plain HTTP to %s; use https", u.Host)
	}
	if strings.ContainsAny(credential, " \t\r\n") {
		return nil, errors.New("audit client: the credential contains white space")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u, hc: hc, credential: credential}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// NewHTTPClient returns an HTTP client for talking to a control plane:
// TLS 1.2 at least, trusting only the CA certificates in caPEM, or the
// system roots when caPEM is empty.
func NewHTTPClient(caPEM []byte) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(bytes.TrimSpace(caPEM)) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("CA certificate file holds no PEM certificate")
		}
		cfg.RootCAs = pool
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true,
		MaxIdleConns: 16, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}
	if def, ok := http.DefaultTransport.(*http.Transport); ok {
		tr = def.Clone()
	}
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}, nil
}

// do sends one request and returns the body of a 2xx answer, read up to
// limit bytes; any other answer becomes an *APIError.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, limit int64) ([]byte, error) {
	u := *c.base
	u.Path = c.base.Path + path
	if query != nil {
		u.RawQuery = query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("audit API %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "bulwark-audit-client")
	if c.credential != "" {
		req.Header.Set("Authorization", "Bearer "+c.credential)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("audit API %s %s: %w", method, path, redactURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, decodeAPIError(method, path, resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("audit API %s %s: read answer: %w", method, path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("audit API %s %s: answer larger than %d bytes", method, path, limit)
	}
	return data, nil
}

// redactURLError keeps the operation and cause of a transport error but not
// its URL (which holds nothing secret today, but the query may one day).
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func decodeAPIError(method, path string, resp *http.Response) error {
	e := &APIError{Method: method, Path: path, Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-ID")}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	var body httpapi.ErrorBody
	if err := json.Unmarshal(raw, &body); err == nil && body.Error.Code != "" {
		e.Code, e.Message = printable(body.Error.Code, 64), printable(body.Error.Message, 1024)
		if body.Error.RequestID != "" {
			e.RequestID = body.Error.RequestID
		}
	} else {
		e.Message = printable(http.StatusText(resp.StatusCode), 64)
	}
	e.RequestID = printable(e.RequestID, 64)
	return e
}

// printable cuts s to n bytes and drops control characters, so that a
// server cannot write terminal escapes through an error message.
func printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

func (c *Client) getJSON(ctx context.Context, path string, query url.Values, limit int64, v any) error {
	data, err := c.do(ctx, http.MethodGet, path, query, nil, limit)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("audit API GET %s: decode answer: %w", path, err)
	}
	return nil
}

// Append logs events as one batch and returns where they were logged.
func (c *Client) Append(ctx context.Context, events []*Event) (*AppendResponse, error) {
	req := AppendRequest{Events: make([]json.RawMessage, len(events))}
	for i, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode event %d: %w", i, err)
		}
		req.Events[i] = b
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode batch: %w", err)
	}
	data, err := c.do(ctx, http.MethodPost, "/v1/audit/events", nil, body, maxAppendRespBytes)
	if err != nil {
		return nil, err
	}
	var resp AppendResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("audit API POST /v1/audit/events: decode answer: %w", err)
	}
	if resp.Count != len(events) || len(resp.Entries) != len(events) {
		return nil, fmt.Errorf("audit API POST /v1/audit/events: %d events sent, %d acknowledged", len(events), len(resp.Entries))
	}
	return &resp, nil
}

// Checkpoint returns the latest signed checkpoint note, unverified.
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	return c.do(ctx, http.MethodGet, "/v1/audit/checkpoint", nil, nil, maxCheckpointBytes)
}

// IssueCheckpoint asks the log to sign a checkpoint of its current size
// now and returns it, unverified.
func (c *Client) IssueCheckpoint(ctx context.Context) ([]byte, error) {
	return c.do(ctx, http.MethodPost, "/v1/audit/checkpoint", nil, nil, maxCheckpointBytes)
}

// Key returns the log's published signed-note verifier key. The key comes
// from the server: trust it only as far as you trust the connection, and pin it.
func (c *Client) Key(ctx context.Context) (string, error) {
	data, err := c.do(ctx, http.MethodGet, "/v1/audit/key", nil, nil, maxKeyBytes)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// Entries returns up to limit entries from index start (1 <= limit <= 1000).
func (c *Client) Entries(ctx context.Context, start int64, limit int) (*EntriesResponse, error) {
	if start < 0 || limit < 1 || limit > maxEntriesPage {
		return nil, fmt.Errorf("entries: need start >= 0 and 1 <= limit <= %d", maxEntriesPage)
	}
	q := url.Values{"start": {strconv.FormatInt(start, 10)}, "limit": {strconv.Itoa(limit)}}
	var resp EntriesResponse
	if err := c.getJSON(ctx, "/v1/audit/entries", q, maxEntriesRespBytes(limit), &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// InclusionProof returns the proof that entry index is in the tree of size
// treeSize; treeSize 0 means the latest checkpoint. The proof is unverified:
// check it with tlog.CheckRecord against a verified checkpoint.
func (c *Client) InclusionProof(ctx context.Context, index, treeSize int64) (*InclusionResponse, error) {
	q := url.Values{"index": {strconv.FormatInt(index, 10)}}
	if treeSize > 0 {
		q.Set("tree_size", strconv.FormatInt(treeSize, 10))
	}
	var resp InclusionResponse
	if err := c.getJSON(ctx, "/v1/audit/proofs/inclusion", q, maxProofBodyBytes+maxCheckpointBytes, &resp); err != nil {
		return nil, err
	}
	if _, err := hashesFromBytes(resp.Proof); err != nil {
		return nil, fmt.Errorf("inclusion proof: %w", err)
	}
	return &resp, nil
}

// ConsistencyProof returns the proof that the tree of size from is a prefix
// of the tree of size to, unverified: check it with tlog.CheckTree.
func (c *Client) ConsistencyProof(ctx context.Context, from, to int64) (*ConsistencyResponse, error) {
	q := url.Values{"from": {strconv.FormatInt(from, 10)}, "to": {strconv.FormatInt(to, 10)}}
	var resp ConsistencyResponse
	if err := c.getJSON(ctx, "/v1/audit/proofs/consistency", q, maxProofBodyBytes, &resp); err != nil {
		return nil, err
	}
	if _, err := hashesFromBytes(resp.Proof); err != nil {
		return nil, fmt.Errorf("consistency proof: %w", err)
	}
	return &resp, nil
}

// RecordProof returns the proof as tlog hashes.
func (r *InclusionResponse) RecordProof() (tlog.RecordProof, error) {
	return hashesFromBytes(r.Proof)
}

// TreeProof returns the proof as tlog hashes.
func (r *ConsistencyResponse) TreeProof() (tlog.TreeProof, error) {
	return hashesFromBytes(r.Proof)
}

func hashesFromBytes(bs [][]byte) ([]tlog.Hash, error) {
	if len(bs) > maxProofHashes {
		return nil, fmt.Errorf("proof has %d hashes, more than %d", len(bs), maxProofHashes)
	}
	out := make([]tlog.Hash, len(bs))
	for i, b := range bs {
		if len(b) != tlog.HashSize {
			return nil, fmt.Errorf("proof hash %d is %d bytes, want %d", i, len(b), tlog.HashSize)
		}
		copy(out[i][:], b)
	}
	return out, nil
}

// Tile returns a C2SP tile: W hashes of a Merkle tile, or an entry bundle
// (t.L == -1, which needs the credential). The data is unauthenticated: feed
// it to tlog.TileHashReader through TileReader.
func (c *Client) Tile(ctx context.Context, t tlog.Tile) ([]byte, error) {
	if t.H != TileHeight || t.L < -1 || t.W < 1 || t.W > 1<<TileHeight || t.N < 0 {
		return nil, fmt.Errorf("tile %+v: not a C2SP tile", t)
	}
	limit := int64(t.W * tlog.HashSize)
	if t.L < 0 {
		limit = maxEntryBundleBytes
	}
	path := "/v1/audit/" + TilePath(t)
	data, err := c.do(ctx, http.MethodGet, path, nil, nil, limit)
	if err != nil {
		return nil, err
	}
	if t.L >= 0 && len(data) != t.W*tlog.HashSize {
		return nil, fmt.Errorf("audit API GET %s: %d bytes, want %d", path, len(data), t.W*tlog.HashSize)
	}
	return data, nil
}

// Blob returns the payload of an oversized event by the hex SHA-256 in its
// payload_ref, checked against that hash.
func (c *Client) Blob(ctx context.Context, sha256Hex string) ([]byte, error) {
	if !validSHA256Hex(sha256Hex) {
		return nil, fmt.Errorf("payload hash %q: want 64 lowercase hex digits", sha256Hex)
	}
	data, err := c.do(ctx, http.MethodGet, "/v1/audit/blobs/"+sha256Hex, nil, nil, maxBlobBytes)
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha256Hex {
		return nil, fmt.Errorf("payload %s: the server sent data with another SHA-256", sha256Hex)
	}
	return data, nil
}

func validSHA256Hex(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// TileReader returns a tlog.TileReader that fetches hash tiles over HTTP
// with ctx, keeping them in memory for its lifetime. Use it with
// tlog.TileHashReader, which authenticates every tile against a tree.
func (c *Client) TileReader(ctx context.Context) tlog.TileReader {
	return newTileCache(func(tiles []tlog.Tile) ([][]byte, error) {
		return fetchTiles(ctx, tiles, c.Tile)
	})
}

// fetchTiles fetches tiles with a few requests in flight.
func fetchTiles(ctx context.Context, tiles []tlog.Tile, get func(context.Context, tlog.Tile) ([]byte, error)) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, t := range tiles {
		g.Go(func() error {
			b, err := get(gctx, t)
			if err != nil {
				return err
			}
			out[i] = b
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// tileCache is a tlog.TileReader over a fetch function that keeps, for its
// lifetime, every tile above level 0 and every partial tile (a few per
// level: what authenticating any leaf needs) and the most recent level-0
// tiles. Memory stays proportional to the tiles of the upper levels, a
// 256th of the leaves, however large the tree.
type tileCache struct {
	fetch func([]tlog.Tile) ([][]byte, error)

	mu     sync.Mutex
	keep   map[tlog.Tile][]byte
	recent map[tlog.Tile][]byte
	order  []tlog.Tile // FIFO of recent
}

// recentLeafTiles is how many full level-0 tiles the cache keeps.
const recentLeafTiles = 8

func newTileCache(fetch func([]tlog.Tile) ([][]byte, error)) *tileCache {
	return &tileCache{fetch: fetch, keep: make(map[tlog.Tile][]byte), recent: make(map[tlog.Tile][]byte)}
}

// Height implements tlog.TileReader.
func (c *tileCache) Height() int { return TileHeight }

// ReadTiles implements tlog.TileReader.
func (c *tileCache) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	var missing []tlog.Tile
	var pos []int
	c.mu.Lock()
	for i, t := range tiles {
		if b, ok := c.keep[t]; ok {
			out[i] = b
		} else if b, ok := c.recent[t]; ok {
			out[i] = b
		} else {
			missing = append(missing, t)
			pos = append(pos, i)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	data, err := c.fetch(missing)
	if err != nil {
		return nil, err
	}
	if len(data) != len(missing) {
		return nil, fmt.Errorf("read tiles: %d tiles for %d requested", len(data), len(missing))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for j, t := range missing {
		out[pos[j]] = data[j]
		if t.L > 0 || t.W < 1<<TileHeight {
			c.keep[t] = data[j]
			continue
		}
		if _, ok := c.recent[t]; !ok {
			c.recent[t] = data[j]
			c.order = append(c.order, t)
			if len(c.order) > recentLeafTiles {
				delete(c.recent, c.order[0])
				c.order = c.order[1:]
			}
		}
	}
	return out, nil
}

// SaveTiles implements tlog.TileReader; tiles live only in memory.
func (c *tileCache) SaveTiles([]tlog.Tile, [][]byte) {}

var _ tlog.TileReader = (*tileCache)(nil)

// Tail calls emit with the last n entries of the log (all of them if it
// has fewer) and then, if follow is set, with every new entry, polling
// every interval until ctx ends. Entries are not verified: tail is for
// watching; use Verify and receipts for evidence.
func (c *Client) Tail(ctx context.Context, n int, follow bool, interval time.Duration, emit func(EntryJSON) error) error {
	if n < 0 {
		return errors.New("tail: negative count")
	}
	if interval <= 0 {
		interval = time.Second
	}
	first, err := c.Entries(ctx, 0, 1)
	if err != nil {
		return err
	}
	next := max(first.TreeSize-int64(n), 0)
	for {
		for {
			page, err := c.Entries(ctx, next, maxEntriesPage)
			if err != nil {
				if follow && ctx.Err() != nil {
					return nil // following ends when ctx does, even mid-request
				}
				return err
			}
			for _, e := range page.Entries {
				if e.Index != next {
					return &EntryError{Index: next, Reason: "is missing", Err: ErrEntryMissing}
				}
				if err := emit(e); err != nil {
					return err
				}
				next++
			}
			if next >= page.TreeSize {
				break
			}
			if len(page.Entries) == 0 {
				return &EntryError{Index: next, Reason: "is missing", Err: ErrEntryMissing}
			}
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}
