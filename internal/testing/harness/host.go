package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Default bounds. Every request and start is bounded so a broken datapath
// fails a test with an error instead of hanging it.
const (
	// DefaultRequestTimeout bounds one-shot requests whose context has no deadline.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultExecTimeout bounds Exec whose context has no deadline.
	DefaultExecTimeout = 30 * time.Second
	// startTimeout bounds how long a server may take to report that it listens.
	startTimeout      = 10 * time.Second
	cgroupKillTimeout = 10 * time.Second
)

// Host is a network namespace (and, for pods, a cgroup) in which the harness
// runs workloads and commands. Pods, nodes and external hosts embed it.
//
// Processes are started as `nsenter --net=<NetnsPath> -- <program>`, forked
// directly into CgroupPath with clone3(CLONE_INTO_CGROUP) (exec.Cmd's
// UseCgroupFD). nsenter rather than a LockOSThread+setns goroutine because it
// puts the whole process (every thread, forever) into the namespace, is the
// same mechanism used for agents, leaves the test process's threads alone and
// keeps the process's pid (nsenter execs, it does not fork, without --pid),
// so signals and /proc/<pid> reach the workload itself. The process is
// in its cgroup from its first instruction, so nothing it does escapes the
// node's cgroup programs.
type Host struct {
	// NetnsName is the named network namespace ("ip netns" name).
	NetnsName string
	// NetnsPath is /var/run/netns/<NetnsName>.
	NetnsPath string
	// CgroupPath is the cgroup v2 directory processes start in; empty for
	// nodes and external hosts, whose processes stay in the caller's cgroup.
	CgroupPath string

	ident   string // answered to "whoami"
	cluster *Cluster
}

// InNetns runs fn on an OS thread in the host's network namespace (and
// only fn: the test's other goroutines stay where they are), for what the
// kernel resolves in the caller's namespace, such as an ifindex.
func (h *Host) InNetns(fn func() error) error { return InNetns(h.NetnsPath, fn) }

// command prepares name+args to run in the host's netns and cgroup. The
// returned release must be called after Start (it closes the cgroup fd).
func (h *Host) command(ctx context.Context, name string, args ...string) (*exec.Cmd, func(), error) {
	argv := append([]string{"--net=" + h.NetnsPath, "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	// Pdeathsig: workloads die with the test process even when it is
	// killed before any cleanup runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	release := func() {}
	if h.CgroupPath != "" {
		f, err := os.Open(h.CgroupPath)
		if err != nil {
			return nil, nil, fmt.Errorf("open cgroup %s: %w", h.CgroupPath, err)
		}
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(f.Fd())
		release = func() { f.Close() }
	}
	return cmd, release, nil
}

// Exec runs name with args in the host's netns and cgroup and returns its
// combined output. A context without deadline gets DefaultExecTimeout.
func (h *Host) Exec(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultExecTimeout)
	defer cancel()
	cmd, release, err := h.command(ctx, name, args...)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Start()
	release()
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return out.String(), fmt.Errorf("run %s %s in %s: %w: %s", name, strings.Join(args, " "), h.ident, err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// workloadCommand prepares the re-executed current binary running spec.
func (h *Host) workloadCommand(ctx context.Context, spec workloadSpec) (*exec.Cmd, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find own executable: %w", err)
	}
	spec.Ident = h.ident
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, err
	}
	cmd, release, err := h.command(ctx, self)
	if err != nil {
		return nil, nil, err
	}
	cmd.Env = append(os.Environ(), workloadEnv+"="+string(js), "GORACE="+goraceNoExitSleep())
	return cmd, release, nil
}

// runOnce runs a one-shot workload and returns its result event. A spec
// without Timeout gets most of what is left of ctx.
func (h *Host) runOnce(ctx context.Context, spec workloadSpec) (event, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultRequestTimeout)
	defer cancel()
	if spec.Timeout == 0 {
		dl, _ := ctx.Deadline()
		// The workload times out on its own slightly before the context
		// kills it, so the error says what timed out.
		spec.Timeout = time.Until(dl) * 9 / 10
	}
	cmd, release, err := h.workloadCommand(ctx, spec)
	if err != nil {
		return event{}, err
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Start()
	release()
	if err == nil {
		err = cmd.Wait()
	}
	var ev event
	if jerr := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &ev); jerr != nil || ev.Event != "result" {
		return event{}, fmt.Errorf("%s from %s: workload gave no result (exit: %v): %s", spec.Kind, h.ident, err, strings.TrimSpace(stderr.String()))
	}
	if ev.Error != "" {
		return ev, fmt.Errorf("%s from %s to %s: %s", spec.Kind, h.ident, spec.Addr, ev.Error)
	}
	return ev, nil
}

