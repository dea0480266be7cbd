package policy

import (
	"github.com/sluice-net/sluice/pkg/model"
)

// portKey is the protocol and port part of an entry key. Port holds only
// its first plen bits; proto ProtoAny has port 0 and plen 0.
type portKey struct {
	proto uint8
	port  uint16
	plen  uint8
}

var anyPort = portKey{}

// pack encodes the key in an integer for fast map keys.
func (k portKey) pack() uint32 { return uint32(k.proto)<<24 | uint32(k.plen)<<16 | uint32(k.port) }

func unpackPortKey(v uint32) portKey {
	return portKey{proto: uint8(v >> 24), plen: uint8(v >> 16), port: uint16(v)}
}

func maskPort(port uint16, plen uint8) uint16 {
	if plen == 0 {
		return 0
	}
	return port &^ (1<<(16-plen) - 1)
}

// covers reports whether a matches every packet b matches.
func (a portKey) covers(b portKey) bool {
	if a.proto == ProtoAny {
		return true
	}
	return a.proto == b.proto && a.plen <= b.plen && maskPort(b.port, a.plen) == a.port
}

// portRange appends the fewest prefixes that cover lo..hi (inclusive)
// exactly: 1..65535 is 16 entries, 8000..8080 is 3.
func portRange(out []portKey, proto uint8, lo, hi uint16) []portKey {
	for l, h := uint32(lo), uint32(hi); l <= h; {
		// The largest aligned block starting at l that stays within h.
		size := uint32(1)
		for size < 1<<16 && l%(size*2) == 0 && l+size*2-1 <= h {
			size *= 2
		}
		plen := uint8(16)
		for s := size; s > 1; s /= 2 {
			plen--
		}
		out = append(out, portKey{proto: proto, port: uint16(l), plen: plen})
		l += size
	}
	return out
}

// namedPort is a port given by container port name, resolved per pod.
type namedPort struct {
	proto    uint8
	protocol model.Protocol
	name     string
}

// resolve returns the numbers pod gives the name with the protocol, as exact
// port keys.
func (n namedPort) resolve(out []portKey, pod *model.Pod) []portKey {
	for _, cp := range pod.Ports {
		if cp.Name == n.name && cp.Protocol == n.protocol && cp.Port != 0 {
			out = append(out, portKey{proto: n.proto, port: cp.Port, plen: 16})
		}
	}
	return out
}

// rulePorts is a rule's ports list split into what does not depend on the
// peer (numbers, ranges, whole protocols, and for ingress names resolved
// against the endpoint's own ports) and egress names, which are resolved
// against each destination pod. An empty Ports list is anyPort. Ports that
// cannot match anything (unknown protocol, an inverted range, an
// unresolvable name) are left out, so a rule never allows more than it says.
type rulePorts struct {
	keys  []portKey
	named []namedPort
}

func resolvePorts(ports []model.PolicyPort, dir Direction, self *model.Pod) rulePorts {
	if len(ports) == 0 {
		return rulePorts{keys: []portKey{anyPort}}
	}
	var rp rulePorts
	for _, p := range ports {
		proto, ok := protoNumber(p.Protocol)
		if !ok {
			continue
		}
		switch {
		case p.Port.Name != "":
			np := namedPort{proto: proto, protocol: p.Protocol, name: p.Port.Name}
			if dir == Ingress {
				rp.keys = np.resolve(rp.keys, self)
			} else {
				rp.named = append(rp.named, np)
			}
		case p.Port.Number == 0:
			rp.keys = append(rp.keys, portKey{proto: proto})
		case p.EndPort == 0:
			rp.keys = append(rp.keys, portKey{proto: proto, port: p.Port.Number, plen: 16})
		case p.EndPort >= p.Port.Number:
			rp.keys = portRange(rp.keys, proto, p.Port.Number, p.EndPort)
		}
	}
	return rp
}
