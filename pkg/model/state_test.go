package model

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func pod(ns, name, node string, phase PodPhase, ips ...string) *Pod {
	p := &Pod{Namespace: ns, Name: name, NodeName: node, Phase: phase}
	for _, ip := range ips {
		p.IPs = append(p.IPs, netip.MustParseAddr(ip))
	}
	return p
}

func TestLocalPods(t *testing.T) {
	var s State
	s.Upsert(pod("default", "running", "n1", PodRunning, "10.0.0.1"))
	s.Upsert(pod("default", "pending", "n1", PodPending, "10.0.0.2"))
	s.Upsert(pod("default", "unknown", "n1", PodUnknown, "10.0.0.3"))
	s.Upsert(pod("default", "succeeded", "n1", PodSucceeded, "10.0.0.4"))
	s.Upsert(pod("default", "failed", "n1", PodFailed, "10.0.0.5"))
	s.Upsert(pod("default", "no-ip", "n1", PodPending))
	s.Upsert(pod("default", "other-node", "n2", PodRunning, "10.0.1.1"))
	hn := pod("kube-system", "hostnet", "n1", PodRunning, "192.168.0.1")
	hn.HostNetwork = true
	s.Upsert(hn)
	s.Upsert(pod("a", "first", "n1", PodRunning, "10.0.0.9"))

	var names []string
	for _, p := range s.LocalPods("n1") {
		names = append(names, p.Namespace+"/"+p.Name)
	}
	assert.Equal(t, []string{"a/first", "default/pending", "default/running", "default/unknown"}, names)
	assert.Empty(t, s.LocalPods("n3"))
	assert.Empty(t, (*State)(nil).LocalPods("n1"))
}

func TestNamespaceLabels(t *testing.T) {
	var s State
	s.Upsert(&Namespace{Name: "prod", Labels: map[string]string{"env": "prod"}})
	assert.Equal(t, map[string]string{"env": "prod"}, s.NamespaceLabels("prod"))
	assert.Nil(t, s.NamespaceLabels("missing"))
}

func fullState() *State {
	s := &State{Revision: 7}
	s.Upsert(&Namespace{Name: "default", Labels: map[string]string{"kubernetes.io/metadata.name": "default"}})
	s.Upsert(&Node{Name: "n1", Addresses: []NodeAddress{{Type: NodeInternalIP, Address: "192.168.1.10"}},
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/64")}})
	p := pod("default", "web", "n1", PodRunning, "10.0.0.1", "fd00::1")
	p.Ports = []ContainerPort{{Name: "http", Port: 8080, Protocol: ProtocolTCP}}
	p.Owners = []OwnerRef{{Kind: "ReplicaSet", Name: "web-1", Controller: true}}
	s.Upsert(p)
	s.Upsert(&Service{Namespace: "default", Name: "web", Type: ServiceTypeNodePort,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
		Ports: []ServicePort{
			{Name: "http", Protocol: ProtocolTCP, Port: 80, TargetPort: PortName("http"), NodePort: 30080},
			{Name: "metrics", Protocol: ProtocolTCP, Port: 9090, TargetPort: PortNumber(9091)},
		},
		Selector: map[string]string{"app": "web"}, SessionAffinity: SessionAffinityClientIP,
		SessionAffinityTimeoutSeconds: 60, ExternalTrafficPolicy: TrafficPolicyLocal, InternalTrafficPolicy: TrafficPolicyCluster})
	s.Upsert(&EndpointSlice{Namespace: "default", Name: "web-abc", ServiceName: "web", AddressType: AddressTypeIPv4,
		Ports: []EndpointPort{{Name: "http", Protocol: ProtocolTCP, Port: 8080}},
		Endpoints: []Endpoint{{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Ready: true, Serving: true,
			NodeName: "n1", TargetRef: &TargetRef{Kind: "Pod", Namespace: "default", Name: "web"}}}})
	s.Upsert(&NetworkPolicy{Namespace: "default", Name: "allow",
		PodSelector: LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		PolicyTypes: []PolicyType{PolicyTypeIngress},
		Ingress: []Rule{{
			Peers: []Peer{
				{PodSelector: &LabelSelector{}, NamespaceSelector: sel("env", SelectorOpIn, "prod")},
				{IPBlock: &IPBlock{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}},
			},
			Ports: []PolicyPort{{Protocol: ProtocolTCP, Port: PortNumber(80), EndPort: 90}, {Protocol: ProtocolUDP}},
		}}})
	return s
}

func TestStateJSONRoundTrip(t *testing.T) {
	s := fullState()
	data, err := json.Marshal(s)
	require.NoError(t, err)
	var back State
	require.NoError(t, json.Unmarshal(data, &back))
	assert.Equal(t, s.Revision, back.Revision)
	assert.Empty(t, Diff(s, &back), "round trip changed objects: %s", data)
	assert.Equal(t, s.Len(), back.Len())

	again, err := json.Marshal(&back)
	require.NoError(t, err)
	assert.JSONEq(t, string(data), string(again))
}

func TestStateJSONRejectsDuplicates(t *testing.T) {
	var s State
	err := json.Unmarshal([]byte(`{"nodes":[{"name":"a"},{"name":"a"}]}`), &s)
	assert.ErrorContains(t, err, "duplicate Node a")
}
