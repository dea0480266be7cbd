package harness

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/internal/testing/l7proxy"
)

// workloadEnv carries a workload spec (JSON) to a re-executed copy of the
// current binary. Its presence turns the binary into that workload.
const workloadEnv = "SLUICE_HARNESS_WORKLOAD"

// Workload kinds.
const (
	kindTCPEcho   = "tcp-echo"
	kindUDPEcho   = "udp-echo"
	kindTCPClient = "tcp-client"
	// kindUDPClient keeps one connected UDP socket, asks "whoami" at an
	// interval, and reconnects when the socket fails (e.g. destroyed).
	kindUDPClient  = "udp-client"
	kindTCPRequest = "tcp-request"
	kindUDPRequest = "udp-request"
	kindPing       = "ping"
	// kindPeerRequest is a TCP request that also reports getpeername(), or
	// a UDP request from an unconnected socket that reports the reply's
	// source (recvfrom): what an application sees of its peer.
	kindPeerRequest = "peer-request"
	// kindProbe sends "whoami" to several targets at once and reports
	// every outcome in one result event (see Host.Probe).
	kindProbe = "probe"
	// kindL7Proxy is the stand-in for the node's Envoy (see
	// Node.StartL7Proxy).
	kindL7Proxy = "l7-proxy"
)

// whoami is the request line (or datagram) the echo servers answer with their
// host's identity ("namespace/name" for pods) instead of echoing it, so
// load-balancing tests can see which backend they reached.
const whoami = "whoami"

// whoiscalling is the request line the TCP echo server answers with the
// client address it sees: how tests check that a client's address was
// preserved (or source-translated) on the way.
const whoiscalling = "whoiscalling"

type workloadSpec struct {
	Kind    string `json:"kind"`
	Addr    string `json:"addr,omitempty"` // ip:port, or ip for ping
	Port    int    `json:"port,omitempty"` // listen port of servers
	Payload string `json:"payload,omitempty"`
	Proto   string `json:"proto,omitempty"` // peer-request: "tcp" or "udp"
	// Mapped makes a peer-request to an IPv4 address from a dual-stack
	// IPv6 socket, at the address's v4-mapped form (::ffff:a.b.c.d).
	Mapped bool `json:"mapped,omitempty"`
	// LocalPort fixes the client's source port (0: any).
	LocalPort int           `json:"localPort,omitempty"`
	Ident     string        `json:"ident,omitempty"`
	Interval  time.Duration `json:"interval,omitempty"`
	Timeout   time.Duration `json:"timeout,omitempty"`
	// Targets are the destinations of a probe.
	Targets []probeTarget `json:"targets,omitempty"`
	// StateDir is the agent's state directory, whose API an l7-proxy
	// follows; HTTP makes it decide requests by the rules.
	StateDir string `json:"stateDir,omitempty"`
	HTTP     bool   `json:"http,omitempty"`
	// Method and Path are an HTTP request's (http-request; Path also
	// http-client's).
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
}

// probeTarget is one destination of a probe workload.
type probeTarget struct {
	Proto string `json:"proto"` // "tcp" or "udp"
	Addr  string `json:"addr"`  // ip:port
}

// probeOutcome is the answer from one probe target, in target order.
type probeOutcome struct {
	Reply string `json:"reply,omitempty"`
	Error string `json:"error,omitempty"`
}

// event is one JSON line a workload writes to stdout.
type event struct {
	// Event is "ready" (server listens), "connected", "ok", "error" or
	// "closed" (client), or "result" (one-shot).
	Event string `json:"event"`
	Seq   int    `json:"seq,omitempty"`
	Local string `json:"local,omitempty"`
	Reply string `json:"reply,omitempty"`
	Peer  string `json:"peer,omitempty"`
	Error string `json:"error,omitempty"`
	// Results are a probe's outcomes, one per target.
	Results []probeOutcome `json:"results,omitempty"`
	// Conn is what an l7-proxy saw of a connection ("proxied"); Ports
	// the ports it listens on ("listening").
	Conn  *l7proxy.Conn `json:"conn,omitempty"`
	Ports []uint16      `json:"ports,omitempty"`
	// Status is an HTTP response's status code (http-request's result).
	Status int `json:"status,omitempty"`
}

