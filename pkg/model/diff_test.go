package model

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestDiff(t *testing.T) {
	old := &State{}
	old.Upsert(pod("default", "keep", "n1", PodRunning, "10.0.0.1"))
	old.Upsert(pod("default", "change", "n1", PodPending, "10.0.0.2"))
	old.Upsert(pod("default", "gone", "n1", PodRunning, "10.0.0.3"))
	old.Upsert(&Namespace{Name: "default"})

	new := &State{}
	new.Upsert(pod("default", "keep", "n1", PodRunning, "10.0.0.1")) // equal, different pointer
	new.Upsert(pod("default", "change", "n1", PodRunning, "10.0.0.2"))
	new.Upsert(pod("default", "added", "n1", PodRunning, "10.0.0.3"))
	new.Upsert(&Namespace{Name: "default", Labels: map[string]string{}}) // empty == nil

	got := Diff(old, new)
	var ops []string
	for _, c := range got {
		ops = append(ops, c.Op.String()+" "+c.Object.Key().String())
	}
	assert.Equal(t, []string{
		"delete Pod default/gone",
		"upsert Pod default/added",
		"upsert Pod default/change",
	}, ops)

	assert.Empty(t, Diff(new, new))
	assert.Len(t, Diff(nil, new), new.Len())
	assert.Len(t, Diff(old, nil), old.Len())
}

func TestEqualDeep(t *testing.T) {
	a := fullState()
	b := fullState()
	assert.Empty(t, Diff(a, b))

	np := b.NetworkPolicies[NamespacedName{"default", "allow"}]
	np.Ingress[0].Peers[1].IPBlock.Except[0] = netip.MustParsePrefix("10.2.0.0/16")
	assert.Len(t, Diff(a, b), 1, "a change deep inside a pointer must be seen")

	ep := b.EndpointSlices[NamespacedName{"default", "web-abc"}]
	ep.Endpoints[0].TargetRef = nil
	assert.Len(t, Diff(a, b), 2)

	assert.False(t, Equal(&Namespace{Name: "x"}, &Node{Name: "x"}))
	assert.True(t, Equal(nil, nil))
}