// TCPRequest connects from the host to dst:port, sends payload as one line
// and returns the first line of the reply (without the newline). The echo
// servers answer the line "whoami" with the server's "namespace/name".
func (h *Host) TCPRequest(ctx context.Context, dst netip.Addr, port int, payload string) (string, error) {
	ev, err := h.runOnce(ctx, workloadSpec{Kind: kindTCPRequest, Addr: addrPort(dst, port), Payload: payload})
	return ev.Reply, err
}

// TCPRequestFromPort is TCPRequest from a fixed source port, e.g. to show
// that two clients using the same port stay apart through translation.
func (h *Host) TCPRequestFromPort(ctx context.Context, localPort int, dst netip.Addr, port int, payload string) (string, error) {
	ev, err := h.runOnce(ctx, workloadSpec{Kind: kindTCPRequest, Addr: addrPort(dst, port), Payload: payload, LocalPort: localPort})
	return ev.Reply, err
}

// UDPRequest sends payload as one datagram from the host to dst:port and
// returns the first reply datagram.
func (h *Host) UDPRequest(ctx context.Context, dst netip.Addr, port int, payload string) (string, error) {
	ev, err := h.runOnce(ctx, workloadSpec{Kind: kindUDPRequest, Addr: addrPort(dst, port), Payload: payload})
	return ev.Reply, err
}

// PeerRequest is TCPRequest (proto "tcp") that also returns the peer
// address getpeername() reports, or a UDP request (proto "udp") from an
// unconnected socket that returns the reply's source address as recvfrom()
// reports it: what an application sees of the other end, e.g. a service's
// VIP rather than the backend socket LB connected it to.
func (h *Host) PeerRequest(ctx context.Context, proto string, dst netip.Addr, port int, payload string) (reply string, peer netip.AddrPort, err error) {
	return h.peerRequest(ctx, workloadSpec{Kind: kindPeerRequest, Proto: proto, Addr: addrPort(dst, port), Payload: payload})
}

func (h *Host) peerRequest(ctx context.Context, spec workloadSpec) (reply string, peer netip.AddrPort, err error) {
	ev, err := h.runOnce(ctx, spec)
	if ev.Peer != "" {
		peer, _ = netip.ParseAddrPort(ev.Peer)
	}
	return ev.Reply, peer, err
}

// PeerRequestMapped is PeerRequest to an IPv4 dst from a dual-stack IPv6
// socket at dst's v4-mapped address (::ffff:a.b.c.d), as a program does that
// opens IPv6 sockets only; peer is then v4-mapped too.
func (h *Host) PeerRequestMapped(ctx context.Context, proto string, dst netip.Addr, port int, payload string) (reply string, peer netip.AddrPort, err error) {
	return h.peerRequest(ctx, workloadSpec{Kind: kindPeerRequest, Proto: proto, Addr: addrPort(dst, port), Payload: payload, Mapped: true})
}

// Ping sends one ICMP echo request from the host to dst and waits for the
// reply. (iputils ping is not assumed: the workload uses a raw ICMP socket.)
func (h *Host) Ping(ctx context.Context, dst netip.Addr) error {
	_, err := h.runOnce(ctx, workloadSpec{Kind: kindPing, Addr: dst.String()})
	return err
}