// RunWorkloadIfRequested turns the process into a harness workload when it
// was started as one, and exits when the workload ends; otherwise it returns
// at once. Test binaries call it first thing in TestMain (or use Main), the
// demo first thing in main: the harness starts workloads by re-executing
// os.Executable().
func RunWorkloadIfRequested() {
	js, ok := os.LookupEnv(workloadEnv)
	if !ok {
		return
	}
	var spec workloadSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "harness workload: bad %s: %v\n", workloadEnv, err)
		os.Exit(2)
	}
	os.Exit(runWorkload(spec))
}

// refuseInsideWorkload stops a workload process that reached cluster setup:
// that means the binary's main or TestMain does not call
// RunWorkloadIfRequested, and going on would recurse.
func refuseInsideWorkload() {
	if _, ok := os.LookupEnv(workloadEnv); ok {
		fmt.Fprintln(os.Stderr, "harness: started as a workload but RunWorkloadIfRequested was not called first thing in TestMain/main")
		os.Exit(3)
	}
}

var stdoutMu sync.Mutex

func emit(ev event) {
	b, _ := json.Marshal(ev)
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func runWorkload(spec workloadSpec) int {
	var err error
	switch spec.Kind {
	case kindTCPEcho:
		err = tcpEchoServer(spec)
	case kindUDPEcho:
		err = udpEchoServer(spec)
	case kindUDPClient:
		err = udpClient(spec)
	case kindTCPClient:
		err = tcpClient(spec)
	case kindProbe:
		emit(event{Event: "result", Results: probe(spec)})
	case kindL7Proxy:
		err = runL7Proxy(spec)
	case kindHTTPServer:
		err = httpServer(spec)
	case kindHTTPClient:
		err = httpClient(spec)
	case kindHTTPRequest:
		var r HTTPReply
		r, err = httpRequest(spec)
		ev := event{Event: "result", Reply: r.Body, Status: r.Status}
		if err != nil {
			ev.Error = err.Error()
		}
		emit(ev)
	case kindTCPRequest, kindUDPRequest, kindPing, kindPeerRequest:
		var reply, peer string
		switch spec.Kind {
		case kindPeerRequest:
			reply, peer, err = peerRequest(spec)
		case kindTCPRequest:
			reply, err = tcpRequest(spec)
		case kindUDPRequest:
			reply, err = udpRequest(spec)
		default:
			err = ping(spec)
		}
		ev := event{Event: "result", Reply: reply, Peer: peer}
		if err != nil {
			ev.Error = err.Error()
		}
		emit(ev)
	default:
		err = fmt.Errorf("unknown workload kind %q", spec.Kind)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness workload %s: %v\n", spec.Kind, err)
		return 1
	}
	return 0
}

func answer(spec workloadSpec, line string) string {
	if strings.TrimSpace(line) == whoami {
		return spec.Ident
	}
	return line
}

func tcpEchoServer(spec workloadSpec) error {
	ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", spec.Port))
	if err != nil {
		emit(event{Event: "error", Error: err.Error()})
		return err
	}
	// IPv6 on its own socket (v6-only), so IPv4 peers keep being seen
	// as IPv4 addresses; none where the host has IPv6 disabled.
	if ln6, err := net.Listen("tcp6", fmt.Sprintf(":%d", spec.Port)); err == nil {
		go func() { _ = serveTCPEcho(spec, ln6) }()
	}
	emit(event{Event: "ready", Local: ln.Addr().String()})
	return serveTCPEcho(spec, ln)
}

func serveTCPEcho(spec workloadSpec, ln net.Listener) error {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go func() {
			defer conn.Close()
			r := bufio.NewReader(conn)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				reply := answer(spec, strings.TrimSuffix(line, "\n"))
				if strings.TrimSpace(line) == whoiscalling {
					reply = conn.RemoteAddr().String()
				}
				if _, err := conn.Write([]byte(reply + "\n")); err != nil {
					return
				}
			}
		}()
	}
}

