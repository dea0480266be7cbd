package cli_test

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/flow"
)

// The map of the test flows (see testFlows): workloads, not pods; the
// service hop for connections through a service, including the one whose
// packets name no service but whose socket translation did, on the port
// the client addressed (80), the backends on theirs (8080); a dropped
// reply on its connection's edge, client to server.
func TestMapTable(t *testing.T) {
	dir, _ := fakeObserver(t)
	out, err := run(t, "--state-dir", dir, "map")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 10, out)
	for i, want := range []string{
		"FROM TO PROTO/PORT FORWARDED DROPPED DROP REASONS",
		"world default/web (Deployment) TCP/80 0 1 POLICY_DENIED×1",
		"default/client (Deployment) shop/orders (Service) TCP/80 2 0 -",
		"default/web (Deployment) kube-system/kube-dns (Service) UDP/53 1 0 -",
		"default/web (Deployment) shop/db (StatefulSet) TCP/5432 1 1 POLICY_REVOKED×1",
		"default/web (Deployment) shop/orders (Service) TCP/80 1 0 -",
		"kube-system/kube-dns (Service) kube-system/coredns (Deployment) UDP/53 1 0 -",
		"shop/orders (Service) shop/orders (Deployment) TCP/8080 3 0 -",
		"host default/web (Deployment) TCP/8080 1 0 -",
		"(8 flows from Mar 14 09:26:54.000 to Mar 14 09:27:01.000; 3 events lost, some connections may be missing)",
	} {
		requireLine(t, lines[i], want)
	}

	// The filters of observe apply.
	out, err = run(t, "--state-dir", dir, "map", "--namespace", "kube-system")
	require.NoError(t, err)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	requireLine(t, lines[1], "default/web (Deployment) kube-system/kube-dns (Service) UDP/53 1 0 -")
	requireLine(t, lines[2], "kube-system/kube-dns (Service) kube-system/coredns (Deployment) UDP/53 1 0 -")
	requireLine(t, lines[3], "(1 flow from Mar 14 09:26:57.000 to Mar 14 09:26:57.000)")

	out, err = run(t, "--state-dir", dir, "map", "--last", "1")
	require.NoError(t, err)
	require.Contains(t, out, "default/client (Deployment)", "the newest flow only")
	require.NotContains(t, out, "default/web")

	_, err = run(t, "--state-dir", dir, "map", "-o", "svg")
	require.ErrorContains(t, err, `-o "svg" is not an output format of map: use table, dot, html or json`)
}

// A reply is drawn on its connection's edge, client to server, on the
// server's port: that of a direct connection, and the hops of one made
// through a service. Without is_reply it would be a connection from the
// server to the client's ephemeral port.
func TestMapOrientsReplies(t *testing.T) {
	at := timestamppb.New(time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC))
	ip4 := func(src, dst string) *flowpb.IP {
		return &flowpb.IP{Source: src, Destination: dst, IpVersion: flowpb.IPVersion_IPv4}
	}
	revoked := func(f *flowpb.Flow) *flowpb.Flow {
		f.Time, f.Verdict, f.DropReason = at, flowpb.Verdict_DROPPED, 1002
		f.EventType = &flowpb.CiliumEventType{Type: flow.MessageTypeDrop, SubType: 1002}
		f.IsReply, f.Reply = wrapperspb.Bool(true), true
		return f
	}
	ack := &flowpb.TCPFlags{ACK: true}
	dir, _ := serveFlows(t, []*flowpb.Flow{
		// web-0 to a db-0, and its reply dropped on the way back.
		revoked(&flowpb.Flow{IP: ip4("10.244.2.9", "10.244.1.5"), L4: tcp(5432, 43512, ack), Source: dbPod, Destination: webPod}),
		// web-0 through the service shop/orders to orders-7d, and a
		// dropped reply that names no service.
		{Time: at, Verdict: flowpb.Verdict_FORWARDED, IP: ip4("10.244.1.5", "10.244.2.7"), L4: tcp(43514, 8080, &flowpb.TCPFlags{SYN: true}),
			Source: webPod, Destination: ordersPod, DestinationService: &flowpb.Service{Namespace: "shop", Name: "orders"},
			EventType: &flowpb.CiliumEventType{Type: flow.MessageTypeTrace}, IsReply: wrapperspb.Bool(false)},
		revoked(&flowpb.Flow{IP: ip4("10.244.2.7", "10.244.1.5"), L4: tcp(8080, 43514, ack), Source: ordersPod, Destination: webPod}),
	}, -1)
	out, err := run(t, "--state-dir", dir, "map")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 5, out)
	for i, want := range []string{
		"FROM TO PROTO/PORT FORWARDED DROPPED DROP REASONS",
		"default/web (Deployment) shop/db (StatefulSet) TCP/5432 0 1 POLICY_REVOKED×1",
		"default/web (Deployment) shop/orders (Service) TCP/8080 1 1 POLICY_REVOKED×1",
		"shop/orders (Service) shop/orders (Deployment) TCP/8080 1 1 POLICY_REVOKED×1",
	} {
		requireLine(t, lines[i], want)
	}
}