// StartTCPEchoServer starts a TCP echo server listening on port on all of the
// host's addresses and returns once it listens. It runs until stopped or
// until the cluster is cleaned up.
func (h *Host) StartTCPEchoServer(port int) (*Process, error) {
	p, _, err := h.start(workloadSpec{Kind: kindTCPEcho, Port: port}, "ready", nil)
	return p, err
}

// StartUDPEchoServer starts a UDP echo server on port; see StartTCPEchoServer.
func (h *Host) StartUDPEchoServer(port int) (*Process, error) {
	p, _, err := h.start(workloadSpec{Kind: kindUDPEcho, Port: port}, "ready", nil)
	return p, err
}

// UDPClient is a long-lived connected UDP client asking "whoami".
type UDPClient struct {
	*Process
	mu        sync.Mutex
	replies   []string
	timeouts  int
	reconnect int
}

func (c *UDPClient) observe(ev event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev.Event {
	case "ok":
		c.replies = append(c.replies, ev.Reply)
	case "error":
		c.timeouts++
	case "closed":
		c.reconnect++
	}
}

// Timeouts counts the requests that got no reply within the client's
// timeout (a second): datagrams lost on the way, or their answers.
func (c *UDPClient) Timeouts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.timeouts
}

// Replies are the answers so far, oldest first.
func (c *UDPClient) Replies() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.replies...)
}

// SocketFailures counts how often the socket failed and was replaced.
func (c *UDPClient) SocketFailures() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reconnect
}

// StartUDPClient starts a client that keeps one connected UDP socket to
// dst:port, sends "whoami" every interval and records the answers; when
// the socket fails (not a mere timeout) it opens a new one.
func (h *Host) StartUDPClient(dst netip.Addr, port int, interval time.Duration) (*UDPClient, error) {
	c := &UDPClient{}
	spec := workloadSpec{Kind: kindUDPClient, Addr: addrPort(dst, port), Interval: interval, Timeout: time.Second}
	p, _, err := h.start(spec, "connected", c.observe)
	if err != nil {
		return nil, err
	}
	c.Process = p
	return c, nil
}

// StartTCPClient opens one TCP connection from the host to dst:port and,
// every interval, sends a numbered line on it and waits for its echo. It
// returns once connected. The connection is never re-established, so the
// round-trip count shows whether one established flow survives (an agent
// restart, a map update). A reply missing for max(2s, interval) counts as a
// failure and the client goes on; a closed or reset connection ends it.
func (h *Host) StartTCPClient(dst netip.Addr, port int, interval time.Duration) (*TCPClient, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("start tcp client: interval must be positive, got %s", interval)
	}
	return h.startClient(workloadSpec{Kind: kindTCPClient, Addr: addrPort(dst, port), Interval: interval})
}

// startClient starts a client of one connection (see oneConnection); a
// reply is missing after max(2s, interval).
func (h *Host) startClient(spec workloadSpec) (*TCPClient, error) {
	c := &TCPClient{}
	spec.Timeout = max(2*time.Second, spec.Interval)
	p, first, err := h.start(spec, "connected", c.observe)
	if err != nil {
		return nil, err
	}
	c.Process = p
	c.LocalAddr, _ = netip.ParseAddrPort(first.Local)
	return c, nil
}

