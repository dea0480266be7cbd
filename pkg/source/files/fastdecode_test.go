package files

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// compareDecoders decodes doc with the fast decoder and the strict one and
// fails t if the fast one gave an object that the strict one rejected or
// decoded differently (the Kubernetes object and its model object). It
// reports whether the fast decoder took the document.
func compareDecoders(t *testing.T, fast *fastDecoder, doc string) bool {
	t.Helper()
	d := document{index: 1, line: 1, data: []byte(doc)}
	want, object, err := strictObject("f.yaml", d)
	got, ok := fast.object(d.data)
	if !ok {
		return false
	}
	if err != nil || want == nil {
		t.Errorf("fast decoder took a document the strict one rejects (%v):\n%s", err, doc)
		return true
	}
	if !reflect.DeepEqual(want, got) {
		t.Errorf("decoders differ on\n%s\nstrict: %#v\nfast:   %#v", doc, want, got)
		return true
	}
	wantM, werr := convert("f.yaml", d, object, want)
	gotM, gok := fast.decode(d.data)
	switch {
	case werr != nil && gok:
		t.Errorf("fast decoder converted a document the strict path rejects (%v):\n%s", werr, doc)
	case werr == nil && !gok:
		t.Errorf("fast decoder refused to convert a document the strict path converts:\n%s", doc)
	case werr == nil && !reflect.DeepEqual(wantM, gotM):
		t.Errorf("model objects differ on\n%s\nstrict: %#v\nfast:   %#v", doc, wantM, gotM)
	}
	return true
}

// TestFastDecoderMatchesStrict holds the fast decoder to the strict one:
// on every document it takes, the same Kubernetes object and model object.
// The cases it must take are marked: a fast decoder that refused
// everything would pass the rest.
func TestFastDecoderMatchesStrict(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		fast bool // the fast decoder must take it
	}{
		{"service", `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {app: web, "quoted key": 'single ''quoted'''}
  annotations:
    sluice.io/lb-algorithm: maglev
    description: a plain scalar with spaces, commas and a trailing comment # here
spec:
  type: NodePort
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
    nodePort: 30080
    protocol: TCP
  -   name: dns
      port: 53
      targetPort: 53
      protocol: UDP
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 300}}
`, true},
		{"endpoint slice", `# a comment first

apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
endpoints:
- addresses: ["10.244.0.11"]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: edge-1
  targetRef: {kind: Pod, namespace: shop, name: web-1, uid: 0b8e1b2c-5a7f-4f53-9b1e-1c2d3e4f5a6b}
  zone: z1
-
  addresses:
  - 10.244.0.12
  conditions:
    ready: false
`, true},
		{"pod", `apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  uid: 0b8e1b2c-5a7f-4f53-9b1e-1c2d3e4f5a6b
  labels: {app: web}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9, uid: abc, controller: true}
spec:
  nodeName: edge-1
  hostNetwork: false
  containers:
  - name: web
    image: nginx:1.27
    args: ["--port", "8080"]
    ports:
    - {name: http, containerPort: 8080}
    - containerPort: 53
      protocol: UDP
      name: dns
    resources:
      limits: {cpu: 500m, memory: 128Mi}
    env:
    - name: A
      value: "1"
status:
  phase: Running
  podIP: 10.244.0.11
  podIPs:
  - ip: 10.244.0.11
  - ip: fd00:244::11
`, true},
		{"network policy", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow, namespace: shop}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In, values: [web, api]}]
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {}
      namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports: [{protocol: TCP, port: http}, {port: 8080, endPort: 8090}]
  egress: []
`, true},
		{"namespace and node", `apiVersion: v1
kind: Namespace
metadata:
  name: shop
  namespace: ignored
  labels:
    env: prod
`, true},
		{"node", `apiVersion: v1
kind: Node
metadata: {name: edge-1}
spec: {podCIDR: 10.244.0.0/24, podCIDRs: [10.244.0.0/24, "fd00:244::/64"]}
status:
  addresses:
  - {type: InternalIP, address: 192.168.10.5}
`, true},
		{"nulls", `apiVersion: v1
kind: Service
metadata:
  name: s
  creationTimestamp: null
  labels: ~
  annotations:
