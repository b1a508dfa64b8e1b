package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// floorName is the edge row of the bare Go proxy.
const floorName = "Go TLS proxy, no checks"

// startFloor starts, in this process, the least a Go gateway does: the
// standard library's HTTPS server with the bench's certificate and
// httputil.ReverseProxy to the plain echo service over keep-alive
// connections — no token check, no limits, no policy, no validation, no
// mTLS. It is not a gateway: it shows what net/http alone costs on this
// machine, the floor under any gateway built on it.
func startFloor(cert serverCert, echoAddr string) (base string, stop func(), err error) {
	// wrk cuts requests in flight at the end of a run: not worth a line
	// between the tables.
	quiet := log.New(io.Discard, "", 0)
	target, err := url.Parse("http://" + echoAddr)
	if err != nil {
		return "", nil, fmt.Errorf("floor proxy: %w", err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite:  func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ErrorLog: quiet,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("floor proxy: %w", err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 5 * time.Second, ErrorLog: quiet}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, cert.certFile, cert.keyFile) }()
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("floor proxy:", err)
		}
	}
	return "https://" + ln.Addr().String(), stop, nil
}