func TestMapJSON(t *testing.T) {
	dir, _ := fakeObserver(t)
	out, err := run(t, "--state-dir", dir, "map", "-o", "json", "--to-pod", "web")
	require.NoError(t, err)
	var m struct {
		Flows      int
		LostEvents uint64
		Nodes      []struct{ ID, Kind, Namespace, Name string }
		Edges      []struct {
			From, To, Protocol string
			Port               uint32
			Forwarded, Dropped uint64
			DropReasons        map[string]uint64
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &m), out)
	require.Equal(t, 3, m.Flows)
	require.EqualValues(t, 3, m.LostEvents)
	require.Len(t, m.Nodes, 4, "world, web, db, host")
	require.Equal(t, "world", m.Nodes[0].Kind)
	require.Equal(t, "Deployment", m.Nodes[1].Kind)
	require.Equal(t, "default", m.Nodes[1].Namespace)
	require.Equal(t, "web", m.Nodes[1].Name)
	require.Len(t, m.Edges, 3)
	require.Equal(t, "default/Deployment/web", m.Edges[1].From, "the dropped reply, on its connection's edge")
	require.Equal(t, "shop/StatefulSet/db", m.Edges[1].To)
	require.EqualValues(t, 5432, m.Edges[1].Port)
	require.Equal(t, map[string]uint64{"POLICY_REVOKED": 1}, m.Edges[1].DropReasons)
}

