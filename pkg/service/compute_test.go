package service

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

func TestComputeFrontendsAndBackends(t *testing.T) {
	tests := []struct {
		name    string
		objs    []model.Object
		opts    Options
		extras  map[string]ServiceExtras
		want    []string
		warning string // a substring of the only warning, if any
	}{
		{
			name: "cluster IP with numeric target port",
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.2", "n2", ready), ep("10.0.0.1", "n1", ready)}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A, 10.0.0.2:8080 A"},
		},
		{
			name: "named target port uses the port the slice resolved",
			objs: []model.Object{
				svc("web", "10.96.0.10", withPorts(model.ServicePort{Name: "http", Protocol: model.ProtocolTCP, Port: 80, TargetPort: model.PortName("web")})),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready)},
					model.EndpointPort{Name: "http", Protocol: model.ProtocolTCP, Port: 9376}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:9376 A"},
		},
		{
			name: "single unnamed port",
			objs: []model.Object{
				svc("web", "10.96.0.10", withPorts(model.ServicePort{Protocol: model.ProtocolTCP, Port: 80, TargetPort: model.PortNumber(8080)})),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready)},
					model.EndpointPort{Protocol: model.ProtocolTCP, Port: 8080}),
			},
			want: []string{"default/web:80 ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A"},
		},
		{
			name: "slice without the port name contributes nothing",
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready)},
					model.EndpointPort{Name: "metrics", Protocol: model.ProtocolTCP, Port: 9090}),
				slice("web-b", "web", []model.Endpoint{ep("10.0.0.2", "n1", ready)}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.2:8080 A"},
		},
		{
			name: "port name matches but protocol differs",
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready)},
					model.EndpointPort{Name: "http", Protocol: model.ProtocolUDP, Port: 8080}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP noep"},
		},
		{
			name: "slice port 0 is ignored",
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready)},
					model.EndpointPort{Name: "http", Protocol: model.ProtocolTCP}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP noep"},
		},
		{
			name: "same port number over TCP and UDP are separate frontends",
			objs: []model.Object{
				svc("dns", "10.96.0.10", withPorts(
					model.ServicePort{Name: "dns", Protocol: model.ProtocolUDP, Port: 53, TargetPort: model.PortNumber(5353)},
					model.ServicePort{Name: "dns-tcp", Protocol: model.ProtocolTCP, Port: 53, TargetPort: model.PortNumber(5353)},
				)),
				slice("dns-a", "dns", []model.Endpoint{ep("10.0.0.1", "n1", ready)},
					model.EndpointPort{Name: "dns", Protocol: model.ProtocolUDP, Port: 5353},
					model.EndpointPort{Name: "dns-tcp", Protocol: model.ProtocolTCP, Port: 5353}),
			},
			want: []string{
				"default/dns:dns ClusterIP 10.96.0.10:53/UDP -> 10.0.0.1:5353 A",
				"default/dns:dns-tcp ClusterIP 10.96.0.10:53/TCP -> 10.0.0.1:5353 A",
			},
		},
		{
			name: "slices merge and duplicates prefer the ready record",
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", notReady), ep("10.0.0.2", "n1", ready)}),
				slice("web-b", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready), ep("10.0.0.3", "n1", ready), ep("10.0.0.2", "n1", termGone)}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A, 10.0.0.2:8080 A, 10.0.0.3:8080 A"},
		},
		{
			name: "slices of other namespaces, other services or no service are ignored",
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				func() *model.EndpointSlice {
					s := slice("web-x", "web", []model.Endpoint{ep("10.0.0.9", "n1", ready)})
					s.Namespace = "other"
					return s
				}(),
				slice("api-a", "api", []model.Endpoint{ep("10.0.0.8", "n1", ready)}),
				slice("orphan", "", []model.Endpoint{ep("10.0.0.7", "n1", ready)}),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready)}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A"},
		},
		{
			name: "each family's cluster IPs balance to the slices of that family",
			objs: []model.Object{
				svc("dual", "10.96.0.10", func(s *model.Service) { s.ClusterIPs = ips("fd00::10", "10.96.0.10") }),
				svc("v6only", "fd00::11"),
				func() *model.EndpointSlice {
					s := slice("dual-6", "dual", []model.Endpoint{ep("fd00:1::1", "n1", ready)})
					s.AddressType = model.AddressTypeIPv6
					return s
				}(),
				slice("dual-4", "dual", []model.Endpoint{ep("10.0.0.1", "n1", ready)}),
				slice("v6only-a", "v6only", []model.Endpoint{ep("10.0.0.2", "n1", ready)}),
			},
			// v6only's one slice is IPv4: its IPv6 cluster IP has no
			// endpoint of its family, and it has no IPv4 frontend.
			want: []string{
				"default/dual:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A",
				"default/dual:http ClusterIP [fd00::10]:80/TCP -> [fd00:1::1]:8080 A",
				"default/v6only:http ClusterIP [fd00::11]:80/TCP noep",
			},
		},
		{
			name: "only an endpoint's first address is used",
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", []model.Endpoint{{Addresses: ips("10.0.0.1", "10.0.0.2"), Ready: true, Serving: true}, {Ready: true, Serving: true}}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A"},
		},
		{
			name: "ready endpoints take new connections; serving terminating ones drain",
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", []model.Endpoint{
					ep("10.0.0.1", "n1", termServing), ep("10.0.0.2", "n1", ready),
					ep("10.0.0.3", "n1", termGone), ep("10.0.0.4", "n1", notReady),
				}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.2:8080 A, 10.0.0.1:8080 T, 10.0.0.3:8080 T, 10.0.0.4:8080 N"},
		},
		{
			name: "without ready endpoints serving terminating ones take new connections",
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", []model.Endpoint{
					ep("10.0.0.1", "n1", termServing), ep("10.0.0.3", "n1", termGone),
					ep("10.0.0.2", "n1", termServing), ep("10.0.0.4", "n1", notReady),
				}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A, 10.0.0.2:8080 A, 10.0.0.3:8080 T, 10.0.0.4:8080 N"},
		},
		{
			name: "no ready or serving endpoint means no endpoints, but draining ones stay listed",
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", termGone), ep("10.0.0.2", "n1", notReady)}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP noep -> 10.0.0.1:8080 T, 10.0.0.2:8080 N"},
		},
		{
			name: "service without endpoint slices",
			objs: []model.Object{svc("web", "10.96.0.10")},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP noep"},
		},
		{
			name: "service without selector uses its manually managed slices",
			objs: []model.Object{
				svc("ext", "10.96.0.10", func(s *model.Service) { s.Selector = nil }),
				slice("ext-1", "ext", []model.Endpoint{{Addresses: ips("192.0.2.1"), Ready: true, Serving: true}}),
			},
			want: []string{"default/ext:http ClusterIP 10.96.0.10:80/TCP -> 192.0.2.1:8080 A"},
		},
		{
			name: "internal traffic policy Local keeps this node's endpoints",
			opts: Options{NodeName: "n1"},
			objs: []model.Object{
				svc("web", "10.96.0.10", withITPLocal),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready), ep("10.0.0.2", "n2", ready), ep("10.0.0.3", "n1", termServing)}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP local -> 10.0.0.1:8080 A, 10.0.0.3:8080 T"},
		},
		{
			name: "internal traffic policy Local falls back to local serving terminating endpoints, not remote ready ones",
			opts: Options{NodeName: "n1"},
			objs: []model.Object{
				svc("web", "10.96.0.10", withITPLocal),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", termServing), ep("10.0.0.2", "n2", ready)}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP local -> 10.0.0.1:8080 A"},
		},
		{
			name: "internal traffic policy Local without local endpoints drops",
			opts: Options{NodeName: "n1"},
			objs: []model.Object{
				svc("web", "10.96.0.10", withITPLocal),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.2", "n2", ready)}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP local noep nolocal"},
		},
		{
			name: "internal traffic policy Local with no endpoints anywhere rejects",
			opts: Options{NodeName: "n1"},
			objs: []model.Object{
				svc("web", "10.96.0.10", withITPLocal),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.2", "n2", notReady)}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP local noep"},
		},
		{
			name: "NodePort: wildcard plus each node address of the family",
			opts: Options{NodeName: "n1", NodeAddrs: ips("192.168.1.10", "fd00::10", "192.168.2.10")},
			objs: []model.Object{
				svc("web", "10.96.0.10", withType(model.ServiceTypeNodePort, 30080)),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n2", ready)}),
			},
			want: []string{
				"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A",
				"default/web:http NodePort 0.0.0.0:30080/TCP -> 10.0.0.1:8080 A",
				"default/web:http NodePort 192.168.1.10:30080/TCP -> 10.0.0.1:8080 A",
				"default/web:http NodePort 192.168.2.10:30080/TCP -> 10.0.0.1:8080 A",
			},
		},
		{
			name: "dual-stack NodePort: each family's node addresses, to that family's endpoints",
			opts: Options{NodeName: "n1", NodeAddrs: ips("192.168.1.10", "fd00::10")},
			objs: []model.Object{
				svc("web", "10.96.0.10", withType(model.ServiceTypeNodePort, 30080), func(s *model.Service) { s.ClusterIPs = ips("10.96.0.10", "fd00:96::10") }),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n2", ready)}),
				func() *model.EndpointSlice {
					s := slice("web-b", "web", []model.Endpoint{ep("fd00:1::1", "n2", ready)})
					s.AddressType = model.AddressTypeIPv6
					return s
				}(),
			},
			want: []string{
				"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A",
				"default/web:http ClusterIP [fd00:96::10]:80/TCP -> [fd00:1::1]:8080 A",
				"default/web:http NodePort 0.0.0.0:30080/TCP -> 10.0.0.1:8080 A",
				"default/web:http NodePort 192.168.1.10:30080/TCP -> 10.0.0.1:8080 A",
				"default/web:http NodePort [::]:30080/TCP -> [fd00:1::1]:8080 A",
				"default/web:http NodePort [fd00::10]:30080/TCP -> [fd00:1::1]:8080 A",
			},
		},
		{
			name: "external traffic policy Local restricts node ports, not the cluster IP",
			opts: Options{NodeName: "n1", NodeAddrs: ips("192.168.1.10")},
			objs: []model.Object{
				svc("web", "10.96.0.10", withType(model.ServiceTypeNodePort, 30080), withETPLocal),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready), ep("10.0.0.2", "n2", ready)}),
			},
			want: []string{
				"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A, 10.0.0.2:8080 A",
				"default/web:http NodePort 0.0.0.0:30080/TCP local -> 10.0.0.1:8080 A",
				"default/web:http NodePort 192.168.1.10:30080/TCP local -> 10.0.0.1:8080 A",
			},
		},
		{
			name: "external traffic policy Local without local endpoints",
			opts: Options{NodeName: "n3", NodeAddrs: ips("192.168.1.10")},
			objs: []model.Object{
				svc("web", "10.96.0.10", withType(model.ServiceTypeNodePort, 30080), withETPLocal),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready)}),
			},
			want: []string{
				"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A",
				"default/web:http NodePort 0.0.0.0:30080/TCP local noep nolocal",
				"default/web:http NodePort 192.168.1.10:30080/TCP local noep nolocal",
			},
		},
		{
			name: "ClusterIP service ignores a node port",
			opts: Options{NodeAddrs: ips("192.168.1.10")},
			objs: []model.Object{
				svc("web", "10.96.0.10", withPorts(model.ServicePort{Name: "http", Protocol: model.ProtocolTCP, Port: 80, NodePort: 30080})),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP noep"},
		},
		{
			name: "LoadBalancer: ingress IPs, external IPs and node ports",
			opts: Options{NodeName: "n1", NodeAddrs: ips("192.168.1.10")},
			extras: map[string]ServiceExtras{"web": {
				ExternalIPs:     ips("198.51.100.7", "2001:db8::7"),
				LoadBalancerIPs: ips("203.0.113.5"),
			}},
			objs: []model.Object{
				svc("web", "10.96.0.10", withType(model.ServiceTypeLoadBalancer, 30080), withETPLocal),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready), ep("10.0.0.2", "n2", ready)}),
			},
			want: []string{
				"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A, 10.0.0.2:8080 A",
				"default/web:http NodePort 0.0.0.0:30080/TCP local -> 10.0.0.1:8080 A",
				"default/web:http NodePort 192.168.1.10:30080/TCP local -> 10.0.0.1:8080 A",
				"default/web:http LoadBalancer 203.0.113.5:80/TCP local -> 10.0.0.1:8080 A",
				"default/web:http ExternalIP 198.51.100.7:80/TCP local -> 10.0.0.1:8080 A",
			},
		},
		{
			name:   "external IPs on a ClusterIP service; ingress IPs only for LoadBalancer",
			extras: map[string]ServiceExtras{"web": {ExternalIPs: ips("198.51.100.7"), LoadBalancerIPs: ips("203.0.113.5")}},
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready)}),
			},
			want: []string{
				"default/web:http ClusterIP 10.96.0.10:80/TCP -> 10.0.0.1:8080 A",
				"default/web:http ExternalIP 198.51.100.7:80/TCP -> 10.0.0.1:8080 A",
			},
		},
		{
			name:   "headless and ExternalName services get no frontends",
			extras: map[string]ServiceExtras{"db": {ExternalIPs: ips("198.51.100.7")}},
			objs: []model.Object{
				svc("db", "10.96.0.10", func(s *model.Service) { s.Headless, s.ClusterIPs = true, nil }),
				svc("ext", "10.96.0.11", func(s *model.Service) { s.Type, s.ClusterIPs = model.ServiceTypeExternalName, nil }),
				svc("noip", "10.96.0.12", func(s *model.Service) { s.ClusterIPs = nil }),
				slice("db-a", "db", []model.Endpoint{ep("10.0.0.1", "n1", ready)}),
			},
			want: nil,
		},
		{
			name: "session affinity ClientIP",
			objs: []model.Object{
				svc("web", "10.96.0.10", func(s *model.Service) {
					s.SessionAffinity, s.SessionAffinityTimeoutSeconds = model.SessionAffinityClientIP, 10800
				}),
			},
			want: []string{"default/web:http ClusterIP 10.96.0.10:80/TCP affinity=10800 noep"},
		},
		{
			name: "algorithm annotation",
			objs: []model.Object{
				svc("a", "10.96.0.10", withAnnotation(AlgorithmAnnotation, "maglev")),
				svc("b", "10.96.0.11", withAnnotation(AlgorithmAnnotation, "random")),
				svc("c", "10.96.0.12"),
			},
			opts: Options{DefaultAlgorithm: AlgorithmMaglev},
			want: []string{
				"default/a:http ClusterIP 10.96.0.10:80/TCP maglev noep",
				"default/b:http ClusterIP 10.96.0.11:80/TCP noep",
				"default/c:http ClusterIP 10.96.0.12:80/TCP maglev noep",
			},
		},
		{
			name:    "invalid algorithm annotation warns and uses the default",
			objs:    []model.Object{svc("a", "10.96.0.10", withAnnotation(AlgorithmAnnotation, "roundrobin"))},
			opts:    Options{DefaultAlgorithm: AlgorithmMaglev},
			want:    []string{"default/a:http ClusterIP 10.96.0.10:80/TCP maglev noep"},
			warning: `service default/a: annotation sluice.io/lb-algorithm: unknown load-balancing algorithm "roundrobin"`,
		},
		{
			name:   "an external IP cannot take over another service's cluster IP",
			extras: map[string]ServiceExtras{"evil": {ExternalIPs: ips("10.96.0.10")}},
			objs: []model.Object{
				svc("web", "10.96.0.10"),
				svc("evil", "10.96.0.66"),
			},
			want: []string{
				"default/evil:http ClusterIP 10.96.0.66:80/TCP noep",
				"default/web:http ClusterIP 10.96.0.10:80/TCP noep",
			},
			warning: "frontend 10.96.0.10:80/TCP: ExternalIP default/evil port http conflicts with ClusterIP default/web port http, which wins",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if tt.extras != nil {
				opts.Extras = func(nn model.NamespacedName) ServiceExtras { return tt.extras[nn.Name] }
			}
			d := Compute(state(tt.objs...), opts)
			assert.Equal(t, tt.want, summary(d))
			if tt.warning == "" {
				assert.Empty(t, d.Warnings)
			} else if assert.Len(t, d.Warnings, 1) {
				assert.Contains(t, d.Warnings[0], tt.warning)
			}
			assertConsistent(t, d)
		})
	}
}