func udpEchoServer(spec workloadSpec) error {
	pc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", spec.Port))
	if err != nil {
		emit(event{Event: "error", Error: err.Error()})
		return err
	}
	// IPv6 on its own socket, as the TCP echo server does.
	if pc6, err := net.ListenPacket("udp6", fmt.Sprintf(":%d", spec.Port)); err == nil {
		go func() { _ = serveUDPEcho(spec, pc6) }()
	}
	emit(event{Event: "ready", Local: pc.LocalAddr().String()})
	return serveUDPEcho(spec, pc)
}

func serveUDPEcho(spec workloadSpec, pc net.PacketConn) error {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if _, err := pc.WriteTo([]byte(answer(spec, string(buf[:n]))), from); err != nil {
			fmt.Fprintf(os.Stderr, "reply to %s: %v\n", from, err)
		}
	}
}

func tcpClient(spec workloadSpec) error {
	return oneConnection(spec,
		func(conn net.Conn, seq int) error {
			_, err := fmt.Fprintf(conn, "seq %d\n", seq)
			return err
		},
		func(r *bufio.Reader, seq int) (bool, string, error) {
			line, err := r.ReadString('\n')
			return err == nil && strings.TrimSuffix(line, "\n") == fmt.Sprintf("seq %d", seq), "", err
		})
}

// oneConnection is the loop of the long-lived clients: one connection to
// spec.Addr, on which every spec.Interval it sends request seq and reads
// answers until one is seq's ("ok"), one is wrong (answer's failure
// message: "error"), or none comes within spec.Timeout ("error": the flow
// may recover, and a late answer is skipped because its number is old).
// A failed write or read ends it ("closed").
func oneConnection(spec workloadSpec, send func(conn net.Conn, seq int) error,
	answer func(r *bufio.Reader, seq int) (ok bool, failure string, err error)) error {
	conn, err := net.DialTimeout(network("tcp", spec.Addr), spec.Addr, spec.Timeout)
	if err != nil {
		emit(event{Event: "error", Error: err.Error()})
		return err
	}
	defer conn.Close()
	emit(event{Event: "connected", Local: conn.LocalAddr().String()})
	r := bufio.NewReader(conn)
	t := time.NewTicker(spec.Interval)
	defer t.Stop()
	for seq := 1; ; seq++ {
		if err := send(conn, seq); err != nil {
			emit(event{Event: "closed", Seq: seq, Error: err.Error()})
			return err
		}
		_ = conn.SetReadDeadline(time.Now().Add(spec.Timeout))
		for {
			ok, failure, err := answer(r, seq)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				emit(event{Event: "error", Seq: seq, Error: err.Error()})
				break
			}
			if err != nil {
				emit(event{Event: "closed", Seq: seq, Error: err.Error()})
				return err
			}
			if ok {
				emit(event{Event: "ok", Seq: seq})
				break
			}
			if failure != "" {
				emit(event{Event: "error", Seq: seq, Error: failure})
				break
			}
		}
		<-t.C
	}
}

func udpClient(spec workloadSpec) error {
	for {
		conn, err := net.Dial(network("udp", spec.Addr), spec.Addr)
		if err != nil {
			emit(event{Event: "error", Error: err.Error()})
			time.Sleep(spec.Interval)
			continue
		}
		emit(event{Event: "connected", Local: conn.LocalAddr().String()})
		buf := make([]byte, 2048)
		for {
			_ = conn.SetDeadline(time.Now().Add(spec.Timeout))
			_, err := conn.Write([]byte(whoami))
			var n int
			if err == nil {
				n, err = conn.Read(buf)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				emit(event{Event: "error", Error: err.Error()})
			} else if err != nil {
				// The socket itself failed: start over with a new one.
				emit(event{Event: "closed", Error: err.Error()})
				conn.Close()
				break
			} else {
				emit(event{Event: "ok", Reply: string(buf[:n])})
			}
			time.Sleep(spec.Interval)
		}
	}
}

