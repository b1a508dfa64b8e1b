package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulwarksec/bulwark/internal/mesh"
)

// DefaultResolverTTL is how long a Resolver trusts an answer before asking
// the control plane again.
const DefaultResolverTTL = 30 * time.Second

// maxListBytes bounds an answer of GET /v1/services?name=.
const maxListBytes = 1 << 20

// Resolver finds services in the control plane's directory for an agent or
// a gateway, authenticating with the caller's X.509-SVID (carried by the
// HTTP client's TLS configuration). It implements mesh.Resolver.
//
// Answers are cached for the TTL. When the control plane cannot be reached,
// the last answer for a name keeps being served, so that a running data plane
// goes on routing to the destinations it knew; a name it never resolved
// fails. The destination's identity is still checked on every connection
// (mTLS with the SPIFFE ID resolved), so a stale answer can misroute at most
// into a refused handshake, never to an impostor.
type Resolver struct {
	base string
	hc   *http.Client
	ttl  time.Duration
	now  func() time.Time

	mu    sync.Mutex
	cache map[string]resolved
}

type resolved struct {
	id        spiffeid.ID
	endpoints []string
	at        time.Time
}

var _ mesh.Resolver = (*Resolver)(nil)

// NewResolver returns a Resolver asking the control plane at baseURL
// (https://host:port) through hc; ttl <= 0 means DefaultResolverTTL.
func NewResolver(baseURL string, hc *http.Client, ttl time.Duration) *Resolver {
	if ttl <= 0 {
		ttl = DefaultResolverTTL
	}
	return &Resolver{base: strings.TrimRight(baseURL, "/"), hc: hc, ttl: ttl, now: time.Now, cache: map[string]resolved{}}
}

// Resolve returns the SPIFFE ID and the agent endpoints of the service
// named name. An unknown name is an error wrapping mesh.ErrUnknownService.
func (r *Resolver) Resolve(ctx context.Context, name string) (spiffeid.ID, []string, error) {
	if !nameRE.MatchString(name) {
		return spiffeid.ID{}, nil, fmt.Errorf("resolve %q: %w (not a DNS label)", name, mesh.ErrUnknownService)
	}
	now := r.now()
	r.mu.Lock()
	c, ok := r.cache[name]
	r.mu.Unlock()
	if ok && now.Sub(c.at) < r.ttl {
		return c.id, c.endpoints, nil
	}
	svc, err := r.fetch(ctx, name)
	switch {
	case errors.Is(err, mesh.ErrUnknownService):
		r.mu.Lock()
		delete(r.cache, name)
		r.mu.Unlock()
		return spiffeid.ID{}, nil, err
	case err != nil && ok:
		return c.id, c.endpoints, nil // the control plane is away: last good answer
	case err != nil:
		return spiffeid.ID{}, nil, err
	}
	id, err := spiffeid.FromString(svc.ID)
	if err != nil || len(svc.Endpoints) == 0 {
		return spiffeid.ID{}, nil, fmt.Errorf("resolve %q: the directory's entry has no valid id or no endpoint", name)
	}
	r.mu.Lock()
	r.cache[name] = resolved{id: id, endpoints: svc.Endpoints, at: now}
	r.mu.Unlock()
	return id, svc.Endpoints, nil
}

func (r *Resolver) fetch(ctx context.Context, name string) (*Service, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+PathServices+"?name="+url.QueryEscape(name), nil)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w", name, err)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes+1))
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w", name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("resolve %q: the directory answered %s", name, resp.Status)
	}
	if len(body) > maxListBytes {
		return nil, fmt.Errorf("resolve %q: answer larger than %d bytes", name, maxListBytes)
	}
	var list ServiceList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("resolve %q: %w", name, err)
	}
	for i := range list.Services {
		if list.Services[i].Name == name {
			return &list.Services[i], nil
		}
	}
	return nil, fmt.Errorf("resolve %q: %w", name, mesh.ErrUnknownService)
}