// assertConsistent checks invariants every result must hold.
func assertConsistent(t *testing.T, d *Desired) {
	t.Helper()
	fids := map[uint32]FrontendKey{}
	for _, f := range d.Frontends {
		require.NotZero(t, f.ID, f.String())
		_, dup := fids[f.ID]
		require.False(t, dup, "duplicate frontend ID %d", f.ID)
		fids[f.ID] = f.Key()
		assert.Equal(t, len(f.ActiveBackends()) == 0, f.NoEndpoints, f.String())
		assert.False(t, f.NoLocalEndpoints && !f.NoEndpoints, f.String())
	}
	table := map[uint32]Backend{}
	for _, b := range d.Backends {
		require.NotZero(t, b.ID)
		table[b.ID] = b
	}
	for _, f := range d.Frontends {
		for _, b := range f.Backends {
			tb, ok := table[b.ID]
			require.True(t, ok, "backend %d of %s not in the backend table", b.ID, f.String())
			assert.Equal(t, b.Key(), tb.Key())
		}
	}
}

func TestComputeFrontendFields(t *testing.T) {
	d := Compute(state(
		svc("web", "10.96.0.10", withType(model.ServiceTypeLoadBalancer, 30080), withETPLocal, func(s *model.Service) {
			s.SessionAffinity, s.SessionAffinityTimeoutSeconds = model.SessionAffinityClientIP, 60
		}),
		slice("web-a", "web", []model.Endpoint{{
			Addresses: ips("10.0.0.1"), Ready: true, Serving: true, NodeName: "n1", Zone: "z1",
			TargetRef: &model.TargetRef{Kind: "Pod", Namespace: ns, Name: "web-0"},
		}, {
			Addresses: ips("10.0.0.2"), Ready: true, Serving: true, NodeName: "n1",
			TargetRef: &model.TargetRef{Kind: "Node", Name: "n1"},
		}}),
	), Options{
		NodeName: "n1",
		Extras: func(model.NamespacedName) ServiceExtras {
			return ServiceExtras{LoadBalancerIPs: ips("203.0.113.5"), LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}
		},
	})
	require.Len(t, d.Frontends, 3)
	cluster, wildcard, lb := d.Frontends[0], d.Frontends[1], d.Frontends[2]

	assert.Equal(t, KindClusterIP, cluster.Kind)
	assert.Equal(t, model.NamespacedName{Namespace: ns, Name: "web"}, cluster.Service)
	assert.Equal(t, "http", cluster.PortName)
	assert.True(t, cluster.SessionAffinity)
	assert.Equal(t, uint32(60), cluster.AffinityTimeout)
	assert.Zero(t, cluster.ClusterFrontendID)
	assert.Nil(t, cluster.SourceRanges)

	assert.True(t, wildcard.IsWildcard())
	assert.Equal(t, cluster.ID, wildcard.ClusterFrontendID)
	assert.False(t, cluster.IsWildcard())

	assert.Equal(t, KindLoadBalancer, lb.Kind)
	assert.Equal(t, cluster.ID, lb.ClusterFrontendID)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, lb.SourceRanges)
	assert.Equal(t, []Backend{
		{ID: lb.Backends[0].ID, Address: ip("10.0.0.1"), Port: 8080, Protocol: model.ProtocolTCP, NodeName: "n1",
			Pod: model.NamespacedName{Namespace: ns, Name: "web-0"}, Zone: "z1", State: BackendActive},
		{ID: lb.Backends[1].ID, Address: ip("10.0.0.2"), Port: 8080, Protocol: model.ProtocolTCP, NodeName: "n1", State: BackendActive},
	}, lb.Backends)
}

