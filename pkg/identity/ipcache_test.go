package identity

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func node(name string, addrs ...string) *model.Node {
	n := &model.Node{Name: name}
	for _, a := range addrs {
		n.Addresses = append(n.Addresses, model.NodeAddress{Type: model.NodeInternalIP, Address: a})
	}
	n.Addresses = append(n.Addresses, model.NodeAddress{Type: model.NodeHostname, Address: name})
	return n
}

func pod(ns, name, nodeName string, phase model.PodPhase, ips ...string) *model.Pod {
	p := &model.Pod{Namespace: ns, Name: name, NodeName: nodeName, Phase: phase}
	for _, s := range ips {
		p.IPs = append(p.IPs, netip.MustParseAddr(s))
	}
	return p
}

func TestComputeIPCache(t *testing.T) {
	s := &model.State{}
	s.Upsert(node("n1", "192.168.0.1"))
	s.Upsert(node("n2", "192.168.0.2", "2001:db8::2"))
	s.Upsert(pod("a", "web", "n1", model.PodRunning, "10.0.1.5", "fd00::5"))
	s.Upsert(pod("a", "db", "n2", model.PodPending, "10.0.2.7"))
	s.Upsert(pod("a", "done", "n2", model.PodSucceeded, "10.0.2.8"))
	hn := pod("kube-system", "proxy", "n2", model.PodRunning, "192.168.0.2")
	hn.HostNetwork = true
	s.Upsert(hn)
	s.Upsert(pod("a", "new", "n2", model.PodPending))

	ids := map[string]ID{"web": 300, "db": 301, "new": 302}
	got := ComputeIPCache(s, "n1", func(p *model.Pod) ID { return ids[p.Name] })
	assert.Equal(t, map[netip.Prefix]ID{
		pfx("0.0.0.0/0"):       World,
		pfx("::/0"):            World,
		pfx("192.168.0.1/32"):  Host,
		pfx("192.168.0.2/32"):  RemoteNode,
		pfx("2001:db8::2/128"): RemoteNode,
		pfx("10.0.1.5/32"):     300,
		pfx("fd00::5/128"):     300,
		pfx("10.0.2.7/32"):     301,
	}, got)
}

func TestIPCacheConflictsAndChanges(t *testing.T) {
	c := NewIPCache("n1")
	ups, dels := c.Changes()
	assert.Equal(t, []Mapping{{WorldIPv4, World}, {WorldIPv6, World}}, ups)
	assert.Empty(t, dels)

	// Two pods claim one address (the old one's deletion is not seen yet):
	// the lower name wins, and the other takes over when it goes.
	b := pod("a", "b", "n1", model.PodRunning, "10.0.0.9")
	a := pod("a", "a", "n1", model.PodRunning, "10.0.0.9")
	c.SetPod(b, 400)
	c.SetPod(a, 300)
	ups, dels = c.Changes()
	assert.Equal(t, []Mapping{{pfx("10.0.0.9/32"), 300}}, ups)
	assert.Empty(t, dels)

	c.DeletePod(model.NamespacedName{Namespace: "a", Name: "a"})
	ups, _ = c.Changes()
	assert.Equal(t, []Mapping{{pfx("10.0.0.9/32"), 400}}, ups)

	// A node address beats a pod claiming it.
	c.SetNode(node("n2", "10.0.0.9"))
	ups, _ = c.Changes()
	assert.Equal(t, []Mapping{{pfx("10.0.0.9/32"), RemoteNode}}, ups)

	// Changed and changed back: nothing to report.
	c.SetPod(b, 500)
	c.SetPod(b, 400)
	c.DeleteNode("n2")
	c.SetNode(node("n2", "10.0.0.9"))
	ups, dels = c.Changes()
	assert.Empty(t, ups)
	assert.Empty(t, dels)

	c.DeleteNode("n2")
	c.DeletePod(model.NamespacedName{Namespace: "a", Name: "b"})
	ups, dels = c.Changes()
	assert.Empty(t, ups)
	assert.Equal(t, []netip.Prefix{pfx("10.0.0.9/32")}, dels)

	// A terminated pod gives its address up.
	c.SetPod(b, 400)
	done := *b
	done.Phase = model.PodFailed
	c.SetPod(&done, 400)
	ups, dels = c.Changes()
	assert.Empty(t, ups)
	assert.Empty(t, dels)
	_, ok := c.Lookup(pfx("10.0.0.9/32"))
	require.False(t, ok)
}
