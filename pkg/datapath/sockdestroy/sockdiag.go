package sockdestroy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The sock_diag fallback for kernels without bpf_sock_destroy (before 6.5):
// in each namespace, dump the connected UDP sockets over NETLINK_SOCK_DIAG
// and send SOCK_DESTROY for each one whose peer is a removed backend. The
// kernel aborts it exactly as bpf_sock_destroy does (udp_abort: the owner
// sees ECONNABORTED and the socket is disconnected). Needs
// CONFIG_INET_DIAG_DESTROY, which is off in some distributions' kernels.
//
// vishvananda/netlink (v1.3.1, its latest release) frames and reads the
// netlink messages, but its SocketDestroy handles IPv4 TCP only and its
// UDP dump cannot filter, so the inet_diag request is written here.

// Layout of struct inet_diag_req_v2 and struct inet_diag_msg
// (include/uapi/linux/inet_diag.h). Both embed struct inet_diag_sockid,
// which a SOCK_DESTROY request echoes back as dumped: the exact 4-tuple,
// interface and cookie, so only the socket that was dumped can match.
const (
	diagSockIDLen = 48 // struct inet_diag_sockid
	diagReqLen    = 8 + diagSockIDLen
	diagMsgIDOff  = 4
	diagMsgLen    = 72

	// Offsets within struct inet_diag_sockid.
	sockIDDport = 2  // __be16 idiag_dport
	sockIDDst   = 20 // __be32 idiag_dst[4]

	// Connected UDP sockets are in TCP_ESTABLISHED (include/net/tcp_states.h).
	tcpEstablished = 1
)

// diagSockID is a struct inet_diag_sockid in kernel layout.
type diagSockID [diagSockIDLen]byte

// diagReq is a struct inet_diag_req_v2 for UDP sockets of one family.
type diagReq struct {
	family uint8
	states uint32
	id     diagSockID
}

func (r *diagReq) Len() int { return diagReqLen }

func (r *diagReq) Serialize() []byte {
	b := make([]byte, diagReqLen)
	b[0] = r.family
	b[1] = unix.IPPROTO_UDP
	binary.NativeEndian.PutUint32(b[4:8], r.states)
	copy(b[8:], r.id[:])
	return b
}

// ProbeSockDiag reports whether the kernel can destroy UDP sockets
// through sock_diag, in the calling thread's namespace. Nothing is
// destroyed: the probe names a socket with cookie 0, which no socket has.
func ProbeSockDiag() error {
	s, err := newDiagSocket()
	if err != nil {
		return err
	}
	defer s.close()
	// A kernel without UDP sock_diag (CONFIG_INET_UDP_DIAG) answers
	// ENOENT to both requests; only the dump tells it from "no such socket".
	// States 0 selects no socket: the dump costs a walk, not a reply.
	_, err = s.dump(&diagReq{family: unix.AF_INET})
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%w: the kernel lacks UDP sock_diag (CONFIG_INET_UDP_DIAG)", err)
	}
	if err != nil {
		return err
	}
	switch err := s.destroy(unix.AF_INET, diagSockID{}); {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EOPNOTSUPP):
		return errNoDiagDestroy
	default:
		return fmt.Errorf("probe SOCK_DESTROY: %w", err)
	}
}

// errNoDiagDestroy says the kernel was built without SOCK_DESTROY.
var errNoDiagDestroy = errors.New("destroy socket: the kernel lacks CONFIG_INET_DIAG_DESTROY")

// destroyUDPSockDiag is DestroyUDP through sock_diag.
func (d *Destroyer) destroyUDPSockDiag(backends []netip.AddrPort, netns []string) error {
	peers := make(map[netip.AddrPort]bool, len(backends))
	for _, b := range backends {
		peers[netip.AddrPortFrom(b.Addr().Unmap(), b.Port())] = true
	}
	var errs []error
	destroyed := 0
	for _, ns := range netns {
		err := runInNetns(ns, func() error {
			n, err := sockDiagDestroy(peers)
			destroyed += n
			return err
		})
		if err != nil && !errors.Is(err, errNetnsGone) {
			errs = append(errs, fmt.Errorf("destroy UDP sockets in %s: %w", ns, err))
		}
	}
	if err := d.Counted(destroyed); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sockDiagDestroy destroys, in the calling thread's namespace, the
// connected UDP sockets whose peer is in peers, and says how many it
// destroyed.
func sockDiagDestroy(peers map[netip.AddrPort]bool) (int, error) {
	s, err := newDiagSocket()
	if err != nil {
		return 0, err
	}
	defer s.close()

	// The kernel filters by state and peer port (not by peer address
	// without an inet_diag bytecode program); the addresses are matched
	// here. A dump walks the kernel's whole UDP table, so it is one dump
	// per family, filtered by port only when every backend shares one.
	var port uint16
	families := map[uint8]bool{}
	samePort := true
	for p := range peers {
		samePort = samePort && (port == 0 || port == p.Port())
		port = p.Port()
		if p.Addr().Is4() {
			families[unix.AF_INET] = true
		} else {
			families[unix.AF_INET6] = true
		}
	}
	if !samePort {
		port = 0
	}

	destroyed := 0
	var errs []error
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if !families[family] {
			continue
		}
		ids, err := s.dumpConnectedUDP(family, port)
		if err != nil {
			return destroyed, err
		}
		for _, id := range ids {
			if !peers[id.peer(family)] {
				continue
			}
			switch err := s.destroy(family, id); {
			case err == nil:
				destroyed++
			case errors.Is(err, unix.ENOENT):
				// Closed (or reconnected elsewhere) since the dump.
			case errors.Is(err, unix.EOPNOTSUPP):
				return destroyed, errNoDiagDestroy
			default:
				errs = append(errs, fmt.Errorf("destroy socket connected to %s: %w", id.peer(family), err))
			}
		}
	}
	return destroyed, errors.Join(errs...)
}