func TestComputeHealthChecks(t *testing.T) {
	extras := func(model.NamespacedName) ServiceExtras { return ServiceExtras{HealthCheckNodePort: 32000} }
	twoPorts := withPorts(
		model.ServicePort{Name: "http", Protocol: model.ProtocolTCP, Port: 80},
		model.ServicePort{Name: "https", Protocol: model.ProtocolTCP, Port: 443},
	)
	ports := []model.EndpointPort{{Name: "http", Protocol: model.ProtocolTCP, Port: 8080}, {Name: "https", Protocol: model.ProtocolTCP, Port: 8443}}
	eps := []model.Endpoint{ep("10.0.0.1", "n1", ready), ep("10.0.0.2", "n1", termServing), ep("10.0.0.3", "n2", ready), ep("10.0.0.4", "n1", ready)}
	tests := []struct {
		name string
		svc  *model.Service
		want []HealthCheck
	}{
		{
			name: "LoadBalancer with externalTrafficPolicy Local counts local ready addresses once",
			svc:  svc("web", "10.96.0.10", twoPorts, withType(model.ServiceTypeLoadBalancer, 30080), withETPLocal),
			want: []HealthCheck{{Service: model.NamespacedName{Namespace: ns, Name: "web"}, NodePort: 32000, LocalEndpoints: 2}},
		},
		{
			name: "externalTrafficPolicy Cluster has none",
			svc:  svc("web", "10.96.0.10", twoPorts, withType(model.ServiceTypeLoadBalancer, 30080)),
		},
		{
			name: "NodePort has none",
			svc:  svc("web", "10.96.0.10", twoPorts, withType(model.ServiceTypeNodePort, 30080), withETPLocal),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Compute(state(tt.svc, slice("web-a", "web", eps, ports...)), Options{NodeName: "n1", Extras: extras})
			assert.Equal(t, tt.want, d.HealthChecks)
		})
	}
}

