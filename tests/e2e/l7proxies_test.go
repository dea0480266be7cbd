package e2e

// The node's L7 proxy under test: the test proxy (internal/testing/l7proxy),
// which CI runs, or a real Envoy when SLUICE_ENVOY names one (make
// test-envoy). The L7 tests ask both the same questions; each answers in
// its own form: the test proxy relays the TCP echo's lines and records
// each connection it handled, Envoy speaks HTTP to an HTTP server in web
// and its access logs become L7 flows on the agent's observer, one per
// request.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/pkg/flow"
)

// nodeProxy is node1's proxy, started by l7Cluster.startProxy.
type nodeProxy interface {
	// ask sends what (whoami, whoiscalling) from client to dst:port and
	// returns web's answer.
	ask(ctx context.Context, client *harness.Pod, dst netip.Addr, port int, what string) (string, error)
	// request sends an HTTP request (method, path) from client to web's
	// port 8080 and returns web's answer (its request line) or, for a
	// request the proxy refuses, forbidden().
	request(ctx context.Context, client *harness.Pod, method, path string) (string, error)
	forbidden() string
	// keep opens one long-lived connection from client to web's port 8080
	// with a round trip every interval.
	keep(client *harness.Pod, interval time.Duration) (*harness.TCPClient, error)
	// handled counts what the proxy has handled: connections (the test
	// proxy) or requests (Envoy's L7 flows).
	handled(t *testing.T) int
	// last is what the proxy saw of its latest connection or request from
	// client, waiting for it.
	last(t *testing.T, client netip.Addr) proxied
	// checkCaller checks that caller, the client address web saw, is the
	// proxy's own upstream connection for cn.
	checkCaller(t *testing.T, cn proxied, caller string)
	// listening are the ports the proxy listens on now, sorted.
	listening() []uint16
	// timeout bounds how long what the proxy reports may take to show.
	timeout() time.Duration
}

// proxied is what the proxy saw of one connection (or request).
type proxied struct {
	// Listener is the proxy port it was handed to; Client and Original
	// its client's address and original destination as the proxy saw
	// them.
	Listener         uint16
	Client, Original netip.AddrPort
	// Allowed by Rule (HTTP rules enforced), and Reached: the proxy's
	// own connection to web carried it. Why says why not.
	Allowed bool
	Rule    string
	Reached bool
	Why     string
	// Upstream is the proxy's own connection to web, where the proxy
	// reports it (the test proxy does, Envoy's access log does not).
	Upstream netip.AddrPort
}

// testProxy is internal/testing/l7proxy: it relays the echo's lines and
// records every connection.
type testProxy struct {
	c *l7Cluster
	p *harness.L7Proxy
}

func (p *testProxy) ask(ctx context.Context, client *harness.Pod, dst netip.Addr, port int, what string) (string, error) {
	return client.TCPRequest(ctx, dst, port, what)
}

func (p *testProxy) request(ctx context.Context, client *harness.Pod, method, path string) (string, error) {
	// The TCP echo answers a request's first line, the proxy its 403's.
	reply, err := client.TCPRequest(ctx, p.c.web.IP, 8080, method+" "+path+" HTTP/1.1\r\nHost: web\r\n\r")
	return strings.TrimSpace(reply), err
}

func (p *testProxy) forbidden() string { return "HTTP/1.1 403 Forbidden" }

func (p *testProxy) keep(client *harness.Pod, interval time.Duration) (*harness.TCPClient, error) {
	return client.StartTCPClient(p.c.web.IP, 8080, interval)
}

func (p *testProxy) handled(*testing.T) int { return len(p.p.Conns()) }

func (p *testProxy) last(t *testing.T, client netip.Addr) proxied {
	cn := lastConn(t, p.p, client)
	return proxied{Listener: cn.Listener, Client: cn.Client, Original: cn.Original,
		Allowed: cn.Allowed, Rule: cn.Rule, Reached: cn.Upstream.IsValid(), Why: cn.Error, Upstream: cn.Upstream,
	}
}

func (p *testProxy) checkCaller(t *testing.T, cn proxied, caller string) {
	t.Helper()
	require.Equal(t, cn.Upstream.String(), caller, "web is called by the proxy's upstream connection")
}

func (p *testProxy) listening() []uint16    { return p.p.Listening() }
func (p *testProxy) timeout() time.Duration { return 10 * time.Second }

// envoyProxy is a real Envoy on node1, started as the DaemonSet starts it;
// web serves HTTP. What it saw of each request comes from its access log,
// as the L7 flows of node1's observer.
type envoyProxy struct {
	c   *l7Cluster
	e   *harness.Envoy
	hub observerpb.ObserverClient

	mu sync.Mutex
	// seen counts the flows of each client last has returned: the next
	// last waits for a newer one.
	seen map[netip.Addr]int
}

// envoyLogSettle is how long after a request its access log entry may
// still be on its way: Envoy flushes its gRPC access logs every second
// (buffer_flush_interval's default; pkg/xds sets none), and the agent
// stores the flow at once.
const envoyLogSettle = 2 * time.Second

