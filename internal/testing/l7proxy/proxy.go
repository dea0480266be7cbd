package l7proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/l7"
)

// Options configure Run.
type Options struct {
	// Config returns the node's compiled L7 policy; Run polls it every
	// Poll (default 100ms) and opens and closes listeners to follow it.
	Config func(ctx context.Context) (l7.Config, error)
	Poll   time.Duration
	// HTTP decides each connection's first request by the listener's
	// rules (see the package documentation); otherwise bytes are relayed
	// as they come.
	HTTP bool
	// Mark is the socket mark of the proxy's upstream connections
	// (datapath.MarkFromProxy).
	Mark uint32
	// Report is told of every connection once it is decided (and, for a
	// relayed one, its upstream connection opened or failed). It may be
	// called from several goroutines at once.
	Report func(Conn)
	// Listening, if set, is told the ports listened on after every change.
	Listening func(ports []uint16)
}

// Conn is what the proxy saw of one connection.
type Conn struct {
	// Listener is the proxy port the connection was handed to.
	Listener uint16 `json:"listener"`
	// Client and Original are the connection's ends as the proxy's socket
	// shows them: the client's address and the original destination.
	Client   netip.AddrPort `json:"client"`
	Original netip.AddrPort `json:"original"`
	// Request is "METHOD PATH" of the first request (HTTP mode).
	Request string `json:"request,omitempty"`
	// Allowed: relayed; Rule names the rule that allowed it (HTTP mode).
	Allowed bool   `json:"allowed"`
	Rule    string `json:"rule,omitempty"`
	// Audit: denied by the rules but relayed (a listener in audit mode).
	Audit bool `json:"audit,omitempty"`
	// Upstream is the local address of the proxy's own connection to
	// Original; Error why there is none (or why the request was not read).
	Upstream netip.AddrPort `json:"upstream,omitzero"`
	Error    string         `json:"error,omitempty"`
}

// Run serves until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Poll <= 0 {
		o.Poll = 100 * time.Millisecond
	}
	p := &proxy{o: o, listeners: map[uint16]*listener{}}
	defer p.closeAll()
	t := time.NewTicker(o.Poll)
	defer t.Stop()
	for {
		cfg, err := o.Config(ctx)
		if err == nil {
			p.follow(cfg)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type proxy struct {
	o         Options
	mu        sync.Mutex
	listeners map[uint16]*listener
}

// listener is one proxy port and the rules it enforces now.
type listener struct {
	ln    net.Listener
	mu    sync.Mutex
	rules []l7.Rule
	audit bool
}

func (l *listener) current() ([]l7.Rule, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rules, l.audit
}

// follow opens the listeners cfg has and closes the others; a closed
// listener's connections go on, as Envoy drains them.
func (p *proxy) follow(cfg l7.Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[uint16]bool{}
	changed := false
	for _, l := range cfg.Listeners {
		want[l.Port] = true
		if cur := p.listeners[l.Port]; cur != nil {
			cur.mu.Lock()
			cur.rules, cur.audit = l.Rules, l.Audit
			cur.mu.Unlock()
			continue
		}
		ln, err := listenTransparent(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), l.Port))
		if err != nil {
			continue // the next poll tries again
		}
		nl := &listener{ln: ln, rules: l.Rules, audit: l.Audit}
		p.listeners[l.Port] = nl
		changed = true
		go p.accept(l.Port, nl)
	}
	for port, l := range p.listeners {
		if !want[port] {
			_ = l.ln.Close()
			delete(p.listeners, port)
			changed = true
		}
	}
	if changed && p.o.Listening != nil {
		ports := make([]uint16, 0, len(p.listeners))
		for port := range p.listeners {
			ports = append(ports, port)
		}
		p.o.Listening(ports)
	}
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for port, l := range p.listeners {
		_ = l.ln.Close()
		delete(p.listeners, port)
	}
}

// listenTransparent listens with IP_TRANSPARENT, as Envoy's listeners with
// transparent: true do: connections handed over with bpf_sk_assign keep
// their original destination as the accepted socket's local address.
func listenTransparent(addr netip.AddrPort) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return setsockopt(c, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	}}
	return lc.Listen(context.Background(), "tcp4", addr.String())
}

func setsockopt(c syscall.RawConn, level, opt, value int) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, value) }); err != nil {
		return err
	}
	return serr
}