func TestComputeDeterministic(t *testing.T) {
	st := bigState(40, 7)
	opts := Options{NodeName: "n1", NodeAddrs: ips("192.168.1.10"), DefaultAlgorithm: AlgorithmMaglev, MaglevTableSize: 251}
	a := Compute(st, opts)
	b := Compute(st.Clone(), opts)
	assert.Equal(t, a, b)
	assertConsistent(t, a)
	assert.Len(t, a.Frontends, 40*3)
}

// bigState has n NodePort services, each with k endpoints spread over 3 nodes.
func bigState(n, k int) *model.State {
	st := &model.State{}
	for i := range n {
		name := "svc" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		st.Upsert(svc(name, netip.AddrFrom4([4]byte{10, 96, byte(i / 250), byte(i%250 + 1)}).String(), withType(model.ServiceTypeNodePort, uint16(30000+i))))
		var eps []model.Endpoint
		for j := range k {
			a := netip.AddrFrom4([4]byte{10, 1, byte(i), byte(j + 1)})
			eps = append(eps, ep(a.String(), "n"+string(rune('1'+j%3)), ready))
		}
		st.Upsert(slice(name+"-a", name, eps))
	}
	return st
}

func TestComputeMaglevTables(t *testing.T) {
	opts := Options{NodeName: "n1", NodeAddrs: ips("192.168.1.10"), DefaultAlgorithm: AlgorithmMaglev, MaglevTableSize: 251, MaglevSeed: "cluster-1"}
	d := Compute(state(
		svc("web", "10.96.0.10", withType(model.ServiceTypeNodePort, 30080)),
		slice("web-a", "web", []model.Endpoint{ep("10.0.0.1", "n1", ready), ep("10.0.0.2", "n2", ready), ep("10.0.0.3", "n2", termServing)}),
		svc("empty", "10.96.0.11", withAnnotation(AlgorithmAnnotation, "maglev")),
		svc("rnd", "10.96.0.12", withAnnotation(AlgorithmAnnotation, "random")),
		slice("rnd-a", "rnd", []model.Endpoint{ep("10.0.0.9", "n1", ready)}),
	), opts)
	require.Len(t, d.Frontends, 5)
	empty, rnd, web := d.Frontends[0], d.Frontends[1], d.Frontends[2:]
	assert.Nil(t, empty.Maglev, "no backends, no table")
	assert.Nil(t, rnd.Maglev, "random has no table")

	active := web[0].ActiveBackends()
	require.Len(t, active, 2)
	names := []string{active[0].Key().String(), active[1].Key().String()}
	assert.Equal(t, []string{"10.0.0.1:8080/TCP", "10.0.0.2:8080/TCP"}, names)
	idx := MaglevTable(names, 251, "cluster-1")
	want := make([]uint32, len(idx))
	for i, j := range idx {
		want[i] = active[j].ID
	}
	for _, f := range web {
		assert.Equal(t, want, f.Maglev, f.String())
	}
	assert.Same(t, &web[0].Maglev[0], &web[2].Maglev[0], "frontends with the same backends share a table")
	assert.Equal(t, uint32(251), d.MaglevTableSize)

	assert.Equal(t, []ServiceMemory{{Service: model.NamespacedName{Namespace: ns, Name: "web"}, Tables: 3, Bytes: 3 * 251 * 4}}, d.MemoryPerService())
}