spec:
  selector: null
  ports:
  - port: 80
    targetPort: null
`, true},
		{"empty collections", `apiVersion: v1
kind: Service
metadata: {name: s, labels: {}}
spec: {ports: [{port: 80}], clusterIPs: [], selector: {}}
`, true},

		// Valid YAML the fast decoder leaves to the strict one (or decodes
		// identically if it takes it).
		{"yaml 1.1 booleans", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {hostNetwork: yes}\n", true},
		{"bool word as a string", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {a: on}}\n", false},
		{"octal", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0120}]}\n", false},
		{"float", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80.0}]}\n", false},
		{"exponent", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 8e1}]}\n", false},
		{"timestamp", "apiVersion: v1\nkind: Pod\nmetadata: {name: x, creationTimestamp: 2024-01-02T03:04:05Z}\n", false},
		{"date label", "apiVersion: v1\nkind: Pod\nmetadata: {name: x, labels: {d: 2024-01-02}}\n", false},
		{"number label", "apiVersion: v1\nkind: Pod\nmetadata: {name: x, labels: {d: 12}}\n", false},
		{"quoted number label", "apiVersion: v1\nkind: Pod\nmetadata: {name: x, labels: {d: \"12\"}}\n", true},
		{"anchors", "apiVersion: v1\nkind: Pod\nmetadata: {name: &n x, labels: {a: *n}}\n", false},
		{"block scalar", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  annotations:\n    a: |\n      line 1\n      line 2\n", false},
		{"multi-line plain", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  annotations:\n    a: line 1\n      line 2\n", false},
		{"multi-line flow", "apiVersion: v1\nkind: Pod\nmetadata: {name: x,\n  namespace: y}\n", false},
		{"escapes", "apiVersion: v1\nkind: Pod\nmetadata: {name: x, annotations: {a: \"tab\\there\"}}\n", false},
		{"unicode", "apiVersion: v1\nkind: Pod\nmetadata: {name: x, annotations: {a: café}}\n", false},
		{"tags", "apiVersion: v1\nkind: Pod\nmetadata: {name: !!str x}\n", false},
		{"merge key", "apiVersion: v1\nkind: Pod\nmetadata:\n  <<: {name: x}\n", false},
		{"indented root", "  apiVersion: v1\n  kind: Namespace\n  metadata: {name: x}\n", false},
		{"ipv6 starting with a digit", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nstatus: {podIP: 2001:db8::1}\n", false},
		{"json", `{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}`, false},
		{"int-or-string quoted", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, targetPort: \"8080\"}]}\n", true},
		{"windows line ends", "apiVersion: v1\r\nkind: Namespace\r\nmetadata: {name: x}\r\n", false},

		// Invalid documents: the fast decoder must not take them.
		{"unknown field", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {nodeNme: n}\n", false},
		{"unknown nested field", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - port: 80\n    portz: 81\n", false},
		{"duplicate key", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: ClusterIP\n  type: NodePort\n", false},
		{"duplicate key quoted", "apiVersion: v1\nkind: Service\nmetadata: {name: s, 'name': t}\n", false},
		{"duplicate key in flow", "apiVersion: v1\nkind: Service\nmetadata: {name: s, name: t}\n", false},
		{"wrong type", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {hostNetwork: maybe}\n", false},
		{"string for int", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: \"80\"}]}\n", false},
		{"int for string", "apiVersion: v1\nkind: Pod\nmetadata: {name: 12}\n", false},
		{"out of range", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 99999999999}]}\n", false},
		{"invalid port", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 70000}]}\n", false},
		{"invalid ip", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nstatus: {podIP: 10.0.0.300}\n", false},
		{"missing name", "apiVersion: v1\nkind: Namespace\nmetadata: {labels: {a: b}}\n", false},
		{"wrong apiVersion", "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: x}\n", false},
		{"unknown kind", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n", false},
		{"not a mapping", "- a\n- b\n", false},
		{"mapping value in value", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  nodeName: a: b\n", false},
		{"trailing comma", "apiVersion: v1\nkind: Pod\nmetadata: {name: x,}\n", false},
		{"bad indentation", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n   namespace: y\n", false},
		{"sequence among keys", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n- y\n", false},
		{"null label value", "apiVersion: v1\nkind: Pod\nmetadata: {name: x, labels: {a: null}}\n", false},
		{"tab", "apiVersion: v1\nkind: Pod\nmetadata:\n\tname: x\n", false},
		{"document end", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n...\n", false},
	}
	fast := newFastDecoder()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			took := compareDecoders(t, fast, tt.doc)
			if tt.fast {
				assert.True(t, took, "the fast decoder should take this document")
			}
		})
	}
}

// TestFastDecoderMatchesStrictOnFiles runs both decoders over the example
// manifests and generated ones; the generated ones are all in the subset.
func TestFastDecoderMatchesStrictOnFiles(t *testing.T) {
	fast := newFastDecoder()
	files, err := filepath.Glob(filepath.Join("testdata", "example", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	took, total := 0, 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, d := range splitDocuments(data, false) {
			total++
			if compareDecoders(t, fast, string(d.data)) {
				took++
			}
		}
	}
	t.Logf("example manifests: the fast decoder took %d of %d documents", took, total)
	assert.Greater(t, took, total/2)

	for _, d := range splitDocuments(genServices(50, 3), false) {
		require.True(t, compareDecoders(t, fast, string(d.data)), "generated document left to the strict decoder:\n%s", d.data)
	}
}

// TestFastDecoderMatchesStrictOnMutations decodes many one-edit variants
// of valid documents with both decoders: typos, stray indicators, broken
// indentation and quoting. The fast decoder must refuse every variant the
// strict one rejects and decode the others identically.
func TestFastDecoderMatchesStrictOnMutations(t *testing.T) {
	seeds := []string{
		`apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {app: web, tier: "front"}
