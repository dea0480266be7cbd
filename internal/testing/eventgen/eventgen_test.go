package eventgen

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath/events"
)

// The generator's packets must be what the datapath parses: a valid IPv4
// TCP segment with the tuple and flags asked for.
func TestTCPPacket(t *testing.T) {
	src, dst := netip.MustParseAddr("10.244.10.2"), netip.MustParseAddr("10.244.10.3")
	for _, flags := range []uint8{events.TCPSYN, events.TCPRST | events.TCPACK} {
		b := TCPPacket(src, dst, 10001, 8080, flags, 1000)
		p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
		require.Nil(t, p.ErrorLayer(), "decodes")
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		assert.Equal(t, src.AsSlice(), []byte(ip.SrcIP.To4()))
		assert.Equal(t, dst.AsSlice(), []byte(ip.DstIP.To4()))
		assert.EqualValues(t, 10001, tcp.SrcPort)
		assert.EqualValues(t, 8080, tcp.DstPort)
		assert.Equal(t, flags&events.TCPSYN != 0, tcp.SYN)
		assert.Equal(t, flags&events.TCPRST != 0, tcp.RST)
		assert.Equal(t, flags&events.TCPACK != 0, tcp.ACK)
		assert.Zero(t, Checksum(b[14:34], 0), "IPv4 header checksum")
		var pseudo uint32
		for i := 26; i < 34; i += 2 {
			pseudo += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		assert.Zero(t, Checksum(b[34:], pseudo+6+20), "TCP checksum")
	}
}