func (p *proxy) accept(port uint16, l *listener) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(port, l, c)
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// handle decides and relays one connection.
func (p *proxy) handle(port uint16, l *listener, c net.Conn) {
	defer c.Close()
	conn := Conn{Listener: port, Client: addrPort(c.RemoteAddr()), Original: addrPort(c.LocalAddr()), Allowed: true}
	var head []byte // what was read from the client before relaying
	if p.o.HTTP {
		var buf bytes.Buffer
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		req, err := http.ReadRequest(bufio.NewReader(io.TeeReader(c, &buf)))
		_ = c.SetReadDeadline(time.Time{})
		if err != nil {
			conn.Allowed, conn.Error = false, "read request: "+err.Error()
			p.report(conn)
			return
		}
		head = buf.Bytes()
		rules, audit := l.current()
		conn.Request = req.Method + " " + req.URL.Path
		rule, ok := match(rules, req)
		conn.Allowed, conn.Rule = ok, rule
		if !ok && audit {
			conn.Allowed, conn.Audit = true, true
		}
		if !conn.Allowed {
			p.report(conn)
			_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\ncontent-length: 19\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nRBAC: access denied")
			return
		}
	}
	up, err := p.dialUpstream(conn.Original)
	if err != nil {
		conn.Error = "upstream: " + err.Error()
		p.report(conn)
		return
	}
	defer up.Close()
	conn.Upstream = addrPort(up.LocalAddr())
	p.report(conn)
	if len(head) > 0 {
		if _, err := up.Write(head); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(c, up)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(up, c)
	if tc, ok := up.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	<-done
}

// dialUpstream connects to the original destination from the node's own
// address, with the mark the destination's endpoint admits.
func (p *proxy) dialUpstream(dst netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		if p.o.Mark == 0 {
			return nil
		}
		return setsockopt(c, unix.SOL_SOCKET, unix.SO_MARK, int(p.o.Mark))
	}}
	return d.Dial("tcp4", dst.String())
}

func (p *proxy) report(c Conn) {
	if p.o.Report != nil {
		p.o.Report(c)
	}
}

// match returns the first rule that allows req, by its name.
func match(rules []l7.Rule, req *http.Request) (string, bool) {
	for i := range rules {
		if ok, _ := matches(&rules[i], req); ok {
			return rules[i].Ref.String(), true
		}
	}
	return "", false
}

// whole reports whether the RE2 expression re matches all of s.
func whole(re, s string) (bool, error) {
	return regexp.MatchString("^(?:"+re+")$", s)
}

// matches applies one rule as Envoy's RBAC filter applies the permission
// the xDS generator makes of it (every field set must hold).
func matches(r *l7.Rule, req *http.Request) (bool, error) {
	if r.Method != "" {
		if ok, err := whole(r.Method, req.Method); !ok || err != nil {
			return false, err
		}
	}
	path := req.URL.Path
	switch r.Path.Kind {
	case l7.PathExact:
		if path != r.Path.Value {
			return false, nil
		}
	case l7.PathPrefix:
		if !strings.HasPrefix(path, r.Path.Value) {
			return false, nil
		}
	case l7.PathRegex:
		if ok, err := whole(r.Path.Value, path); !ok || err != nil {
			return false, err
		}
	}
	if r.Host != "" {
		if ok, err := whole(r.Host, req.Host); !ok || err != nil {
			return false, err
		}
	}
	for _, h := range r.Headers {
		vals, present := req.Header[http.CanonicalHeaderKey(h.Name)]
		if !present {
			return false, nil
		}
		if h.Value == "" {
			continue
		}
		v := strings.Join(vals, ",")
		if h.Regex {
			if ok, err := whole(h.Value, v); !ok || err != nil {
				return false, err
			}
		} else if v != h.Value {
			return false, nil
		}
	}
	return true, nil
}

// String is a one-line description, for logs and the demo.
func (c Conn) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "listener %d: client %s, original destination %s", c.Listener, c.Client, c.Original)
	if c.Request != "" {
		b.WriteString(", " + c.Request)
		switch {
		case c.Audit:
			b.WriteString(": denied (audit mode: relayed)")
		case c.Allowed:
			b.WriteString(": allowed by " + c.Rule)
		default:
			b.WriteString(": denied (403)")
		}
	}
	if c.Upstream.IsValid() {
		b.WriteString(", upstream from " + c.Upstream.String())
	}
	if c.Error != "" {
		b.WriteString(", " + c.Error)
	}
	return b.String()
}