spec:
  clusterIP: 10.96.0.20
  ports:
  - name: http
    port: 80
    targetPort: 8080
    protocol: TCP
  selector:
    app: web
`,
		`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
endpoints:
- addresses: [10.244.0.11]
  conditions: {ready: true, serving: true, terminating: false}
  targetRef: {kind: Pod, name: web-1}
`,
		`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/8}
    ports: [{protocol: TCP, port: 80}]
`,
		`apiVersion: v1
kind: Pod
metadata:
  name: web-1
  uid: 0b8e1b2c-5a7f
  ownerReferences:
  - {kind: ReplicaSet, name: web-7d4b9, controller: true}
spec:
  nodeName: edge-1
  containers:
  - name: web
    image: nginx:1.27
    ports:
    - {name: http, containerPort: 8080}
    resources:
      limits: {cpu: 500m, memory: 128Mi}
status:
  phase: Running
  podIPs:
  - ip: 10.244.0.11
`,
	}
	// Characters that mean something in YAML, and some that do not.
	alphabet := []byte(" \n-:#{}[],'\"&*!|>%@`?.0123456789abyntT~\t/\\")
	rng := rand.New(rand.NewPCG(1, 2))
	fast := newFastDecoder()
	took := 0
	perSeed := 3000
	if testing.Short() {
		perSeed = 300
	}
	for _, seed := range seeds {
		for range perSeed {
			b := []byte(seed)
			for range 1 + rng.IntN(2) {
				i := rng.IntN(len(b))
				switch rng.IntN(3) {
				case 0: // replace
					b[i] = alphabet[rng.IntN(len(alphabet))]
				case 1: // insert
					b = append(b[:i], append([]byte{alphabet[rng.IntN(len(alphabet))]}, b[i:]...)...)
				case 2: // delete
					b = append(b[:i], b[i+1:]...)
				}
			}
			if compareDecoders(t, fast, string(b)) {
				took++
			}
			if t.Failed() {
				return
			}
		}
	}
	t.Logf("the fast decoder took %d of %d variants", took, perSeed*len(seeds))
}