func tcpRequest(spec workloadSpec) (string, error) {
	deadline := time.Now().Add(spec.Timeout)
	d := net.Dialer{Timeout: spec.Timeout}
	if spec.LocalPort != 0 {
		d.LocalAddr = &net.TCPAddr{Port: spec.LocalPort}
	}
	conn, err := d.Dial(network("tcp", spec.Addr), spec.Addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	if _, err := conn.Write([]byte(spec.Payload + "\n")); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

func udpRequest(spec workloadSpec) (string, error) {
	conn, err := net.Dial(network("udp", spec.Addr), spec.Addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(spec.Timeout))
	if _, err := conn.Write([]byte(spec.Payload)); err != nil {
		return "", fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 65535)
	n, err := conn.Read(buf)
	if err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	return string(buf[:n]), nil
}

func peerRequest(spec workloadSpec) (reply, peer string, err error) {
	if spec.Mapped {
		return mappedPeerRequest(spec)
	}
	if spec.Proto == "udp" {
		conn, err := net.ListenUDP(network("udp", spec.Addr), nil)
		if err != nil {
			return "", "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(spec.Timeout))
		dst, err := net.ResolveUDPAddr(network("udp", spec.Addr), spec.Addr)
		if err != nil {
			return "", "", err
		}
		if _, err := conn.WriteToUDP([]byte(spec.Payload), dst); err != nil {
			return "", "", fmt.Errorf("send: %w", err)
		}
		buf := make([]byte, 65535)
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			return "", "", fmt.Errorf("read reply: %w", err)
		}
		return string(buf[:n]), from.String(), nil
	}
	conn, err := net.DialTimeout(network("tcp", spec.Addr), spec.Addr, spec.Timeout)
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	// Ask the kernel, not Go's cached dial address.
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return "", "", err
	}
	var sa unix.Sockaddr
	var serr error
	if err := raw.Control(func(fd uintptr) { sa, serr = unix.Getpeername(int(fd)) }); err != nil {
		return "", "", err
	}
	if serr != nil {
		return "", "", fmt.Errorf("getpeername: %w", serr)
	}
	peer = sockaddrString(sa)
	_ = conn.SetDeadline(time.Now().Add(spec.Timeout))
	if _, err := conn.Write([]byte(spec.Payload + "\n")); err != nil {
		return "", peer, fmt.Errorf("send: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", peer, fmt.Errorf("read reply: %w", err)
	}
	return strings.TrimSuffix(line, "\n"), peer, nil
}

// sockaddrString is sa as "ip:port" ("[::ffff:a.b.c.d]:port" for a
// v4-mapped IPv6 one), or "" if it is neither IPv4 nor IPv6.
func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return ""
}

// mappedPeerRequest is peerRequest from an AF_INET6 socket (IPV6_V6ONLY
// off) to the v4-mapped form of an IPv4 address, by hand: Go's net package
// dials a v4-mapped address from an IPv4 socket. The kernel runs the IPv6
// socket hooks for such a connection (connect6, getpeername6, recvmsg6).
func mappedPeerRequest(spec workloadSpec) (reply, peer string, err error) {
	ap, err := netip.ParseAddrPort(spec.Addr)
	if err != nil || !ap.Addr().Is4() {
		return "", "", fmt.Errorf("v4-mapped request: %q is not an IPv4 address and port", spec.Addr)
	}
	dst := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: netip.AddrFrom16(ap.Addr().As16()).As16()}
	typ := unix.SOCK_STREAM
	if spec.Proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", "", fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		return "", "", fmt.Errorf("IPV6_V6ONLY: %w", err)
	}
	tv := unix.NsecToTimeval(spec.Timeout.Nanoseconds())
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return "", "", fmt.Errorf("socket timeout: %w", err)
		}
	}
	buf := make([]byte, 65535)
	if spec.Proto == "udp" {
		if err := unix.Sendto(fd, []byte(spec.Payload), 0, dst); err != nil {
			return "", "", fmt.Errorf("send: %w", err)
		}
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return "", "", fmt.Errorf("read reply: %w", err)
		}
		return string(buf[:n]), sockaddrString(from), nil
	}
	if err := unix.Connect(fd, dst); err != nil {
		return "", "", fmt.Errorf("connect [%s]:%d: %w", netip.AddrFrom16(dst.Addr), dst.Port, err)
	}
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return "", "", fmt.Errorf("getpeername: %w", err)
	}
	peer = sockaddrString(sa)
	if _, err := unix.Write(fd, []byte(spec.Payload+"\n")); err != nil {
		return "", peer, fmt.Errorf("send: %w", err)
	}
	var got []byte
	for !strings.Contains(string(got), "\n") {
		n, err := unix.Read(fd, buf)
		if err != nil || n == 0 {
			return "", peer, fmt.Errorf("read reply: %d bytes then %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	return strings.SplitN(string(got), "\n", 2)[0], peer, nil
}

// probe sends "whoami" to every target concurrently, each bounded by
// spec.Timeout, and returns the outcomes in target order.
func probe(spec workloadSpec) []probeOutcome {
	out := make([]probeOutcome, len(spec.Targets))
	var wg sync.WaitGroup
	for i, tg := range spec.Targets {
		wg.Go(func() {
			one := workloadSpec{Addr: tg.Addr, Payload: whoami, Timeout: spec.Timeout}
			var reply string
			var err error
			switch tg.Proto {
			case "tcp":
				reply, err = tcpRequest(one)
			case "udp":
				reply, err = udpRequest(one)
			default:
				err = fmt.Errorf("unknown protocol %q", tg.Proto)
			}
			out[i].Reply = reply
			if err != nil {
				out[i].Error = err.Error()
			}
		})
	}
	wg.Wait()
	return out
}

// ping sends one ICMP echo request on a raw socket (the workload runs as
// root) and waits for the matching reply.
func ping(spec workloadSpec) error {
	dst, err := netip.ParseAddr(spec.Addr)
	if err != nil {
		return err
	}
	// ICMPv4 echo is 8/0; ICMPv6's 128/129, whose checksum (over a
	// pseudo-header) the kernel computes on raw ICMPv6 sockets.
	proto, laddr, request, reply := "ip4:icmp", "0.0.0.0", byte(8), byte(0)
	if dst.Is6() && !dst.Is4In6() {
		proto, laddr, request, reply = "ip6:ipv6-icmp", "::", 128, 129
	}
	conn, err := net.ListenPacket(proto, laddr)
	if err != nil {
		return fmt.Errorf("open raw icmp socket: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(spec.Timeout))
	id, seq := uint16(os.Getpid()), uint16(1)
	msg := make([]byte, 8+16)
	msg[0] = request
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[8:], "sluice-harness!!")
	if request == 8 {
		binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
	}
	if _, err := conn.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("send echo request: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		// ip4 raw sockets in Go return the ICMP message without IP header.
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply: %w", err)
		}
		fromIP, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if n < 8 || fromIP.Unmap() != dst.Unmap() || buf[0] != reply ||
			binary.BigEndian.Uint16(buf[4:]) != id || binary.BigEndian.Uint16(buf[6:]) != seq {
			continue
		}
		return nil
	}
}

// network is base ("tcp", "udp") for the family of the host in addr
// ("host:port"): IPv4 sockets for IPv4 peers, as before IPv6 was added.
func network(base, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if a, perr := netip.ParseAddr(host); err == nil && perr == nil && a.Is6() && !a.Is4In6() {
		return base + "6"
	}
	return base + "4"
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
