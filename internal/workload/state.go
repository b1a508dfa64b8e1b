package workload

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	stateFile    = "state.sealed"
	stateContext = "bulwark-agent-state-v1"
)

// Sealer seals the agent's state at rest (keys.Sealed).
type Sealer interface {
	Seal(plaintext []byte, context string) ([]byte, error)
	Open(blob []byte, context string) ([]byte, error)
}

// svid is a workload SVID with its private key.
type svid struct {
	entryID  string
	id       spiffeid.ID
	chain    []*x509.Certificate
	key      crypto.Signer
	keyDER   []byte    // PKCS#8
	received time.Time // when the agent got it: the start of its rotation clock
}

func (s *svid) serial() string { return serialHex(s.chain[0].SerialNumber) }

// state is everything the agent knows; guarded by Agent.mu.
type state struct {
	agentID     spiffeid.ID
	agentChain  []*x509.Certificate
	agentKey    crypto.Signer
	agentKeyDER []byte
	agentRecv   time.Time
	bundle      *spiffebundle.Bundle
	entries     []Entry
	svids       map[string]*svid // by entry ID
	deny        denySet
}

func newState() *state {
	return &state{svids: map[string]*svid{}, deny: newDenySet()}
}

func (s *state) joined() bool { return len(s.agentChain) > 0 }

func (s *state) denied(id spiffeid.ID, serial string) bool { return s.deny.denied(id, serial) }

// The persisted form: DER and JSON only.
type persistedState struct {
	Version       int              `json:"version"`
	AgentID       string           `json:"agent_id"`
	AgentChain    [][]byte         `json:"agent_chain"`
	AgentKey      []byte           `json:"agent_key"`
	AgentRecv     time.Time        `json:"agent_received"`
	Bundle        json.RawMessage  `json:"bundle,omitempty"`
	Entries       []persistedEntry `json:"entries"`
	SVIDs         []persistedSVID  `json:"svids"`
	DenySeq       int64            `json:"deny_seq"`
	DeniedIDs     []string         `json:"denied_ids"`
	DeniedSerials []string         `json:"denied_serials"`
}

type persistedEntry struct {
	ID        string   `json:"id"`
	SPIFFEID  string   `json:"spiffe_id"`
	ParentID  string   `json:"parent_id,omitempty"`
	Selectors []string `json:"selectors"`
	TTL       int64    `json:"ttl_ns"`
}

type persistedSVID struct {
	EntryID  string    `json:"entry_id"`
	Chain    [][]byte  `json:"chain"`
	Key      []byte    `json:"key"`
	Received time.Time `json:"received"`
}

// stateStore reads and writes the sealed state file.
type stateStore struct {
	path   string
	sealer Sealer
}

// load returns the stored state, or a fresh one when there is none.
func (st *stateStore) load() (*state, error) {
	blob, err := os.ReadFile(st.path)
	if errors.Is(err, os.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read agent state: %w", err)
	}
	plain, err := st.sealer.Open(blob, stateContext)
	if err != nil {
		return nil, fmt.Errorf("open agent state %s: %w", st.path, err)
	}
	var p persistedState
	if err := json.Unmarshal(plain, &p); err != nil {
		return nil, fmt.Errorf("decode agent state: %w", err)
	}
	return p.decode()
}