// The paths web is asked on: under /api/, which every L7 policy of these
// tests allows to GET.
const envoyAskPrefix = "/api/"

func (p *envoyProxy) ask(ctx context.Context, client *harness.Pod, dst netip.Addr, port int, what string) (string, error) {
	r, err := client.HTTPRequest(ctx, dst, port, "GET", envoyAskPrefix+what)
	if err != nil {
		return "", err
	}
	if r.Status != 200 {
		return "", fmt.Errorf("GET %s%s from %s to %s: %d %s", envoyAskPrefix, what, client, netip.AddrPortFrom(dst, uint16(port)), r.Status, r.Body)
	}
	return r.Body, nil
}

func (p *envoyProxy) request(ctx context.Context, client *harness.Pod, method, path string) (string, error) {
	r, err := client.HTTPRequest(ctx, p.c.web.IP, 8080, method, path)
	if err != nil || r.Status == 200 {
		return r.Body, err
	}
	return fmt.Sprintf("%d %s", r.Status, r.Body), nil
}

// forbidden is Envoy's RBAC filter's denial: 403 with its own body.
func (p *envoyProxy) forbidden() string { return "403 RBAC: access denied" }

func (p *envoyProxy) keep(client *harness.Pod, interval time.Duration) (*harness.TCPClient, error) {
	return client.StartHTTPClient(p.c.web.IP, 8080, envoyAskPrefix+"seq", interval)
}

// requests are node1's L7 flows (one per request Envoy logged), oldest
// first.
func (p *envoyProxy) requests() ([]*flowpb.Flow, error) {
	flows, err := recentFlows(context.Background(), p.hub)
	return slices.DeleteFunc(flows, func(f *flowpb.Flow) bool {
		return f.GetType() != flowpb.FlowType_L7 || f.GetEventType().GetType() != flow.MessageTypeAccessLog
	}), err
}

// handled counts the requests once no more arrive: a count read at once
// would miss a request whose log is still on its way, and a test that
// expects none would pass without looking.
func (p *envoyProxy) handled(t *testing.T) int {
	t.Helper()
	n, since := -1, time.Now()
	for deadline := time.Now().Add(p.timeout()); ; time.Sleep(100 * time.Millisecond) {
		flows, err := p.requests()
		require.NoError(t, err)
		if len(flows) != n {
			n, since = len(flows), time.Now()
		}
		if time.Since(since) >= envoyLogSettle {
			return n
		}
		require.True(t, time.Now().Before(deadline), "Envoy's requests do not settle: %d now", n)
	}
}

func (p *envoyProxy) last(t *testing.T, client netip.Addr) proxied {
	t.Helper()
	var from []*flowpb.Flow
	p.mu.Lock()
	defer p.mu.Unlock()
	read := func() error {
		var err error
		from, err = p.requests()
		from = slices.DeleteFunc(from, func(f *flowpb.Flow) bool { return f.GetIP().GetSource() != client.String() })
		return err
	}
	for deadline := time.Now().Add(p.timeout()); ; time.Sleep(50 * time.Millisecond) {
		err := read()
		if err == nil && len(from) > p.seen[client] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new request from %s in Envoy's access log after %s (%d before, %d now): %v", client, p.timeout(), p.seen[client], len(from), err)
		}
	}
	// The new one may be the log of an earlier request that was still on
	// its way (the connection before, on a long-lived client): wait until
	// those are in, and take the latest.
	time.Sleep(envoyLogSettle)
	require.NoError(t, read())
	p.seen[client] = len(from)
	f := from[len(from)-1]
	src, dst := flowEnds(f)
	_, rule, _, details, _ := flow.L7Extension(f)
	return proxied{Listener: uint16(f.GetProxyPort()), Client: src, Original: dst,
		Allowed: f.GetVerdict() == flowpb.Verdict_FORWARDED, Rule: rule,
		// Envoy's word for an answer that came from the upstream.
		Reached: details == "via_upstream", Why: details,
	}
}

// checkCaller: Envoy's upstream connections are not transparent (the
// ORIGINAL_DST cluster binds no source address), so web sees the node's
// own address, not the client's.
func (p *envoyProxy) checkCaller(t *testing.T, cn proxied, caller string) {
	t.Helper()
	from, err := netip.ParseAddrPort(caller)
	require.NoError(t, err, "web's caller %q", caller)
	require.Equal(t, p.c.n1.IP, from.Addr(), "web is called by Envoy's upstream connection, from node1")
	require.NotEqual(t, cn.Client, from)
}

func (p *envoyProxy) listening() []uint16 {
	ports, err := p.e.Listening(ctx(p.c.t))
	if err != nil {
		p.c.t.Logf("envoy's listeners: %v", err)
	}
	return ports
}

// timeout: Envoy takes its listeners over ADS, and flushes its access
// log every second.
func (p *envoyProxy) timeout() time.Duration { return 30 * time.Second }
