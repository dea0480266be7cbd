package service

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

func fkey(addr string, port uint16) FrontendKey {
	return FrontendKey{Address: ip(addr), Port: port, Protocol: model.ProtocolTCP}
}

func bkey(addr string, port uint16) BackendKey {
	return BackendKey{Address: ip(addr), Port: port, Protocol: model.ProtocolTCP}
}

func TestAllocatorAssign(t *testing.T) {
	a, err := NewAllocator(nil, nil)
	require.NoError(t, err)
	s := &a.backends
	k1, k2, k3, k4 := bkey("10.0.0.1", 80), bkey("10.0.0.2", 80), bkey("10.0.0.3", 80), bkey("10.0.0.4", 80)

	steps := []struct {
		name string
		need []BackendKey
		want map[BackendKey]uint32
	}{
		{"first IDs start at 1 in key order", []BackendKey{k1, k2, k3}, map[BackendKey]uint32{k1: 1, k2: 2, k3: 3}},
		{"kept keys keep IDs; released 2 is not reused in the same round", []BackendKey{k1, k3, k4}, map[BackendKey]uint32{k1: 1, k3: 3, k4: 4}},
		{"released 2 is reused in the next round", []BackendKey{k1, k2, k3, k4}, map[BackendKey]uint32{k1: 1, k2: 2, k3: 3, k4: 4}},
		{"everything released", nil, map[BackendKey]uint32{}},
		{"lowest free after a full release", []BackendKey{k4}, map[BackendKey]uint32{k4: 1}},
	}
	for _, st := range steps {
		got := s.assign(st.need)
		assert.Equal(t, st.want, got, st.name)
		assert.Equal(t, st.want, a.BackendIDs(), st.name)
	}
}

func TestAllocatorSeeded(t *testing.T) {
	a, err := NewAllocator(
		map[FrontendKey]uint32{fkey("10.96.0.10", 80): 7},
		map[BackendKey]uint32{bkey("10.0.0.1", 8080): 1, bkey("10.0.0.9", 8080): 3},
	)
	require.NoError(t, err)
	d := Compute(state(
		svc("web", "10.96.0.10"),
		svc("api", "10.96.0.11"),
		slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready), ep("10.0.0.2", "n1", ready), ep("10.0.0.3", "n1", ready)}),
	), Options{IDs: a})

	// web keeps 7; api gets the lowest free frontend ID. Backend 10.0.0.9 is
	// gone but its ID 3 stays taken during this computation.
	assert.Equal(t, map[FrontendKey]uint32{fkey("10.96.0.10", 80): 7, fkey("10.96.0.11", 80): 1}, a.FrontendIDs())
	assert.Equal(t, map[BackendKey]uint32{bkey("10.0.0.1", 8080): 1, bkey("10.0.0.2", 8080): 2, bkey("10.0.0.3", 8080): 4}, a.BackendIDs())
	web := d.Frontends[1]
	require.Equal(t, "web", web.Service.Name)
	assert.Equal(t, uint32(7), web.ID)
	assert.Equal(t, []uint32{1, 2, 4}, []uint32{web.Backends[0].ID, web.Backends[1].ID, web.Backends[2].ID})
	assert.Equal(t, []uint32{1, 2, 4}, []uint32{d.Backends[0].ID, d.Backends[1].ID, d.Backends[2].ID})
}

func TestAllocatorAcrossComputations(t *testing.T) {
	a, err := NewAllocator(nil, nil)
	require.NoError(t, err)
	opts := Options{IDs: a}
	eps := func(addrs ...string) *model.EndpointSlice {
		var l []model.Endpoint
		for _, s := range addrs {
			l = append(l, ep(s, "n1", ready))
		}
		return slice("web-a", "web", l)
	}
	ids := func(d *Desired) map[string]uint32 {
		out := map[string]uint32{}
		for _, b := range d.Backends {
			out[b.Address.String()] = b.ID
		}
		return out
	}
	web := svc("web", "10.96.0.10")

	d1 := Compute(state(web, eps("10.0.0.1", "10.0.0.2", "10.0.0.3")), opts)
	assert.Equal(t, map[string]uint32{"10.0.0.1": 1, "10.0.0.2": 2, "10.0.0.3": 3}, ids(d1))
	// 10.0.0.2 leaves and 10.0.0.4 arrives in one computation: 2 is not reused.
	d2 := Compute(state(web, eps("10.0.0.1", "10.0.0.3", "10.0.0.4")), opts)
	assert.Equal(t, map[string]uint32{"10.0.0.1": 1, "10.0.0.3": 3, "10.0.0.4": 4}, ids(d2))
	d3 := Compute(state(web, eps("10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5")), opts)
	assert.Equal(t, map[string]uint32{"10.0.0.1": 1, "10.0.0.3": 3, "10.0.0.4": 4, "10.0.0.5": 2}, ids(d3))
	assert.Equal(t, d1.Frontends[0].ID, d3.Frontends[0].ID)

	// A restart seeded from the IDs read back keeps them all.
	b, err := NewAllocator(a.FrontendIDs(), a.BackendIDs())
	require.NoError(t, err)
	d4 := Compute(state(web, eps("10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5")), Options{IDs: b})
	assert.Equal(t, d3, d4)
}

func TestNewAllocatorErrors(t *testing.T) {
	tests := []struct {
		name string
		fe   map[FrontendKey]uint32
		be   map[BackendKey]uint32
		want string
	}{
		{"zero frontend ID", map[FrontendKey]uint32{fkey("10.96.0.10", 80): 0}, nil, "existing frontend 10.96.0.10:80/TCP has reserved ID 0"},
		{"shared backend ID", nil, map[BackendKey]uint32{bkey("10.0.0.1", 80): 5, bkey("10.0.0.2", 80): 5}, "existing backends 10.0.0.1:80/TCP and 10.0.0.2:80/TCP share ID 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewAllocator(tt.fe, tt.be)
			assert.EqualError(t, err, tt.want)
		})
	}
}
