package l7

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPorts(t *testing.T) {
	p, err := NewPorts(PortRange{Min: 15000, Max: 15002})
	require.NoError(t, err)
	get := func(k string) uint16 {
		t.Helper()
		port, err := p.Get(k)
		require.NoError(t, err)
		return port
	}
	assert.Equal(t, uint16(15000), get("a"))
	assert.Equal(t, uint16(15001), get("b"))
	assert.Equal(t, uint16(15000), get("a"), "a key keeps its port")
	p.Retain(func(k string) bool { return k == "b" })
	assert.Equal(t, uint16(15000), get("c"), "the lowest free port")
	assert.Equal(t, uint16(15002), get("d"))
	_, err = p.Get("e")
	assert.ErrorIs(t, err, ErrPortsExhausted)
	assert.EqualError(t, err, "proxy port range exhausted: all 3 ports of 15000-15002 are taken by other rule sets; widen --proxy-port-range")
	k, ok := p.Key(15002)
	assert.True(t, ok)
	assert.Equal(t, "d", k)

	// Saved and restored: the same ports; those outside a new range are
	// dropped and their keys get new ones.
	q, err := NewPorts(PortRange{Min: 15001, Max: 15005})
	require.NoError(t, err)
	err = q.Restore(p.Snapshot())
	assert.ErrorContains(t, err, "1 saved ports are outside 15001-15005 or taken twice")
	port, err := q.Get("d")
	require.NoError(t, err)
	assert.Equal(t, uint16(15002), port)
	port, err = q.Get("c")
	require.NoError(t, err)
	assert.Equal(t, uint16(15003), port)
	assert.Error(t, q.Restore(p.Snapshot()), "only before use")
}

func TestParsePortRange(t *testing.T) {
	r, err := ParsePortRange("15000-15999")
	require.NoError(t, err)
	assert.Equal(t, DefaultPortRange, r)
	assert.Equal(t, 1000, r.Len())
	for _, bad := range []string{"15000", "a-b", "16000-15000", "0-10", "1-70000"} {
		_, err := ParsePortRange(bad)
		assert.Error(t, err, bad)
	}
}