// start runs a long-lived workload and waits for its first event, which must
// be want. Later events go to onEvent.
func (h *Host) start(spec workloadSpec, want string, onEvent func(event)) (*Process, event, error) {
	cmd, release, err := h.workloadCommand(context.Background(), spec)
	if err != nil {
		return nil, event{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		release()
		return nil, event{}, err
	}
	p := &Process{h: h, cmd: cmd, done: make(chan struct{}), what: spec.Kind + " " + spec.Addr + portSuffix(spec.Port)}
	cmd.Stderr = &p.stderr
	err = cmd.Start()
	release()
	if err != nil {
		return nil, event{}, fmt.Errorf("start %s in %s: %w", p.what, h.ident, err)
	}
	h.cluster.track(p)
	firstc := make(chan event, 1)
	go p.readEvents(stdout, firstc, onEvent)
	select {
	case ev, ok := <-firstc:
		if ok && ev.Event == want {
			return p, ev, nil
		}
		_ = p.Stop()
		if ok {
			return nil, event{}, fmt.Errorf("start %s in %s: %s", p.what, h.ident, ev.Error)
		}
		return nil, event{}, fmt.Errorf("start %s in %s: exited: %v: %s", p.what, h.ident, p.waitErr, strings.TrimSpace(p.Stderr()))
	case <-time.After(startTimeout):
		_ = p.Stop()
		return nil, event{}, fmt.Errorf("start %s in %s: not %s after %s: %s", p.what, h.ident, want, startTimeout, strings.TrimSpace(p.Stderr()))
	}
}

// Process is a long-lived workload.
type Process struct {
	h       *Host
	cmd     *exec.Cmd
	what    string
	done    chan struct{}
	waitErr error
	stderr  lockedBuffer
}

func (p *Process) readEvents(stdout io.Reader, firstc chan<- event, onEvent func(event)) {
	s := bufio.NewScanner(stdout)
	first := true
	for s.Scan() {
		var ev event
		if err := json.Unmarshal(s.Bytes(), &ev); err != nil {
			fmt.Fprintf(&p.stderr, "harness: bad workload output %q\n", s.Text())
			continue
		}
		if first {
			firstc <- ev
			first = false
			continue
		}
		if onEvent != nil {
			onEvent(ev)
		}
	}
	p.waitErr = p.cmd.Wait()
	if first {
		close(firstc)
	}
	close(p.done)
}

// Pid is the workload's process id (also its pid inside the pod: only the
// network namespace is separate).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stderr returns what the process wrote to stderr so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Stop kills the process and waits for it. It is idempotent.
func (p *Process) Stop() error {
	p.kill()
	p.h.cluster.untrack(p)
	return nil
}

func (p *Process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(cgroupKillTimeout):
		// The process is unkillable (stuck in the kernel); cleanup's
		// cgroup and netns sweeps report it.
	}
}

func (p *Process) host() *Host { return p.h }

// TCPClient is a running StartTCPClient workload.
type TCPClient struct {
	*Process
	// LocalAddr is the client side of the connection as the client sees it.
	LocalAddr netip.AddrPort

	mu       sync.Mutex
	ok       int
	failures int
	lastErr  error
	closed   error
}

func (c *TCPClient) observe(ev event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev.Event {
	case "ok":
		c.ok++
	case "error":
		c.failures++
		c.lastErr = fmt.Errorf("round trip %d: %s", ev.Seq, ev.Error)
	case "closed":
		c.closed = fmt.Errorf("connection closed: %s", ev.Error)
		c.lastErr = c.closed
	}
}

// RoundTrips is the number of lines echoed back so far.
func (c *TCPClient) RoundTrips() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok
}

// Failures is the number of round trips that got no reply in time.
func (c *TCPClient) Failures() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failures
}

