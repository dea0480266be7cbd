package harness

// HTTP/1.1 workloads, for what parses HTTP on the way: a real Envoy
// cannot relay the TCP echo's bare lines, it answers them 400. They keep
// the echo's conventions so that tests read the same either way: the
// server answers a path ending in /whoami with its host's identity, one
// ending in /whoiscalling with the client address it sees, and any other
// request with its own request line ("GET /api/items HTTP/1.1").

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"time"
)

// Workload kinds of this file.
const (
	kindHTTPServer  = "http-server"
	kindHTTPRequest = "http-request"
	kindHTTPClient  = "http-client"
)

// httpBodyLimit bounds what a client reads of a body: the server's are
// one line, and a proxy's own answers are short too.
const httpBodyLimit = 64 << 10

// StartHTTPServer starts an HTTP/1.1 server on port on all of the host's
// IPv4 addresses and returns once it listens. It answers every request
// 200 with one line: the host's identity for a path ending in /whoami,
// the client's address and port for one ending in /whoiscalling, and the
// request line as it arrived otherwise. It runs until stopped or until
// the cluster is cleaned up.
func (h *Host) StartHTTPServer(port int) (*Process, error) {
	p, _, err := h.start(workloadSpec{Kind: kindHTTPServer, Port: port}, "ready", nil)
	return p, err
}

// HTTPReply is the response to one HTTP request: its status code and its
// body without the trailing newline.
type HTTPReply struct {
	Status int
	Body   string
}

// HTTPRequest sends one HTTP/1.1 request (method, path) from the host to
// dst:port on a connection of its own and returns the response, whatever
// its status; the error is for no response at all.
func (h *Host) HTTPRequest(ctx context.Context, dst netip.Addr, port int, method, path string) (HTTPReply, error) {
	ev, err := h.runOnce(ctx, workloadSpec{Kind: kindHTTPRequest, Addr: addrPort(dst, port), Method: method, Path: path})
	return HTTPReply{Status: ev.Status, Body: ev.Reply}, err
}

// StartHTTPClient is StartTCPClient in HTTP: one connection from the host
// to dst:port kept open, on which every interval it sends GET
// path?seq=N and waits for the server's answer (its request line,
// status 200). A missing or wrong answer counts as a failure and the
// client goes on; a closed or reset connection ends it.
func (h *Host) StartHTTPClient(dst netip.Addr, port int, path string, interval time.Duration) (*TCPClient, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("start http client: interval must be positive, got %s", interval)
	}
	return h.startClient(workloadSpec{Kind: kindHTTPClient, Addr: addrPort(dst, port), Path: path, Interval: interval})
}

func httpServer(spec workloadSpec) error {
	ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", spec.Port))
	if err != nil {
		emit(event{Event: "error", Error: err.Error()})
		return err
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body := r.Method + " " + r.RequestURI + " " + r.Proto
			switch path.Base(r.URL.Path) {
			case whoami:
				body = spec.Ident
			case whoiscalling:
				body = r.RemoteAddr
			}
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, body+"\n")
		}),
	}
	emit(event{Event: "ready", Local: ln.Addr().String()})
	return srv.Serve(ln)
}

func httpRequest(spec workloadSpec) (HTTPReply, error) {
	client := &http.Client{
		Timeout:   spec.Timeout,
		Transport: &http.Transport{DisableKeepAlives: true}, // no HTTP_PROXY: the zero Proxy
		// A redirect is an answer to show, not to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequest(spec.Method, "http://"+spec.Addr+spec.Path, nil)
	if err != nil {
		return HTTPReply{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return HTTPReply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, httpBodyLimit))
	if err != nil {
		return HTTPReply{}, fmt.Errorf("read the body of a %d: %w", resp.StatusCode, err)
	}
	return HTTPReply{Status: resp.StatusCode, Body: strings.TrimSuffix(string(body), "\n")}, nil
}

func httpClient(spec workloadSpec) error {
	uri := func(seq int) string { return fmt.Sprintf("%s?seq=%d", spec.Path, seq) }
	return oneConnection(spec,
		func(conn net.Conn, seq int) error {
			_, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", uri(seq), spec.Addr)
			return err
		},
		func(r *bufio.Reader, seq int) (bool, string, error) {
			status, body, err := readHTTPResponse(r)
			switch {
			case err != nil:
				return false, "", err
			case status != http.StatusOK:
				return false, fmt.Sprintf("status %d: %s", status, body), nil
			}
			return body == "GET "+uri(seq)+" HTTP/1.1", "", nil
		})
}

// readHTTPResponse reads one response of a kept-alive connection.
func readHTTPResponse(r *bufio.Reader) (int, string, error) {
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, httpBodyLimit))
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, strings.TrimSuffix(string(body), "\n"), nil
}