func (p *persistedState) decode() (*state, error) {
	s := newState()
	var err error
	if p.AgentID != "" {
		if s.agentID, err = spiffeid.FromString(p.AgentID); err != nil {
			return nil, fmt.Errorf("agent state: agent id: %w", err)
		}
		if s.agentChain, err = parseChain(p.AgentChain); err != nil {
			return nil, fmt.Errorf("agent state: agent svid: %w", err)
		}
		if s.agentKey, err = parseKey(p.AgentKey); err != nil {
			return nil, fmt.Errorf("agent state: agent key: %w", err)
		}
		s.agentKeyDER, s.agentRecv = p.AgentKey, p.AgentRecv
	}
	if len(p.Bundle) > 0 && !s.agentID.IsZero() {
		if s.bundle, err = spiffebundle.Parse(s.agentID.TrustDomain(), p.Bundle); err != nil {
			return nil, fmt.Errorf("agent state: bundle: %w", err)
		}
	}
	for _, pe := range p.Entries {
		e := Entry{ID: pe.ID}
		if e.SPIFFEID, err = spiffeid.FromString(pe.SPIFFEID); err != nil {
			return nil, fmt.Errorf("agent state: entry %s: %w", pe.ID, err)
		}
		if pe.ParentID != "" {
			if e.ParentID, err = spiffeid.FromString(pe.ParentID); err != nil {
				return nil, fmt.Errorf("agent state: entry %s: %w", pe.ID, err)
			}
		}
		for _, sel := range pe.Selectors {
			typ, val, _ := strings.Cut(sel, ":")
			e.Selectors = append(e.Selectors, Selector{Type: typ, Value: val})
		}
		e.TTL = time.Duration(pe.TTL)
		s.entries = append(s.entries, e)
	}
	for _, ps := range p.SVIDs {
		sv := &svid{entryID: ps.EntryID, keyDER: ps.Key, received: ps.Received}
		if sv.chain, err = parseChain(ps.Chain); err != nil {
			return nil, fmt.Errorf("agent state: svid %s: %w", ps.EntryID, err)
		}
		if sv.key, err = parseKey(ps.Key); err != nil {
			return nil, fmt.Errorf("agent state: svid %s: %w", ps.EntryID, err)
		}
		if sv.id, err = leafID(sv.chain[0]); err != nil {
			return nil, fmt.Errorf("agent state: svid %s: %w", ps.EntryID, err)
		}
		s.svids[sv.entryID] = sv
	}
	s.deny.seq = p.DenySeq
	for _, v := range p.DeniedIDs {
		s.deny.ids[v] = true
	}
	for _, v := range p.DeniedSerials {
		s.deny.serials[v] = true
	}
	return s, nil
}

// save seals s and replaces the state file atomically.
func (st *stateStore) save(s *state) error {
	p := persistedState{Version: 1, DenySeq: s.deny.seq}
	if s.joined() {
		p.AgentID, p.AgentChain, p.AgentKey, p.AgentRecv = s.agentID.String(), chainDER(s.agentChain), s.agentKeyDER, s.agentRecv
	}
	if s.bundle != nil {
		b, err := s.bundle.Marshal()
		if err != nil {
			return fmt.Errorf("encode bundle: %w", err)
		}
		p.Bundle = b
	}
	for _, e := range s.entries {
		pe := persistedEntry{ID: e.ID, SPIFFEID: e.SPIFFEID.String(), TTL: int64(e.TTL)}
		if !e.ParentID.IsZero() {
			pe.ParentID = e.ParentID.String()
		}
		for _, sel := range e.Selectors {
			pe.Selectors = append(pe.Selectors, sel.String())
		}
		p.Entries = append(p.Entries, pe)
	}
	for _, sv := range s.svids {
		p.SVIDs = append(p.SVIDs, persistedSVID{EntryID: sv.entryID, Chain: chainDER(sv.chain), Key: sv.keyDER, Received: sv.received})
	}
	for v := range s.deny.ids {
		p.DeniedIDs = append(p.DeniedIDs, v)
	}
	for v := range s.deny.serials {
		p.DeniedSerials = append(p.DeniedSerials, v)
	}
	plain, err := json.Marshal(&p)
	if err != nil {
		return fmt.Errorf("encode agent state: %w", err)
	}
	blob, err := st.sealer.Seal(plain, stateContext)
	if err != nil {
		return fmt.Errorf("seal agent state: %w", err)
	}
	return writeAtomic(st.path, blob)
}

// writeAtomic writes data to a 0600 temporary file beside path, syncs it
// and renames it over path.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write agent state: %w", err)
	}
	return nil
}

func chainDER(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}

func parseChain(ders [][]byte) ([]*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

func parseKey(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("private key cannot sign")
	}
	return signer, nil
}

// leafID returns the SPIFFE ID in the one URI SAN of an SVID.
func leafID(c *x509.Certificate) (spiffeid.ID, error) {
	if len(c.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("certificate has %d URI SANs, want 1", len(c.URIs))
	}
	id, err := spiffeid.FromURI(c.URIs[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("certificate SPIFFE ID: %w", err)
	}
	return id, nil
}

// serialHex is the canonical form of a serial number: lowercase hex, no
// leading zeros.
func serialHex(n *big.Int) string { return n.Text(16) }

// normalizeSerial brings a hex serial from the deny list to serialHex's
// form; it returns "" for a value that is not hex.
func normalizeSerial(v string) string {
	v = strings.TrimPrefix(strings.ToLower(strings.TrimSpace(v)), "0x")
	v = strings.ReplaceAll(v, ":", "")
	n, ok := new(big.Int).SetString(v, 16)
	if !ok || n.Sign() < 0 {
		return ""
	}
	return serialHex(n)
}