// Closed is why the connection ended (closed or reset), or nil while it lasts.
func (c *TCPClient) Closed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// LastErr is the most recent failure, or nil.
func (c *TCPClient) LastErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// WaitRoundTrips waits until at least n round trips succeeded. It fails when
// ctx ends or the connection closes first.
func (c *TCPClient) WaitRoundTrips(ctx context.Context, n int) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		c.mu.Lock()
		ok, closed, last := c.ok, c.closed, c.lastErr
		c.mu.Unlock()
		if ok >= n {
			return nil
		}
		if closed != nil {
			return fmt.Errorf("wait for %d round trips (have %d): %w", n, ok, closed)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d round trips (have %d, last error %v): %w", n, ok, last, ctx.Err())
		case <-c.Done():
			// Let the final events land, then re-check once.
			c.mu.Lock()
			ok = c.ok
			c.mu.Unlock()
			if ok >= n {
				return nil
			}
			return fmt.Errorf("wait for %d round trips (have %d): client exited: %s", n, ok, strings.TrimSpace(c.Stderr()))
		case <-t.C:
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

func addrPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

func portSuffix(port int) string {
	if port == 0 {
		return ""
	}
	return fmt.Sprintf("port %d", port)
}

// goraceNoExitSleep returns $GORACE with atexit_sleep_ms=0 added: a binary
// built with -race otherwise sleeps a second on exit, which made every
// one-shot request of a race-enabled test binary take a second.
func goraceNoExitSleep() string {
	if g := os.Getenv("GORACE"); g != "" {
		return g + " atexit_sleep_ms=0"
	}
	return "atexit_sleep_ms=0"
}

// SequentialResult is what SequentialTCPRequests saw.
type SequentialResult struct {
	// Replies counts the answers by reply line.
	Replies map[string]int
	// Failed counts the connections that failed, and Errors keeps the
	// first few errors with their sequence numbers.
	Failed int
	Errors []string
}

// SequentialTCPRequests makes n TCP requests from the host to dst:port one
// after another, each on a connection of its own (sending payload as one
// line, reading the reply line, closing), from this process: its sockets
// are created in the host's namespace, so thousands of connections cost no
// process starts. Every connection gets timeout.
func (h *Host) SequentialTCPRequests(ctx context.Context, dst netip.Addr, port, n int, payload string, timeout time.Duration) (SequentialResult, error) {
	res := SequentialResult{Replies: map[string]int{}}
	addr := addrPort(dst, port)
	err := h.InNetns(func() error {
		for i := range n {
			if err := ctx.Err(); err != nil {
				return err
			}
			reply, err := requestOnce(addr, payload, timeout)
			if err != nil {
				res.Failed++
				if len(res.Errors) < 10 {
					res.Errors = append(res.Errors, fmt.Sprintf("#%d: %v", i, err))
				}
				continue
			}
			res.Replies[reply]++
		}
		return nil
	})
	return res, err
}

// Dial opens a connection ("tcp" or "udp") from the host to dst:port,
// from localPort when not 0, in this process: the socket is created in the
// host's namespace and stays there, so the test can use it directly (keep
// several open at once, send on them at will). The caller closes it.
func (h *Host) Dial(network string, localPort int, dst netip.Addr, port int, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	fam := "4"
	if dst.Is6() {
		fam = "6"
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
		network = "tcp" + fam
		if localPort != 0 {
			d.LocalAddr = &net.TCPAddr{Port: localPort}
		}
	case "udp", "udp4", "udp6":
		network = "udp" + fam
		if localPort != 0 {
			d.LocalAddr = &net.UDPAddr{Port: localPort}
		}
	default:
		return nil, fmt.Errorf("dial from %s: unknown network %q", h.ident, network)
	}
	var conn net.Conn
	err := h.InNetns(func() error {
		var err error
		conn, err = d.Dial(network, addrPort(dst, port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from %s: %w", network, addrPort(dst, port), h.ident, err)
	}
	return conn, nil
}

// RoundTrip sends line on conn (a line on TCP, a datagram on UDP) and
// returns the reply line, within timeout.
func RoundTrip(conn net.Conn, line string, timeout time.Duration) (string, error) {
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, ok := conn.(*net.UDPConn); ok {
		if _, err := conn.Write([]byte(line)); err != nil {
			return "", err
		}
		buf := make([]byte, 2048)
		n, err := conn.Read(buf)
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(string(buf[:n]), "\n"), nil
	}
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		return "", err
	}
	// One reply line per request: read byte by byte so nothing of a
	// later reply is buffered away.
	var b strings.Builder
	one := make([]byte, 1)
	for {
		if _, err := conn.Read(one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(one[0])
	}
}

// requestOnce is one TCP request on a connection of its own.
func requestOnce(addr, payload string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, payload+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}
