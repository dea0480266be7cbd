package benchkit

// HTTP/1.1 workloads, run inside the simulated pods like the TCP ones in
// workload.go: a tiny net/http server, a load generator that sends real
// GET requests and times each, and a probe that waits for a status code.
// They exist for what parses HTTP on the way (an L7 proxy): a 1-byte echo
// is not a request a proxy could decide.

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// HTTPLoadResult is what the http-load subcommand prints (one JSON line):
// a LoadResult plus the latency of the requests completed in the measured
// duration.
type HTTPLoadResult struct {
	LoadResult
	// P50 and P99 are per-operation latencies in microseconds: one
	// request and its whole response (req), or connect, request, response
	// and close (conn).
	P50 float64 `json:"p50us"`
	P99 float64 `json:"p99us"`
}

// HTTPServe (`http-serve -port P`) answers every request with 200 and a
// 3-byte body, keeping connections open for as long as the client does.
func HTTPServe(args []string) error {
	fs := flag.NewFlagSet("http-serve", flag.ExitOnError)
	port := fs.Int("port", 8080, "listen port")
	_ = fs.Parse(args)
	srv := &http.Server{
		Addr:              fmt.Sprintf(":%d", *port),
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "ok\n")
		}),
	}
	return srv.ListenAndServe()
}

// HTTPLoadConfig is one run of the HTTP load generator.
type HTTPLoadConfig struct {
	// URL is requested with GET; its host is the address connected to.
	URL              string
	Mode             string // req or conn, see HTTPLoad
	Workers          int
	Duration, Warmup time.Duration
}

// HTTPLoad (`http-load -url http://ip:port/path ...`) runs RunHTTPLoad and
// prints its result.
func HTTPLoad(args []string) error {
	fs := flag.NewFlagSet("http-load", flag.ExitOnError)
	var c HTTPLoadConfig
	fs.StringVar(&c.URL, "url", "", "URL to GET, http://ip:port/path")
	fs.StringVar(&c.Mode, "mode", "req", "req or conn")
	fs.IntVar(&c.Workers, "workers", 8, "parallel connections")
	fs.DurationVar(&c.Duration, "duration", time.Second, "measured duration")
	fs.DurationVar(&c.Warmup, "warmup", 200*time.Millisecond, "unmeasured warm-up before the measured duration")
	_ = fs.Parse(args)
	r, err := RunHTTPLoad(c)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// RunHTTPLoad drives one of two loads of GET requests for warmup+duration
// with workers goroutines and returns the rate and latencies of the
// operations that started and ended within the measured duration:
//
//	req:  one persistent connection per worker (net/http's client, one
//	      idle connection per worker's transport), requests back to back
//	conn: connect, one GET, read the response, close with SO_LINGER 0 (an
//	      RST, as Loadgen's conn mode: no TIME_WAIT at the client)
//
// A non-200 response is an error: it is counted, not measured.
func RunHTTPLoad(c HTTPLoadConfig) (HTTPLoadResult, error) {
	if c.Mode != "req" && c.Mode != "conn" {
		return HTTPLoadResult{}, fmt.Errorf("-mode %q: use req or conn", c.Mode)
	}
	req, err := http.NewRequest(http.MethodGet, c.URL, nil)
	if err != nil {
		return HTTPLoadResult{}, fmt.Errorf("-url: %w", err)
	}
	if c.Workers < 1 {
		return HTTPLoadResult{}, fmt.Errorf("-workers %d: must be at least 1", c.Workers)
	}
	var (
		// from is the measured duration's start in Unix nanoseconds, 0
		// during the warm-up.
		from     atomic.Int64
		stop     atomic.Bool
		errs     atomic.Uint64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      []time.Duration
	)
	fail := func(err error) {
		errs.Add(1)
		errOnce.Do(func() { firstErr = err })
	}
	for range c.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := connGET(req)
			if c.Mode == "req" {
				op = persistentGET(req)
			}
			var mine []time.Duration
			for !stop.Load() {
				start := time.Now()
				if err := op(); err != nil {
					fail(err)
					time.Sleep(time.Millisecond)
					continue
				}
				end := time.Now()
				if f := from.Load(); f != 0 && start.UnixNano() >= f && end.UnixNano() <= f+int64(c.Duration) {
					mine = append(mine, end.Sub(start))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	time.Sleep(c.Warmup)
	from.Store(time.Now().UnixNano())
	time.Sleep(c.Duration)
	stop.Store(true)
	wg.Wait()
	r := HTTPLoadResult{LoadResult: LoadResult{Mode: c.Mode, Ops: uint64(len(lat)), Seconds: c.Duration.Seconds(), Errors: errs.Load()}}
	r.Rate = float64(r.Ops) / r.Seconds
	r.P50, r.P99 = Percentile(lat, 0.50), Percentile(lat, 0.99)
	if firstErr != nil {
		r.FirstError = firstErr.Error()
	}
	return r, nil
}

// Percentile is the p-th quantile (0 < p ≤ 1) of d by nearest rank, in
// microseconds; 0 when d is empty. d is sorted in place.
func Percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d))*p+0.999999) - 1
	i = min(max(i, 0), len(d)-1)
	return float64(d[i]) / float64(time.Microsecond)
}

// persistentGET is the req mode's operation for one worker: a transport
// of its own that keeps its one connection open between requests.
func persistentGET(req *http.Request) func() error {
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true},
	}
	return func() error {
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		return readOK(resp)
	}
}

// connGET is the conn mode's operation: a connection per request, ended
// with an RST.
func connGET(req *http.Request) func() error {
	d := net.Dialer{Timeout: 2 * time.Second}
	return func() error {
		c, err := d.Dial("tcp4", req.URL.Host)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if err := req.Write(c); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return err
		}
		return readOK(resp)
	}
}

// readOK reads and closes resp's body, so that its connection can carry
// the next request, and fails unless its status is 200.
func readOK(resp *http.Response) error {
	_, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", resp.Request.URL, resp.Status)
	}
	return nil
}

// HTTPGet (`http-get -url U -want 200`) GETs url until the response has
// status want, for up to -timeout: a probe that a server answers, or that
// a proxy on the way denies (-want 403).
func HTTPGet(args []string) error {
	fs := flag.NewFlagSet("http-get", flag.ExitOnError)
	url := fs.String("url", "", "URL to GET")
	want := fs.Int("want", http.StatusOK, "status code to wait for")
	timeout := fs.Duration("timeout", 15*time.Second, "give up after")
	_ = fs.Parse(args)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(*timeout)
	for {
		resp, err := client.Get(*url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == *want {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("GET %s: no %d within %s: %w", *url, *want, *timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartHTTP starts the http-serve subcommand of self in server on addr's
// port and waits until client gets a 200 for GET path from addr; the
// server runs until the cluster is cleaned up, as StartEcho's.
func StartHTTP(ctx context.Context, server, client Execer, self string, addr netip.AddrPort, path string) error {
	return startServer(ctx, server, client, self, []string{"http-serve", "-port", fmt.Sprint(addr.Port())},
		[]string{"http-get", "-url", "http://" + addr.String() + path})
}

// RunHTTP runs the http-load subcommand of self in from against url in
// mode (req or conn, see RunHTTPLoad) and returns its result.
func (l Load) RunHTTP(ctx context.Context, from Execer, self, url, mode string) (HTTPLoadResult, error) {
	var r HTTPLoadResult
	err := l.runJSON(ctx, from, &r, self, "http-load", "-url", url, "-mode", mode)
	return r, err
}
