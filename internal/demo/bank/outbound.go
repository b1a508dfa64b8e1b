package bank

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/bulwarksec/bulwark/internal/correlation"
)

// callResult is another service's answer through the local agent.
type callResult struct {
	Status int
	Body   []byte
}

// call sends a request from service from, on behalf of the incoming request
// in, to service to through from's agent: {OutboundURL}/<to><path>. The
// correlation id and the trace go along; nothing else of the incoming
// request does. An error means no answer (the agent is unreachable or the
// call timed out).
func (b *Bank) call(ctx context.Context, in *http.Request, from, method, to, path string, body any) (*callResult, error) {
	base := strings.TrimRight(b.cfg.OutboundURLs[from], "/")
	var rd io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request to %s: %w", to, err)
		}
		rd = bytes.NewReader(buf)
	}
	ctx, cancel := context.WithTimeout(ctx, defaultCallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+"/"+to+path, rd)
	if err != nil {
		return nil, fmt.Errorf("build request to %s: %w", to, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if rid := requestID(in); rid != "" {
		req.Header.Set(correlation.HeaderRequestID, rid)
	}
	if tp := in.Header.Get(correlation.HeaderTraceparent); tp != "" {
		if _, _, _, ok := correlation.ParseTraceparent(tp); ok {
			req.Header.Set(correlation.HeaderTraceparent, tp)
		}
	}
	resp, err := b.deps.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("call %s through the agent: %w", to, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("read answer of %s: %w", to, err)
	}
	return &callResult{Status: resp.StatusCode, Body: out}, nil
}
