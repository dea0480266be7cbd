package files

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

func TestParseExample(t *testing.T) {
	dir := filepath.Join("testdata", "example")
	names, err := listManifests(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{"namespaces.yaml", "node.yaml", "pods.yaml", "policy.json", "services.yaml"}, names,
		"dotfiles and editor backups are skipped")

	state := &model.State{}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		es, err := parseFile(name, data, filepath.Ext(name) == ".json")
		require.NoError(t, err, name)
		for _, e := range es {
			state.Upsert(e.obj)
		}
	}

	ns := state.Namespaces["shop"]
	require.NotNil(t, ns)
	assert.Equal(t, map[string]string{"env": "prod", "kubernetes.io/metadata.name": "shop"}, ns.Labels)
	assert.Equal(t, "default", state.NamespaceLabels("default")["kubernetes.io/metadata.name"])

	node := state.Nodes["edge-1"]
	require.NotNil(t, node)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("fd00:244::/64")}, node.PodCIDRs)
	assert.Equal(t, []model.NodeAddress{{Type: model.NodeInternalIP, Address: "192.168.10.5"}, {Type: model.NodeHostname, Address: "edge-1"}}, node.Addresses)

	web := state.Pods[model.NamespacedName{Namespace: "shop", Name: "web-1"}]
	require.NotNil(t, web)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("10.244.0.11"), netip.MustParseAddr("fd00:244::11")}, web.IPs)
	assert.Equal(t, []model.ContainerPort{{Name: "http", Port: 8080, Protocol: model.ProtocolTCP}, {Name: "dns", Port: 53, Protocol: model.ProtocolUDP}}, web.Ports)
	assert.Equal(t, []model.OwnerRef{{Kind: "ReplicaSet", Name: "web-7d4b9", Controller: true}}, web.Owners)
	assert.Equal(t, model.PodRunning, web.Phase)

	// The succeeded pod and the host-network pod are not endpoints.
	local := state.LocalPods("edge-1")
	require.Len(t, local, 1)
	assert.Equal(t, "web-1", local[0].Name)

	svc := state.Services[model.NamespacedName{Namespace: "shop", Name: "web"}]
	require.NotNil(t, svc)
	assert.Equal(t, &model.Service{
		Namespace:   "shop",
		Name:        "web",
		Annotations: map[string]string{"sluice.io/l7": "http", "service.kubernetes.io/topology-mode": "Auto"},
		Type:        model.ServiceTypeNodePort,
		ClusterIPs:  []netip.Addr{netip.MustParseAddr("10.96.0.20")},
		Ports: []model.ServicePort{
			{Name: "http", Protocol: model.ProtocolTCP, Port: 80, TargetPort: model.PortName("http"), NodePort: 30080},
			{Name: "dns", Protocol: model.ProtocolUDP, Port: 53, TargetPort: model.PortNumber(53)},
		},
		Selector:              map[string]string{"app": "web"},
		SessionAffinity:       model.SessionAffinityNone,
		ExternalTrafficPolicy: model.TrafficPolicyCluster,
		InternalTrafficPolicy: model.TrafficPolicyCluster,
	}, svc)

	eps := state.EndpointSlices[model.NamespacedName{Namespace: "shop", Name: "web-abcde"}]
	require.NotNil(t, eps)
	assert.Equal(t, "web", eps.ServiceName)
	assert.Equal(t, model.AddressTypeIPv4, eps.AddressType)
	require.Len(t, eps.Endpoints, 2)
	assert.Equal(t, model.Endpoint{
		Addresses: []netip.Addr{netip.MustParseAddr("10.244.0.11")},
		Ready:     true, Serving: true, // missing conditions mean ready and serving
		NodeName: "edge-1", Zone: "zone-a",
		TargetRef: &model.TargetRef{Kind: "Pod", Namespace: "shop", Name: "web-1"},
	}, eps.Endpoints[0])
	assert.Equal(t, model.Endpoint{
		Addresses: []netip.Addr{netip.MustParseAddr("10.244.0.13")},
		Ready:     false, Serving: true, Terminating: true,
	}, eps.Endpoints[1])

	np := state.NetworkPolicies[model.NamespacedName{Namespace: "shop", Name: "web-ingress"}]
	require.NotNil(t, np)
	assert.Equal(t, []model.PolicyType{model.PolicyTypeIngress, model.PolicyTypeEgress}, np.PolicyTypes,
		"policyTypes defaults to Ingress plus Egress when egress rules exist")
	assert.Equal(t, []model.Rule{{}}, np.Egress)
	require.Len(t, np.Ingress, 1)
	assert.Equal(t, []model.PolicyPort{
		{Protocol: model.ProtocolTCP, Port: model.PortName("http")},
		{Protocol: model.ProtocolTCP, Port: model.PortNumber(9000), EndPort: 9010},
	}, np.Ingress[0].Ports)
	peers := np.Ingress[0].Peers
	require.Len(t, peers, 2)
	assert.True(t, peers[0].NamespaceSelector.Matches(ns.Labels))
	assert.Nil(t, peers[0].PodSelector)
	assert.Equal(t, &model.IPBlock{CIDR: netip.MustParsePrefix("192.168.10.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("192.168.10.128/25")}}, peers[1].IPBlock)
}

func TestPolicyTypesDefaultIngressOnly(t *testing.T) {
	es, err := parseFile("p.yaml", []byte(`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec:
  podSelector: {}
`), false)
	require.NoError(t, err)
	require.Len(t, es, 1)
	np := es[0].obj.(*model.NetworkPolicy)
	assert.Equal(t, "default", np.Namespace, "namespace defaults to default as with kubectl")
	assert.Equal(t, []model.PolicyType{model.PolicyTypeIngress}, np.PolicyTypes)
	assert.True(t, np.PodSelector.Matches(map[string]string{"any": "thing"}))
	assert.Empty(t, np.Ingress)
}

const goodPod = `apiVersion: v1
kind: Pod
metadata: {name: ok, namespace: default}
spec: {containers: [{name: c, image: i}]}
`

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		data   string
		want   string // exact message
		doc    int
		object string
		field  string
		is     error
	}{
		{
			name: "port out of range",
			file: "pods.yaml",
			data: goodPod + "---\n" + `apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: web
    image: nginx
    ports: [{containerPort: 70000}]
`,
			want: "pods.yaml: document 2 (Pod default/web): spec.containers[0].ports[0].containerPort: 70000 is out of range 1-65535",
			doc:  2, object: "Pod default/web", field: "spec.containers[0].ports[0].containerPort",
		},
		{
			name: "unknown field nested deep",
			file: "pods.yaml",
			data: `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  containers:
  - name: web
    image: nginx
    ports: [{containerPort: 80}]
  - name: side
    image: envoy
    ports:
    - containerPort: 80
      portz: 81
`,
			want: `pods.yaml: document 1 (Pod shop/web): unknown field "spec.containers[1].ports[0].portz"`,
			doc:  1, object: "Pod shop/web", field: "spec.containers[1].ports[0].portz",
		},
		{
			name: "duplicate field",
			file: "svc.yaml",
			data: `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: ClusterIP
  type: NodePort
`,
			want: `svc.yaml: document 1: invalid YAML: yaml: unmarshal errors:
  line 6: key "type" already set in map`,
			doc: 1,
		},
		{
			name: "duplicate field in json",
			file: "svc.json",
			data: `{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "name": "web2"}}`,
			want: `svc.json: document 1: invalid YAML: yaml: unmarshal errors:
  line 1: key "name" already set in map`,
			doc: 1,
		},
		{
			name: "malformed yaml, line relative to file",
			file: "bad.yaml",
			data: goodPod + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: [}\n",
			want: "bad.yaml: document 2: invalid YAML: yaml: line 7: did not find expected node content",
			doc:  2,
		},
		{
			name: "not an object",
			file: "list.yaml",
			data: "- a\n- b\n",
			want: "list.yaml: document 1: document is not an object",
			doc:  1,
		},
		{
			name: "missing apiVersion",
			file: "a.yaml",
			data: "kind: Pod\nmetadata: {name: x}\n",
			want: "a.yaml: document 1: apiVersion: required value",
			doc:  1, field: "apiVersion",
		},
		{
			name: "missing kind",
			file: "a.yaml",
			data: "apiVersion: v1\nmetadata: {name: x}\n",
			want: "a.yaml: document 1: kind: required value",
			doc:  1, field: "kind",
		},
		{
			name: "unknown kind",
			file: "a.yaml",
			data: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
			want: `a.yaml: document 1: kind: unsupported kind "Deployment" (supported: ` + supportedKinds + `)`,
			doc:  1, field: "kind", is: ErrUnsupportedKind,
		},
		{
			name: "wrong apiVersion",
			file: "a.yaml",
			data: "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: ns1}\n",
			want: `a.yaml: document 1 (NetworkPolicy ns1/x): apiVersion: unsupported kind: apiVersion "networking.k8s.io/v1beta1" for kind NetworkPolicy (want networking.k8s.io/v1)`,
			doc:  1, object: "NetworkPolicy ns1/x", field: "apiVersion", is: ErrUnsupportedKind,
		},
		{
			name: "missing name",
			file: "a.yaml",
			data: "apiVersion: v1\nkind: Namespace\nmetadata: {labels: {a: b}}\n",
			want: "a.yaml: document 1: metadata.name: required value",
			doc:  1, field: "metadata.name",
		},
		{
			name: "wrong type",
			file: "a.yaml",
			data: "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {hostNetwork: maybe}\n",
			want: "a.yaml: document 1 (Pod default/x): spec.hostNetwork: cannot unmarshal string into bool",
			doc:  1, object: "Pod default/x", field: "spec.hostNetwork",
		},
		{
			name: "invalid pod IP",
			file: "a.yaml",
			data: "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nstatus: {podIP: 10.0.0.300}\n",
			want: `a.yaml: document 1 (Pod default/x): status.podIP: invalid IP address "10.0.0.300"`,
			doc:  1, object: "Pod default/x", field: "status.podIP",
		},
		{
			name: "invalid cluster IP",
			file: "a.yaml",
			data: "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: nope, ports: [{port: 80}]}\n",
			want: `a.yaml: document 1 (Service default/s): spec.clusterIP: invalid IP address "nope"`,
			doc:  1, object: "Service default/s", field: "spec.clusterIP",
		},
		{
			name: "invalid endpoint address",
			file: "a.yaml",
			data: "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, namespace: ns1}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2, bad]}]\n",
			want: `a.yaml: document 1 (EndpointSlice ns1/s): endpoints[1].addresses[1]: invalid IP address "bad"`,
			doc:  1, object: "EndpointSlice ns1/s", field: "endpoints[1].addresses[1]",
		},
		{
			name: "invalid CIDR",
			file: "a.yaml",
			data: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/33}}]}]\n",
			want: `a.yaml: document 1 (NetworkPolicy default/p): spec.egress[0].to[0].ipBlock.cidr: invalid CIDR "10.0.0.0/33"`,
			doc:  1, object: "NetworkPolicy default/p", field: "spec.egress[0].to[0].ipBlock.cidr",
		},
		{
			name: "invalid node pod CIDR",
			file: "n.yaml",
			data: "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.0.0.0}\n",
			want: `n.yaml: document 1 (Node n1): spec.podCIDR: invalid CIDR "10.0.0.0"`,
			doc:  1, object: "Node n1", field: "spec.podCIDR",
		},
		{
			name: "invalid selector operator",
			file: "a.yaml",
			data: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {matchExpressions: [{key: app, operator: Like, values: [web]}]}\n",
			want: `a.yaml: document 1 (NetworkPolicy default/p): spec.podSelector.matchExpressions[0].operator: invalid operator "Like" (want In, NotIn, Exists or DoesNotExist)`,
			doc:  1, object: "NetworkPolicy default/p", field: "spec.podSelector.matchExpressions[0].operator",
		},
		{
			name: "service port out of range",
			file: "a.yaml",
			data: "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}, {port: 0}]}\n",
			want: `a.yaml: document 1 (Service default/s): spec.ports[1].port: 0 is out of range 1-65535`,
			doc:  1, object: "Service default/s", field: "spec.ports[1].port",
		},
		{
			name: "duplicate object in one file",
			file: "pods.yaml",
			data: goodPod + "---\n# again\n" + goodPod,
			want: `pods.yaml: document 2 (Pod default/ok): duplicate object: also defined in document 1`,
			doc:  2, object: "Pod default/ok", is: ErrDuplicate,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es, err := parseFile(tt.file, []byte(tt.data), filepath.Ext(tt.file) == ".json")
			require.Error(t, err)
			assert.Nil(t, es)
			assert.Equal(t, tt.want, err.Error())
			var me *ManifestError
			require.True(t, errors.As(err, &me))
			assert.Equal(t, tt.file, me.File)
			assert.Equal(t, tt.doc, me.Doc)
			assert.Equal(t, tt.object, me.Object)
			assert.Equal(t, tt.field, me.Field)
			if tt.is != nil {
				assert.ErrorIs(t, err, tt.is)
			}
		})
	}
}

func TestSplitDocuments(t *testing.T) {
	docs := splitDocuments([]byte("# header\n---\na: 1\n--- # second\n\n---\n  # only comment\n---\nb: 2\n"), false)
	require.Len(t, docs, 2)
	assert.Equal(t, document{index: 1, line: 3, data: []byte("a: 1\n")}, docs[0])
	assert.Equal(t, document{index: 2, line: 9, data: []byte("b: 2\n")}, docs[1])
}

// Decode is the directory's decoder for one manifest from elsewhere: the
// same objects, the same errors.
func TestDecode(t *testing.T) {
	objs, err := Decode("what-if.yaml", []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: shop}\nspec:\n  podSelector: {}\n"))
	require.NoError(t, err)
	require.Len(t, objs, 1)
	require.Equal(t, model.Key{Kind: model.KindNetworkPolicy, Namespace: "shop", Name: "deny-all"}, objs[0].Key())

	_, err = Decode("what-if.yaml", []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  podSelectr: {}\n"))
	require.EqualError(t, err, `what-if.yaml: document 1 (NetworkPolicy default/x): unknown field "spec.podSelectr"`)
}