// The DOT output is a digraph Graphviz reads: every statement on its own
// line, every edge between declared nodes, namespaces as clusters, and
// dropped traffic red and dashed.
func TestMapDOT(t *testing.T) {
	dir, _ := fakeObserver(t)
	out, err := run(t, "--state-dir", dir, "map", "-o", "dot")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(out, "digraph sluice {\n"), out)
	require.True(t, strings.HasSuffix(out, "\n}\n"), out)

	var (
		nodeRE    = regexp.MustCompile(`^\s*("(?:[^"\\]|\\.)*") \[label="(?:[^"\\]|\\.)*", shape=\w+\];$`)
		edgeRE    = regexp.MustCompile(`^\s*("(?:[^"\\]|\\.)*") -> ("(?:[^"\\]|\\.)*") \[label="((?:[^"\\]|\\.)*)", color="(#[0-9a-f]{6})", fontcolor="#[0-9a-f]{6}"(, style=dashed)?\];$`)
		clusterRE = regexp.MustCompile(`^\s*subgraph "cluster_[^"]+" \{$`)
		attrRE    = regexp.MustCompile(`^\s*(rankdir|label|labelloc|style|node|edge)\b.*;$`)
	)
	declared := map[string]bool{}
	type edge struct{ label, color, dashed string }
	edges := map[string]edge{}
	depth, clusters := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		switch {
		case strings.TrimSpace(line) == "}":
			depth--
		case clusterRE.MatchString(line):
			depth++
			clusters++
		case nodeRE.MatchString(line):
			declared[nodeRE.FindStringSubmatch(line)[1]] = true
		case edgeRE.MatchString(line):
			m := edgeRE.FindStringSubmatch(line)
			require.True(t, declared[m[1]] && declared[m[2]], "edge between undeclared nodes: %s", line)
			edges[m[1]+" -> "+m[2]] = edge{m[3], m[4], m[5]}
		case attrRE.MatchString(line):
		default:
			t.Fatalf("not a DOT statement this writer makes: %q", line)
		}
	}
	require.Equal(t, -1, depth, "braces balance (the digraph's own closes last)")
	require.Equal(t, 3, clusters, "default, kube-system, shop")
	require.Len(t, declared, 9)
	require.Len(t, edges, 8)
	require.Equal(t, edge{`TCP/80: 1 dropped`, "#d62728", ", style=dashed"}, edges[`"world" -> "default/Deployment/web"`])
	require.Equal(t, edge{`TCP/5432: 1 forwarded, 1 dropped`, "#dd6b20", ""}, edges[`"default/Deployment/web" -> "shop/StatefulSet/db"`])
	require.Equal(t, edge{`TCP/8080: 3 forwarded`, "#4a5568", ""}, edges[`"shop/Service/orders" -> "shop/Deployment/orders"`])
}

func TestMapHTML(t *testing.T) {
	dir, _ := fakeObserver(t)
	file := filepath.Join(t.TempDir(), "map.html")
	out, err := run(t, "--state-dir", dir, "map", "-o", "html", "--file", file)
	require.NoError(t, err)
	require.Empty(t, out, "the page goes to --file")
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	page := string(b)

	require.True(t, strings.HasPrefix(page, "<!DOCTYPE html>"))
	for _, name := range []string{"world", "web", "db", "orders", "kube-dns", "coredns", "client", "host", "POLICY_REVOKED×1"} {
		require.Contains(t, page, ">"+name+"<", "a box or cell reads %s", name)
	}
	for _, col := range []string{"outside the cluster", "default", "kube-system", "shop", "nodes"} {
		require.Contains(t, page, `<text class="col"`)
		require.Contains(t, page, ">"+col+"</text>")
	}
	// Self-contained: nothing to fetch, nothing to run.
	require.NotContains(t, page, "<script")
	require.NotRegexp(t, `(src|href)=`, page)
	require.Equal(t, 1, strings.Count(page, "http"), "only the SVG namespace: %s", page)

	// The drawing is well-formed SVG, with an arrow per pair of nodes and
	// the all-dropped ones dashed.
	start, end := strings.Index(page, "<svg"), strings.Index(page, "</svg>")
	require.True(t, start >= 0 && end > start)
	dec := xml.NewDecoder(strings.NewReader(page[start : end+len("</svg>")]))
	paths, dashed, boxes := 0, 0, 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		el, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch el.Name.Local {
		case "rect":
			if slices.Contains(el.Attr, xml.Attr{Name: xml.Name{Local: "rx"}, Value: "8"}) {
				boxes++ // a node's box; labels have smaller corners
			}
		case "path":
			for _, a := range el.Attr {
				switch a.Name.Local {
				case "marker-end":
					paths++
				case "stroke-dasharray":
					dashed++
				}
			}
		}
	}
	require.Equal(t, 9, boxes)
	require.Equal(t, 8, paths)
	require.Equal(t, 1, dashed, "world -> web: all dropped")

	// Without --file, the page goes to stdout.
	out, err = run(t, "--state-dir", dir, "map", "-o", "html", "--to-namespace", "kube-system")
	require.NoError(t, err)
	require.Contains(t, out, "<svg")
	require.Contains(t, out, ">coredns<")
}