func TestComputeInvalidOptions(t *testing.T) {
	d := Compute(state(svc("web", "10.96.0.10")), Options{DefaultAlgorithm: "fast", MaglevTableSize: 1000})
	assert.Equal(t, []string{
		`options: default algorithm: unknown load-balancing algorithm "fast" (want "random" or "maglev"); using "random"`,
		"options: maglev table size 1000 is not allowed (want one of [251 509 1021 2039 4093 8191 16381 32749 65521 131071]); using 16381",
	}, d.Warnings)
	assert.Equal(t, AlgorithmRandom, d.Frontends[0].Algorithm)
	assert.Equal(t, uint32(DefaultMaglevTableSize), d.MaglevTableSize)
}

func TestComputeNilState(t *testing.T) {
	d := Compute(nil, Options{})
	assert.Empty(t, d.Frontends)
	assert.Empty(t, d.Warnings)
}

func TestOptionsValidate(t *testing.T) {
	o := Options{}
	o.Defaults()
	require.NoError(t, o.Validate())
	assert.Equal(t, AlgorithmRandom, o.DefaultAlgorithm)
	assert.Equal(t, uint32(16381), o.MaglevTableSize)

	bad := Options{DefaultAlgorithm: "rr", MaglevTableSize: 16384, NodeAddrs: []netip.Addr{{}, netip.IPv4Unspecified()}}
	err := bad.Validate()
	require.Error(t, err)
	for _, s := range []string{`"rr"`, "16384 is not allowed", `node address "invalid IP"`, `node address "0.0.0.0"`} {
		assert.Contains(t, err.Error(), s)
	}
}