// TestParseFileFastAndStrictAgree parses a file whose documents go both
// ways, with parallel decoding, and compares with the strict decoder
// document by document, errors included.
func TestParseFileFastAndStrictAgree(t *testing.T) {
	var b strings.Builder
	for i := range 600 {
		if i > 0 {
			b.WriteString("---\n")
		}
		if i%3 == 0 {
			// Outside the subset: a block scalar.
			fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-%d\n  annotations:\n    a: |\n      text\n", i)
		} else {
			fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns-%d, labels: {n: \"%d\"}}\n", i, i)
		}
	}
	data := []byte(b.String())
	es, err := parseFile("ns.yaml", data, false)
	require.NoError(t, err)
	docs := splitDocuments(data, false)
	require.Len(t, es, len(docs))
	for i, d := range docs {
		want, err := decodeDocument("ns.yaml", d)
		require.NoError(t, err)
		assert.Equal(t, want, es[i].obj)
		assert.Equal(t, d.index, es[i].doc)
	}

	// An error in a late document, and another in a later one: the first
	// is reported, as by the strict decoder alone.
	bad := strings.Replace(b.String(), "name: ns-400,", "name: ns-400, nme: x,", 1)
	bad = strings.Replace(bad, "name: ns-500,", "name: [ns-500],", 1)
	_, err = parseFile("ns.yaml", []byte(bad), false)
	require.Error(t, err)
	assert.Equal(t, `ns.yaml: document 401 (Namespace ns-400): unknown field "metadata.nme"`, err.Error())
}

// TestPlainClass checks the YAML 1.1 resolution the fast decoder relies on
// against go.yaml.in/yaml/v2's, through the strict decoder's JSON.
func TestPlainClass(t *testing.T) {
	cases := map[string]plainKind{
		"web": plainString, "fd00::1": plainString, "TCP": plainString, "_x": plainString, "/p": plainString,
		"~x": plainString, "nil": plainString, "none": plainString, "yess": plainString,
		"y": plainTrue, "Yes": plainTrue, "ON": plainTrue, "true": plainTrue,
		"n": plainFalse, "off": plainFalse, "FALSE": plainFalse,
		"~": plainNull, "null": plainNull, "Null": plainNull,
		"0": plainInt, "80": plainInt, "123456789012345678": plainInt,
		"1234567890123456789": plainOther, "0120": plainOther, "1.5": plainOther, "1e3": plainOther,
		"1_000": plainOther, "0x1f": plainOther, "2024-01-02": plainOther,
		"10.96.0.1": plainString, "10.0.0.0/8": plainString, "1.2.3": plainString, "10.0.0.0/": plainString, "10.0/8": plainString,
		"1:30": plainString, "500m": plainString, "128Mi": plainString, "0b8e1b2c-5a7f-4f53-9b1e-1c2d3e4f5a6b": plainString,
		"12-34": plainString, "1e5-3": plainString, "1_0-0": plainString, "8080/TCP": plainString,
		"1e-5": plainOther, "0b101": plainOther, "0o17": plainOther, "0xFF": plainOther, "1.": plainOther,
		"1234-56": plainOther, "1..2": plainOther, ".5": plainOther, "-1": plainOther, "+1": plainOther,
	}
	for s, want := range cases {
		assert.Equal(t, want, plainClass(s), s)
		// The strict decoder's view of the same scalar.
		j, err := yamlToJSONForTest("v: " + s)
		require.NoError(t, err, s)
		switch want {
		case plainString:
			assert.Equal(t, `{"v":"`+s+`"}`, j, s)
		case plainInt:
			assert.Equal(t, `{"v":`+s+`}`, j, s)
		case plainTrue:
			assert.Equal(t, `{"v":true}`, j, s)
		case plainFalse:
			assert.Equal(t, `{"v":false}`, j, s)
		case plainNull:
			assert.Equal(t, `{"v":null}`, j, s)
		}
	}
}

func yamlToJSONForTest(y string) (string, error) {
	j, err := yaml.YAMLToJSONStrict([]byte(y))
	return string(j), err
}

// FuzzFastDecoder is TestFastDecoderMatchesStrictOnMutations guided by
// coverage: go test -fuzz FuzzFastDecoder ./pkg/source/files/
func FuzzFastDecoder(f *testing.F) {
	for _, s := range splitDocuments(genServices(2, 2), false) {
		f.Add(string(s.data))
	}
	data, err := os.ReadFile(filepath.Join("testdata", "example", "pods.yaml"))
	require.NoError(f, err)
	for _, s := range splitDocuments(data, false) {
		f.Add(string(s.data))
	}
	f.Fuzz(func(t *testing.T, doc string) {
		compareDecoders(t, newFastDecoder(), doc)
	})
}
