package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/bulwarksec/bulwark/sdk/peer"
)

// MaxProxyFileSize bounds the proxy file.
const MaxProxyFileSize = 1 << 20

// MaxServices bounds the services of one proxy file.
const MaxServices = 256

// ProxyFile is the agent's proxy file (agent.proxy_file): the local services
// whose mTLS proxy the agent runs. Example:
//
//	outbound_listen: 127.0.0.1:15001   # first port of the outbound range
//	issuer: https://127.0.0.1:8443     # internal tokens' issuer
//	audit_allowed: true
//	services:
//	  - name: payments
//	    id: spiffe://bulwark.local/ns/bank/sa/payments
//	    listen: 0.0.0.0:15443           # the inbound mTLS listener
//	    upstream: http://127.0.0.1:8081 # loopback only
//	    peer_key_file: /etc/bulwark/payments.peer.key
//	    outbound_listen: 127.0.0.1:15011 # optional, overrides the range
//
// Every local service gets its own outbound listener, on which the agent
// presents that service's SVID: a service's own outbound_listen, or else
// the top-level outbound_listen's host with its port plus the service's
// index in the list (port 0 gives every service an ephemeral port). A
// service with neither makes no outbound calls through the agent.
type ProxyFile struct {
	// OutboundListen is the loopback host:port of the first service's
	// outbound listener; the n-th service (from 0) gets port+n.
	OutboundListen string `yaml:"outbound_listen"`
	// Issuer is the issuer of the internal tokens the inbounds verify;
	// empty means agent.server_url.
	Issuer string `yaml:"issuer"`
	// AuditAllowed audits allowed requests too, not only refusals.
	AuditAllowed bool `yaml:"audit_allowed"`
	// Services are the local services.
	Services []ProxyService `yaml:"services"`
}

// ProxyService is one local service of a ProxyFile.
type ProxyService struct {
	// Name is the service's name in the directory (a DNS label).
	Name string `yaml:"name"`
	// ID is the service's SPIFFE ID.
	ID string `yaml:"id"`
	// Listen is the host:port of the inbound mTLS listener peers reach.
	Listen string `yaml:"listen"`
	// Upstream is the service's loopback URL (http://127.0.0.1:8081).
	Upstream string `yaml:"upstream"`
	// PeerKeyFile holds the sdk/peer key shared with the service.
	PeerKeyFile string `yaml:"peer_key_file"`
	// OutboundListen, if set, is this service's outbound listener.
	OutboundListen string `yaml:"outbound_listen"`
}

// LoadProxyFile reads and validates the proxy file at path.
func LoadProxyFile(path string) (*ProxyFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("proxy file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxProxyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("proxy file %s: %w", path, err)
	}
	pf, err := ParseProxyFile(data)
	if err != nil {
		return nil, fmt.Errorf("proxy file %s: %w", path, err)
	}
	return pf, nil
}

// ParseProxyFile strictly decodes and validates a proxy file: an unknown
// key is an error naming it and its line.
func ParseProxyFile(data []byte) (*ProxyFile, error) {
	if len(data) > MaxProxyFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxProxyFileSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var pf ProxyFile
	if err := dec.Decode(&pf); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty proxy file")
		}
		return nil, fmt.Errorf("decode: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	if err := pf.Validate(); err != nil {
		return nil, err
	}
	return &pf, nil
}

// Validate checks the file's values: names, SPIFFE IDs and listen
// addresses unique, outbound listeners on loopback, a key file for every
// service.
func (pf *ProxyFile) Validate() error {
	if len(pf.Services) == 0 {
		return errors.New("services: at least one service is required")
	}
	if len(pf.Services) > MaxServices {
		return fmt.Errorf("services: at most %d, got %d", MaxServices, len(pf.Services))
	}
	if pf.OutboundListen != "" {
		if err := checkLoopback(pf.OutboundListen); err != nil {
			return fmt.Errorf("outbound_listen: %w", err)
		}
	}
	names, ids, listens := map[string]bool{}, map[string]bool{}, map[string]bool{}
	var td spiffeid.TrustDomain
	for i, s := range pf.Services {
		at := fmt.Sprintf("services[%d]", i)
		if !validName(s.Name) {
			return fmt.Errorf("%s.name %q: want a lower-case DNS label", at, s.Name)
		}
		at = fmt.Sprintf("services[%d] (%s)", i, s.Name)
		if names[s.Name] {
			return fmt.Errorf("%s.name: duplicate", at)
		}
		names[s.Name] = true
		id, err := spiffeid.FromString(s.ID)
		if err != nil {
			return fmt.Errorf("%s.id %q: %w", at, s.ID, err)
		}
		if i == 0 {
			td = id.TrustDomain()
		} else if id.TrustDomain() != td {
			return fmt.Errorf("%s.id: trust domain %q differs from %q", at, id.TrustDomain(), td)
		}
		if ids[id.String()] {
			return fmt.Errorf("%s.id: duplicate", at)
		}
		ids[id.String()] = true
		if _, _, err := net.SplitHostPort(s.Listen); err != nil {
			return fmt.Errorf("%s.listen %q: %w", at, s.Listen, err)
		}
		if s.Upstream == "" {
			return fmt.Errorf("%s.upstream: required", at)
		}
		if s.PeerKeyFile == "" {
			return fmt.Errorf("%s.peer_key_file: required", at)
		}
		if s.OutboundListen != "" {
			if err := checkLoopback(s.OutboundListen); err != nil {
				return fmt.Errorf("%s.outbound_listen: %w", at, err)
			}
		}
		for _, addr := range []string{s.Listen, pf.OutboundAddr(i)} {
			if addr == "" || hasPortZero(addr) {
				continue
			}
			if listens[addr] {
				return fmt.Errorf("%s: address %s is used twice", at, addr)
			}
			listens[addr] = true
		}
	}
	return nil
}

// OutboundAddr returns the outbound listen address of the i-th service:
// its own outbound_listen, else the range's, else "".
func (pf *ProxyFile) OutboundAddr(i int) string {
	if i < 0 || i >= len(pf.Services) {
		return ""
	}
	if a := pf.Services[i].OutboundListen; a != "" {
		return a
	}
	if pf.OutboundListen == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(pf.OutboundListen)
	if err != nil {
		return ""
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p+i > 65535 {
		return ""
	}
	if p == 0 {
		return pf.OutboundListen
	}
	return net.JoinHostPort(host, strconv.Itoa(p+i))
}

// ServiceConfigs turns the file into Service configurations, reading the
// peer keys.
func (pf *ProxyFile) ServiceConfigs() ([]Service, error) {
	out := make([]Service, 0, len(pf.Services))
	for i, s := range pf.Services {
		key, err := peer.LoadKeyFile(s.PeerKeyFile)
		if err != nil {
			return nil, fmt.Errorf("services[%d] (%s).peer_key_file: %w", i, s.Name, err)
		}
		id, err := spiffeid.FromString(s.ID)
		if err != nil {
			return nil, fmt.Errorf("services[%d] (%s).id: %w", i, s.Name, err)
		}
		out = append(out, Service{Name: s.Name, ID: id, Listen: s.Listen, Upstream: s.Upstream, PeerKey: key,
			OutboundListen: pf.OutboundAddr(i)})
	}
	return out, nil
}

func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("address %q: bad port", addr)
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("address %q is not a loopback address", addr)
		}
	}
	return nil
}

func hasPortZero(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}

// validName reports whether s is a lower-case DNS label.
func validName(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
