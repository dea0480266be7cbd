package main

// The edge scenario of `benchlb rss --edge`: what a small host without
// Kubernetes runs, with real pods (network namespaces and veths the agent
// attaches to), services whose endpoints are those pods, and a few
// network policies that select every pod.

import (
	"context"
	"fmt"
	"strings"

	"github.com/sluice-net/sluice/internal/testing/harness"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

// edgeNamespace holds the edge scenario's pods, services and policies.
const edgeNamespace = "edge"

// edgeApps is how many apps (label app=app-N) the pods are spread over;
// each service selects one app, so its endpoints are that app's pods.
const edgeApps = 10

// addEdgePods creates n pods edge/pod-NN on node, pod i labelled
// app=app-<i mod edgeApps>, each declaring container port http 8080.
func addEdgePods(ctx context.Context, node *harness.Node, n int) ([]*harness.Pod, error) {
	pods := make([]*harness.Pod, 0, n)
	for i := range n {
		p, err := node.AddPod(ctx, edgeNamespace, fmt.Sprintf("pod-%02d", i),
			map[string]string{"app": fmt.Sprintf("app-%d", i%edgeApps), "tier": "edge"},
			harness.Port{Name: "http", Port: 8080, Protocol: "TCP"})
		if err != nil {
			return nil, err
		}
		pods = append(pods, p)
	}
	return pods, nil
}

// edgeManifest is, for pods made by addEdgePods, services ClusterIP Services edge/svc-NNN (port 80 →
// 8080), service i selecting app-<i mod edgeApps>, each with the
// EndpointSlice the EndpointSlice controller would write (its app's
// pods, with their node and targetRef), and four NetworkPolicies: deny
// all ingress, allow half the apps from the other half, allow a metrics
// port from a monitoring namespace, and restrict one app's egress to DNS
// and a CIDR.
func edgeManifest(pods []*harness.Pod, services int) string {
	byApp := make([][]*harness.Pod, edgeApps)
	for i, p := range pods {
		byApp[i%edgeApps] = append(byApp[i%edgeApps], p)
	}
	var b strings.Builder
	for i := range services {
		app := i % edgeApps
		vip := benchkit.NthAddr(familyIPv4.serviceBase, i+1)
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-%03d\n  namespace: %s\n  labels: {app: app-%d}\nspec:\n  selector: {app: app-%d}\n  clusterIP: %s\n  clusterIPs: [%s]\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n    protocol: TCP\n",
			i, edgeNamespace, app, app, vip, vip)
		fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-%03d-x1y2z\n  namespace: %s\n  labels:\n    kubernetes.io/service-name: svc-%03d\n    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io\naddressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n",
			i, edgeNamespace, i)
		for _, p := range byApp[app] {
			fmt.Fprintf(&b, "- addresses: [%s]\n  conditions: {ready: true, serving: true, terminating: false}\n  nodeName: %s\n  targetRef: {kind: Pod, namespace: %s, name: %s, uid: %s}\n",
				p.IP, p.Node.Name, p.Namespace, p.Name, p.UID)
		}
	}
	b.WriteString(`---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: edge}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: front-to-back, namespace: edge}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In, values: [app-0, app-1, app-2, app-3, app-4]}]
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: app, operator: In, values: [app-5, app-6, app-7, app-8, app-9]}]
    ports: [{protocol: TCP, port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-monitoring, namespace: edge}
spec:
  podSelector: {matchLabels: {tier: edge}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
    ports: [{protocol: TCP, port: 9090}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: app-9-egress, namespace: edge}
spec:
  podSelector: {matchLabels: {app: app-9}}
  policyTypes: [Egress]
  egress:
  - ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
  - to:
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports: [{protocol: TCP, port: 443}]
`)
	return strings.TrimPrefix(b.String(), "---\n")
}

// edgeBackends is how many distinct backends the edge scenario's
// services have: the pods of the apps some service selects.
func edgeBackends(pods, services int) int {
	n := 0
	for i := range pods {
		if i%edgeApps < services {
			n++
		}
	}
	return n
}
