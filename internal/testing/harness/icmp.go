package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ICMP error types and codes the tests craft.
const (
	ICMPDestUnreachable = 3
	ICMPCodePortUnreach = 3
	ICMPCodeFragNeeded  = 4
)

// InnerPacket is the header an ICMP error quotes: an IPv4 header and the
// first 8 bytes of its UDP or TCP header, as RFC 792 asks.
func InnerPacket(proto uint8, src, dst netip.AddrPort) []byte {
	b := make([]byte, 28)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], 1028)
	b[8] = 64
	b[9] = proto
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], inetChecksum(b[:20]))
	binary.BigEndian.PutUint16(b[20:], src.Port())
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	return b
}

func inetChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// SendICMPError sends, from the host, an ICMP error of type typ and code
// to dst, quoting inner (and extra bytes after it, e.g. smuggled data),
// through a raw socket: what a router or an attacker can send.
func (h *Host) SendICMPError(dst netip.Addr, typ, code uint8, inner []byte) error {
	msg := make([]byte, 8+len(inner))
	msg[0], msg[1] = typ, code
	copy(msg[8:], inner)
	binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
	return h.InNetns(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return fmt.Errorf("raw icmp socket in %s: %w", h.ident, err)
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrInet4{Addr: dst.As4()}
		if err := unix.Sendto(fd, msg, 0, sa); err != nil {
			return fmt.Errorf("send icmp error from %s to %s: %w", h.ident, dst, err)
		}
		return nil
	})
}

// ICMPListener receives every ICMP message that reaches a host (raw
// socket: the kernel hands raw sockets a copy of errors too).
type ICMPListener struct {
	f *os.File
}

// ListenICMP opens a raw ICMP socket in the host's namespace.
func (h *Host) ListenICMP() (*ICMPListener, error) {
	var l *ICMPListener
	err := h.InNetns(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMP)
		if err != nil {
			return fmt.Errorf("raw icmp socket in %s: %w", h.ident, err)
		}
		l = &ICMPListener{f: os.NewFile(uintptr(fd), "icmp")}
		return nil
	})
	return l, err
}

// ReceivedICMP is one ICMP message a listener saw.
type ReceivedICMP struct {
	From       netip.Addr
	Type, Code uint8
	// Inner is what an error quotes (after the 8-byte ICMP header).
	Inner []byte
}

// Next waits up to timeout for an ICMP message of type typ; ok is false
// when none came.
func (l *ICMPListener) Next(typ uint8, timeout time.Duration) (ReceivedICMP, bool) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 2048)
	for {
		_ = l.f.SetReadDeadline(deadline)
		n, err := l.f.Read(buf)
		if err != nil {
			return ReceivedICMP{}, false
		}
		if n < 28 || buf[0]>>4 != 4 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		if n < ihl+8 || buf[ihl] != typ {
			continue
		}
		from := netip.AddrFrom4([4]byte(buf[12:16]))
		return ReceivedICMP{From: from, Type: buf[ihl], Code: buf[ihl+1], Inner: append([]byte(nil), buf[ihl+8:n]...)}, true
	}
}

// Close closes the listener.
func (l *ICMPListener) Close() error { return l.f.Close() }

// SetMTU sets the MTU of the pod's veth, both ends, as a CNI configured
// for a smaller network would.
func (p *Pod) SetMTU(mtu int) error {
	if err := p.Node.InNetns(func() error {
		l, err := netlink.LinkByName(p.HostIfName)
		if err != nil {
			return err
		}
		return netlink.LinkSetMTU(l, mtu)
	}); err != nil {
		return fmt.Errorf("set mtu of %s: %w", p.HostIfName, err)
	}
	return p.InNetns(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set mtu of %s eth0: %w", p, err)
		}
		return nil
	})
}

// PathMTU sends one datagram of size bytes (payload) with the don't-fragment
// bit from a connected UDP socket to dst:port, waits wait, sends again and
// returns the path MTU the socket learned (IP_MTU): smaller than the
// interface's only if an ICMP "fragmentation needed" came back and was
// accepted.
//
// Over IPv6 (dst an IPv6 address) the same with IPV6_MTU_DISCOVER and
// IPV6_MTU: the client learns from an ICMPv6 "packet too big".
func (h *Host) PathMTU(dst netip.Addr, port, size int, wait time.Duration) (int, error) {
	mtu := 0
	af, level, discover, mtuOpt := unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_MTU
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: dst.As16(), Port: port}
	if dst.Is4() {
		af, level, discover, mtuOpt = unix.AF_INET, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_MTU
		sa = &unix.SockaddrInet4{Addr: dst.As4(), Port: port}
	}
	err := h.InNetns(func() error {
		fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		// IP_PMTUDISC_DO and IPV6_PMTUDISC_DO are both 2.
		if err := unix.SetsockoptInt(fd, level, discover, unix.IP_PMTUDISC_DO); err != nil {
			return err
		}
		if err := unix.Connect(fd, sa); err != nil {
			return err
		}
		payload := make([]byte, size)
		for range 3 {
			// EMSGSIZE once the smaller MTU is known: that is the point.
			if err := unix.Send(fd, payload, 0); err != nil && !errors.Is(err, unix.EMSGSIZE) {
				return fmt.Errorf("send: %w", err)
			}
			time.Sleep(wait / 3)
		}
		mtu, err = unix.GetsockoptInt(fd, level, mtuOpt)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("path mtu from %s to %s: %w", h.ident, net.JoinHostPort(dst.String(), fmt.Sprint(port)), err)
	}
	return mtu, nil
}
