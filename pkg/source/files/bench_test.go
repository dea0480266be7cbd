package files

import (
	"fmt"
	"strings"
	"testing"
)

// genServices is n Services of one port, each with an EndpointSlice of eps
// ready endpoints, as `benchlb rss` writes them.
func genServices(n, eps int) []byte {
	var b strings.Builder
	k := 0
	for i := range n {
		if i > 0 {
			b.WriteString("---\n")
		}
		vip := fmt.Sprintf("10.96.%d.%d", (i+1)>>8, (i+1)&255)
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-%05d\n  namespace: bench\nspec:\n  clusterIP: %s\n  clusterIPs: [%s]\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n    protocol: TCP\n", i, vip, vip)
		fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-%05d-abc12\n  namespace: bench\n  labels:\n    kubernetes.io/service-name: svc-%05d\naddressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n", i, i)
		for range eps {
			k++
			fmt.Fprintf(&b, "- addresses: [10.%d.%d.%d]\n  conditions: {ready: true, serving: true, terminating: false}\n", 100+k>>16, (k>>8)&255, k&255)
		}
	}
	return []byte(b.String())
}

func BenchmarkParse10kServices(b *testing.B) {
	data := genServices(10000, 10)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		es, err := parseFile("services.yaml", data, false)
		if err != nil {
			b.Fatal(err)
		}
		if len(es) != 20000 {
			b.Fatalf("%d objects", len(es))
		}
	}
}