// peer is the socket's destination address and port.
func (id *diagSockID) peer(family uint8) netip.AddrPort {
	port := binary.BigEndian.Uint16(id[sockIDDport:])
	if family == unix.AF_INET {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(id[sockIDDst:sockIDDst+4])), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(id[sockIDDst:sockIDDst+16])), port)
}

// diagSocket is a NETLINK_SOCK_DIAG socket of the namespace it was opened
// in. Requests on it must not overlap: netlink's shared-socket mode holds
// its lock while a dump is read.
type diagSocket struct {
	sock    *nl.NetlinkSocket
	handles map[int]*nl.SocketHandle
}

func newDiagSocket() (*diagSocket, error) {
	s, err := nl.Subscribe(unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag netlink socket: %w", err)
	}
	// A kernel that stops answering must not hang the agent.
	tv := unix.Timeval{Sec: 10}
	_ = s.SetSendTimeout(&tv)
	_ = s.SetReceiveTimeout(&tv)
	return &diagSocket{sock: s, handles: map[int]*nl.SocketHandle{unix.NETLINK_SOCK_DIAG: {Socket: s}}}, nil
}

func (s *diagSocket) close() { s.sock.Close() }

func (s *diagSocket) request(typ uint16, flags int, r *diagReq) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(int(typ), flags)
	req.Sockets = s.handles
	req.AddData(r)
	return req
}

// dumpConnectedUDP lists the connected UDP sockets of family, to port
// (any port if 0).
func (s *diagSocket) dumpConnectedUDP(family uint8, port uint16) ([]diagSockID, error) {
	r := &diagReq{family: family, states: 1 << tcpEstablished}
	binary.BigEndian.PutUint16(r.id[sockIDDport:], port)
	return s.dump(r)
}

// dump lists the UDP sockets r selects.
func (s *diagSocket) dump(r *diagReq) ([]diagSockID, error) {
	// A dump the kernel flags as interrupted may have missed sockets:
	// take it again rather than leave one pointing at a dead backend.
	for range 3 {
		var ids []diagSockID
		var perr error
		err := s.request(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP, r).
			ExecuteIter(unix.NETLINK_SOCK_DIAG, unix.SOCK_DIAG_BY_FAMILY, func(msg []byte) bool {
				if len(msg) < diagMsgLen {
					perr = fmt.Errorf("short inet_diag_msg: %d bytes, want %d", len(msg), diagMsgLen)
					return false
				}
				ids = append(ids, diagSockID(msg[diagMsgIDOff:diagMsgIDOff+diagSockIDLen]))
				return true
			})
		if errors.Is(err, nl.ErrDumpInterrupted) {
			continue
		}
		if err == nil {
			err = perr
		}
		if err != nil {
			return nil, fmt.Errorf("dump %s UDP sockets: %w", familyName(r.family), err)
		}
		return ids, nil
	}
	return nil, fmt.Errorf("dump %s UDP sockets: %w three times", familyName(r.family), nl.ErrDumpInterrupted)
}

func familyName(family uint8) string {
	if family == unix.AF_INET {
		return "IPv4"
	}
	return "IPv6"
}

// destroy sends SOCK_DESTROY for the socket id names. ENOENT means no
// socket has that 4-tuple and cookie (any more).
func (s *diagSocket) destroy(family uint8, id diagSockID) error {
	_, err := s.request(unix.SOCK_DESTROY, unix.NLM_F_ACK, &diagReq{family: family, id: id}).
		Execute(unix.NETLINK_SOCK_DIAG, 0)
	return err
}

// metricsMu serialises the read-modify-write of the sockets-destroyed
// counter by concurrent DestroyUDPSockets calls.