func TestComputeMaglevTablesAcrossComputations(t *testing.T) {
	a, err := NewAllocator(nil, nil)
	require.NoError(t, err)
	opts := Options{DefaultAlgorithm: AlgorithmMaglev, MaglevTableSize: 251, MaglevSeed: "s", IDs: a}
	objs := func(webEps ...model.Endpoint) *model.State {
		return state(
			svc("api", "10.96.0.11"), slice("api-a", "api", []model.Endpoint{ep("10.0.1.1", "n1", ready), ep("10.0.1.2", "n1", ready)}),
			svc("web", "10.96.0.10"), slice("web-a", "web", webEps),
		)
	}
	d1 := Compute(objs(ep("10.0.0.1", "n1", ready), ep("10.0.0.2", "n1", ready)), opts)
	d2 := Compute(objs(ep("10.0.0.1", "n1", ready), ep("10.0.0.3", "n1", ready)), opts)
	require.Len(t, d2.Frontends, 2)
	assert.Same(t, &d1.Frontends[0].Maglev[0], &d2.Frontends[0].Maglev[0], "unchanged api table is reused")
	assert.NotEqual(t, d1.Frontends[1].Maglev, d2.Frontends[1].Maglev)

	// Reused or not, the table is what a fresh computation gives.
	fresh, err := NewAllocator(a.FrontendIDs(), a.BackendIDs())
	require.NoError(t, err)
	opts.IDs = fresh
	d3 := Compute(objs(ep("10.0.0.1", "n1", ready), ep("10.0.0.3", "n1", ready)), opts)
	assert.Equal(t, d2, d3)

	// A different seed is a different table.
	opts.IDs, opts.MaglevSeed = a, "t"
	d4 := Compute(objs(ep("10.0.0.1", "n1", ready), ep("10.0.0.3", "n1", ready)), opts)
	assert.NotEqual(t, d2.Frontends[0].Maglev, d4.Frontends[0].Maglev)
}

func BenchmarkCompute(b *testing.B) {
	st := bigState(500, 20)
	for _, tc := range []struct {
		name  string
		reuse bool
	}{{"fresh", false}, {"reuse", true}} {
		b.Run(tc.name, func(b *testing.B) {
			a, _ := NewAllocator(nil, nil)
			opts := Options{NodeName: "n1", NodeAddrs: ips("192.168.1.10"), DefaultAlgorithm: AlgorithmMaglev, IDs: a}
			for b.Loop() {
				if !tc.reuse {
					opts.IDs, _ = NewAllocator(nil, nil)
				}
				Compute(st, opts)
			}
		})
	}
}
