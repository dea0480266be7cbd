package cli

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/spf13/cobra"

	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/identity"
)

// defaultMapLast is how many recent flows `sluice map` reads unless told
// --last or --since.
const defaultMapLast = 2000

type mapOptions struct {
	flowSource
	output string
	file   string
}

func (g *globals) mapCommand() *cobra.Command {
	o := &mapOptions{flowSource: flowSource{g: g}}
	cmd := &cobra.Command{
		Use:   "map",
		Short: "The service dependency graph of recent flows: who talks to whom, on which port, forwarded and dropped",
		Long: `The service dependency graph of recent flows: who talks to whom, on which port, forwarded and dropped.
Map reads the flows from the agent's Hubble observer. Ends are grouped by
workload (Deployment, StatefulSet …) when the pod has one, else by pod; peers
outside the cluster are "world" (or their CIDR or address), nodes are "host"
and "remote-node". A connection to a service goes through the service:
client -> service, on the service port the client used -> backend, on the
backend's port. Traffic is drawn from client to server: a reply (is_reply) on
its connection's edge; a packet dropped before conntrack placed it in a
connection is drawn as sent.

The filter flags of observe apply; -o dot is Graphviz input (dot -Tsvg), -o html
a page that draws the map without any script or download.`,
		Example: `  sluice map
  sluice map --since 1h --namespace shop
  sluice map -o dot | dot -Tsvg > map.svg
  sluice map -o html --file map.html`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	o.addFlags(cmd, "default "+strconv.Itoa(defaultMapLast)+"; with --since or --until, all in the range")
	fs := cmd.Flags()
	fs.StringVarP(&o.output, "output", "o", "table", "output format: table, dot (Graphviz), html (a self-contained page) or json")
	fs.StringVar(&o.file, "file", "", "write the map to `PATH` instead of stdout")
	return cmd
}

func (o *mapOptions) run(cmd *cobra.Command) error {
	render, ok := map[string]func(*serviceMap, io.Writer) error{
		"table": (*serviceMap).writeTable,
		"dot":   (*serviceMap).writeDOT,
		"html":  (*serviceMap).writeHTML,
		"json":  func(m *serviceMap, w io.Writer) error { return printJSON(w, m) },
	}[o.output]
	if !ok {
		return fmt.Errorf("-o %q is not an output format of map: use table, dot, html or json", o.output)
	}
	req, err := o.request(time.Now())
	if err != nil {
		return err
	}
	switch {
	case o.last > 0:
		req.Number = o.last
	case req.Since == nil && req.Until == nil:
		req.Number = defaultMapLast
	}
	b := newMapBuilder()
	if err := o.getFlows(cmd.Context(), req, b.add); err != nil {
		return err
	}
	m := b.graph()
	if o.file == "" {
		return render(m, cmd.OutOrStdout())
	}
	var buf bytes.Buffer
	if err := render(m, &buf); err != nil {
		return err
	}
	if err := os.WriteFile(o.file, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write the map: %w", err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote a map of %d flows to %s\n", m.Flows, o.file)
	return nil
}

// serviceMap is the graph: ends of flows and the traffic between them.
type serviceMap struct {
	// Flows counts the flows read; LostEvents the events the observer
	// reported lost among them (the map may miss connections).
	Flows      int        `json:"flows"`
	LostEvents uint64     `json:"lostEvents"`
	First      time.Time  `json:"first,omitzero"`
	Last       time.Time  `json:"last,omitzero"`
	Nodes      []*mapNode `json:"nodes"`
	Edges      []*mapEdge `json:"edges"`
}

// Node kinds that are not Kubernetes kinds.
const (
	kindService    = "Service"
	kindPod        = "Pod"
	kindWorld      = "world"
	kindHost       = "host"
	kindRemoteNode = "remote-node"
	kindCIDR       = "cidr"
	kindIP         = "ip"
	kindUnknown    = "unknown"
)

// mapNode is one end: a workload, pod or service, or a peer outside
// Kubernetes.
type mapNode struct {
	ID string `json:"id"`
	// Kind is the workload's kind (Deployment, StatefulSet …), Pod,
	// Service, or world, host, remote-node, cidr, ip, unknown.
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// label names the node for people: "shop/orders (Deployment)", "world".
func (n *mapNode) label() string {
	if n.Namespace == "" {
		return n.Name
	}
	return n.Namespace + "/" + n.Name + " (" + n.Kind + ")"
}

// inCluster reports whether the node is a Kubernetes workload or pod, or
// a node: what a service forwards to.
func (n *mapNode) inCluster() bool {
	switch n.Kind {
	case kindWorld, kindCIDR, kindIP, kindUnknown, kindService:
		return false
	}
	return true
}

// column groups nodes for drawing: the namespace; peers outside the
// cluster first, nodes last.
func (n *mapNode) column() (order int, name string) {
	switch {
	case n.Namespace != "":
		return 1, n.Namespace
	case n.Kind == kindHost || n.Kind == kindRemoteNode:
		return 2, "nodes"
	}
	return 0, "outside the cluster"
}

// mapEdge is the traffic from one node to another on one port.
type mapEdge struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Protocol string `json:"protocol,omitempty"`
	Port     uint32 `json:"port,omitempty"`
	// Forwarded counts the flows that went through (audited and
	// redirected ones too); Dropped those dropped, by reason.
	Forwarded   uint64            `json:"forwarded"`
	Dropped     uint64            `json:"dropped"`
	DropReasons map[string]uint64 `json:"dropReasons,omitempty"`

	from, to *mapNode
}

// portText is "TCP/5432", or the protocol alone when it has no ports.
func (e *mapEdge) portText() string {
	switch {
	case e.Protocol == "":
		return "-"
	case e.Port == 0:
		return e.Protocol
	}
	return e.Protocol + "/" + strconv.Itoa(int(e.Port))
}

// reasonsText is "POLICY_DENIED×3, CT_MAP_INSERTION_FAILED×1", most
// frequent first.
func (e *mapEdge) reasonsText() string {
	type rc struct {
		r string
		n uint64
	}
	var rs []rc
	for r, n := range e.DropReasons {
		rs = append(rs, rc{r, n})
	}
	slices.SortFunc(rs, func(a, b rc) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.r, b.r)) })
	var out []string
	for _, x := range rs {
		out = append(out, x.r+"×"+strconv.FormatUint(x.n, 10))
	}
	return strings.Join(out, ", ")
}

type edgeKey struct {
	from, to, proto string
	port            uint32
}

// viaKey is a connection as a translation saw it: the client and the
// backend it was sent to.
type viaKey struct {
	client, backend, proto string
	port                   uint32
}

// mapBuilder aggregates flows into a serviceMap.
type mapBuilder struct {
	nodes map[string]*mapNode
	edges map[edgeKey]*mapEdge
	// via remembers which service a client reached a backend through,
	// and on which port.
	// With socket load-balancing the translation is a flow of its own
	// (trace-sock) and the connection's packets name no service: they
	// are attributed to the service the translation named, so the map
	// does not also draw the client straight to the backend.
	via map[viaKey]via
	m   serviceMap
}

// via is the service a translation named, and the port its client used.
type via struct {
	service string
	port    uint32
}

func newMapBuilder() *mapBuilder {
	return &mapBuilder{nodes: map[string]*mapNode{}, edges: map[edgeKey]*mapEdge{}, via: map[viaKey]via{}}
}

func (b *mapBuilder) add(r *observerpb.GetFlowsResponse) error {
	if l := r.GetLostEvents(); l != nil {
		b.m.LostEvents += l.GetNumEventsLost()
		return nil
	}
	f := r.GetFlow()
	if f == nil {
		return nil
	}
	b.m.Flows++
	if t := f.GetTime(); t.IsValid() {
		if at := t.AsTime(); b.m.First.IsZero() || at.Before(b.m.First) {
			b.m.First = at
		}
		if at := t.AsTime(); at.After(b.m.Last) {
			b.m.Last = at
		}
	}

	// The map is drawn from client to server: a reply is turned around.
	client, server := endpointNode(f.GetSource(), f.GetIP().GetSource()), endpointNode(f.GetDestination(), f.GetIP().GetDestination())
	serverAddr := f.GetIP().GetDestination()
	proto := l4Protocol(f)
	_, port := flowPorts(f)
	if f.GetIsReply().GetValue() {
		client, server = server, client
		serverAddr = f.GetIP().GetSource()
		port, _ = flowPorts(f)
	}

	key := viaKey{client.ID, serverAddr, proto, port}
	var svc *mapNode
	// The client reaches the service on the port it addressed, which
	// the flow's original destination records; without it (another
	// emitter), on the backend's.
	svcPort := port
	if s := f.GetDestinationService(); s.GetName() != "" && !f.GetIsReply().GetValue() {
		svc = &mapNode{ID: s.GetNamespace() + "/" + kindService + "/" + s.GetName(), Kind: kindService, Namespace: s.GetNamespace(), Name: s.GetName()}
		if od, ok := flow.OriginalDestination(f); ok {
			svcPort = uint32(od.Port())
		}
		b.via[key] = via{svc.ID, svcPort}
	} else if v, ok := b.via[key]; ok {
		svc, svcPort = b.nodes[v.service], v.port
	}
	if svc == nil {
		b.count(client, server, proto, port, f)
		return nil
	}
	b.count(client, svc, proto, svcPort, f)
	// A drop before a backend was chosen (none, or none local) has the
	// service's address as destination, which is no backend.
	if server.inCluster() && server.ID != svc.ID {
		b.count(svc, server, proto, port, f)
	}
	return nil
}

func (b *mapBuilder) node(n *mapNode) *mapNode {
	if have, ok := b.nodes[n.ID]; ok {
		return have
	}
	b.nodes[n.ID] = n
	return n
}

func (b *mapBuilder) count(from, to *mapNode, proto string, port uint32, f *flowpb.Flow) {
	from, to = b.node(from), b.node(to)
	k := edgeKey{from.ID, to.ID, proto, port}
	e, ok := b.edges[k]
	if !ok {
		e = &mapEdge{From: from.ID, To: to.ID, Protocol: proto, Port: port, from: from, to: to}
		b.edges[k] = e
	}
	switch f.GetVerdict() {
	case flowpb.Verdict_DROPPED, flowpb.Verdict_ERROR:
		e.Dropped++
		if e.DropReasons == nil {
			e.DropReasons = map[string]uint64{}
		}
		e.DropReasons[dropCause(f)]++
	default:
		e.Forwarded++
	}
}

// dropCause names why a flow was dropped: its drop reason, or
// POLICY_DENIED for a policy verdict event (which carries none).
func dropCause(f *flowpb.Flow) string {
	if f.GetEventType().GetType() == flow.MessageTypePolicyVerdict && f.GetDropReason() == 0 {
		return flowpb.DropReason_POLICY_DENIED.String()
	}
	return dropReasonText(f)
}

// endpointNode is the node of one end: its workload, else its pod, else
// what its identity says (world, a CIDR, host, remote-node), else its
// address.
func endpointNode(ep *flowpb.Endpoint, addr string) *mapNode {
	ns := ep.GetNamespace()
	if ws := ep.GetWorkloads(); len(ws) > 0 && ws[0].GetName() != "" && ns != "" {
		w := ws[0]
		return &mapNode{ID: ns + "/" + w.GetKind() + "/" + w.GetName(), Kind: w.GetKind(), Namespace: ns, Name: w.GetName()}
	}
	if pod := ep.GetPodName(); pod != "" {
		return &mapNode{ID: ns + "/" + kindPod + "/" + pod, Kind: kindPod, Namespace: ns, Name: pod}
	}
	// CIDR identities carry cidr: labels and reserved:world: the longest
	// prefix is the most telling.
	var cidr netip.Prefix
	for _, l := range ep.GetLabels() {
		if v, ok := strings.CutPrefix(l, "cidr:"); ok {
			if p, err := netip.ParsePrefix(strings.ReplaceAll(v, "-", ":")); err == nil && p.Bits() > cidr.Bits() {
				cidr = p
			}
		}
	}
	if cidr.IsValid() {
		return &mapNode{ID: "cidr:" + cidr.String(), Kind: kindCIDR, Name: cidr.String()}
	}
	switch id := identity.ID(ep.GetIdentity()); {
	case id == identity.World || slices.Contains(ep.GetLabels(), "reserved:world"):
		return &mapNode{ID: kindWorld, Kind: kindWorld, Name: kindWorld}
	case id == identity.Host || slices.Contains(ep.GetLabels(), "reserved:host"):
		return &mapNode{ID: kindHost, Kind: kindHost, Name: kindHost}
	case id == identity.RemoteNode || slices.Contains(ep.GetLabels(), "reserved:remote-node"):
		return &mapNode{ID: kindRemoteNode, Kind: kindRemoteNode, Name: kindRemoteNode}
	}
	if addr != "" {
		return &mapNode{ID: "ip:" + addr, Kind: kindIP, Name: addr}
	}
	return &mapNode{ID: kindUnknown, Kind: kindUnknown, Name: kindUnknown}
}

// l4Protocol names a flow's transport: TCP, UDP, SCTP, ICMPv4, ICMPv6,
// or "" when it has none.
func l4Protocol(f *flowpb.Flow) string {
	l4 := f.GetL4()
	switch {
	case l4.GetTCP() != nil:
		return "TCP"
	case l4.GetUDP() != nil:
		return "UDP"
	case l4.GetSCTP() != nil:
		return "SCTP"
	case l4.GetICMPv4() != nil:
		return "ICMPv4"
	case l4.GetICMPv6() != nil:
		return "ICMPv6"
	}
	return ""
}

// graph returns the map, nodes by column and name, edges by their ends.
func (b *mapBuilder) graph() *serviceMap {
	m := b.m
	m.Nodes = make([]*mapNode, 0, len(b.nodes))
	for _, n := range b.nodes {
		m.Nodes = append(m.Nodes, n)
	}
	slices.SortFunc(m.Nodes, compareNodes)
	m.Edges = make([]*mapEdge, 0, len(b.edges))
	for _, e := range b.edges {
		m.Edges = append(m.Edges, e)
	}
	slices.SortFunc(m.Edges, func(x, y *mapEdge) int {
		return cmp.Or(compareNodes(x.from, y.from), compareNodes(x.to, y.to),
			cmp.Compare(x.Protocol, y.Protocol), cmp.Compare(x.Port, y.Port))
	})
	return &m
}

func compareNodes(a, b *mapNode) int {
	ao, an := a.column()
	bo, bn := b.column()
	return cmp.Or(cmp.Compare(ao, bo), cmp.Compare(an, bn), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Kind, b.Kind))
}

// summary is the map's one-line account of what it was drawn from.
func (m *serviceMap) summary() string {
	if m.Flows == 0 {
		return "no flows matched"
	}
	flows := "flows"
	if m.Flows == 1 {
		flows = "flow"
	}
	s := fmt.Sprintf("%d %s from %s to %s", m.Flows, flows, m.First.Format(timeLayout), m.Last.Format(timeLayout))
	if m.LostEvents > 0 {
		s += fmt.Sprintf("; %d events lost, some connections may be missing", m.LostEvents)
	}
	return s
}

func (m *serviceMap) writeTable(w io.Writer) error {
	err := table(w, "FROM\tTO\tPROTO/PORT\tFORWARDED\tDROPPED\tDROP REASONS", func(tw io.Writer) {
		for _, e := range m.Edges {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", e.from.label(), e.to.label(), e.portText(), e.Forwarded, e.Dropped, dash(e.reasonsText()))
		}
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "(%s)\n", m.summary())
	return err
}

// pair is the traffic between two nodes over all ports, as the drawings
// show it: one arrow per direction.
type pair struct {
	from, to           *mapNode
	edges              []*mapEdge
	forwarded, dropped uint64
}

// pairs merges the edges by their ends, in edge order.
func (m *serviceMap) pairs() []*pair {
	var out []*pair
	index := map[[2]string]*pair{}
	for _, e := range m.Edges {
		k := [2]string{e.From, e.To}
		p, ok := index[k]
		if !ok {
			p = &pair{from: e.from, to: e.to}
			index[k] = p
			out = append(out, p)
		}
		p.edges = append(p.edges, e)
		p.forwarded += e.Forwarded
		p.dropped += e.Dropped
	}
	return out
}

// lines are a pair's label: "TCP/5432: 12 forwarded, 1 dropped" per port.
func (p *pair) lines() []string {
	var out []string
	for _, e := range p.edges {
		var parts []string
		if e.Forwarded > 0 {
			parts = append(parts, fmt.Sprintf("%d forwarded", e.Forwarded))
		}
		if e.Dropped > 0 {
			parts = append(parts, fmt.Sprintf("%d dropped", e.Dropped))
		}
		out = append(out, e.portText()+": "+strings.Join(parts, ", "))
	}
	return out
}

// Edge colours: everything forwarded, some dropped, all dropped.
const (
	colorForwarded = "#4a5568"
	colorSomeDrops = "#dd6b20"
	colorDropped   = "#d62728"
)

// style is how a pair is drawn: colour, and whether dashed (all dropped).
func (p *pair) style() (color string, dashed bool) {
	switch {
	case p.dropped == 0:
		return colorForwarded, false
	case p.forwarded == 0:
		return colorDropped, true
	}
	return colorSomeDrops, false
}

// dotQuote quotes a DOT identifier or label. It does not escape: a
// label's \n must stay DOT's line break, so callers escape the parts they
// join with it (dotEscape).
func dotQuote(s string) string { return `"` + s + `"` }

func dotEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", " ").Replace(s)
}

// dotShape is a node kind's shape: services as ellipses, peers outside
// the cluster as octagons, nodes as 3D boxes, workloads and pods boxes.
func dotShape(n *mapNode) string {
	switch n.Kind {
	case kindService:
		return "ellipse"
	case kindWorld, kindCIDR, kindIP, kindUnknown:
		return "octagon"
	case kindHost, kindRemoteNode:
		return "box3d"
	}
	return "box"
}

// writeDOT writes the map as a Graphviz digraph: one cluster per
// namespace, an edge per pair of nodes labelled with ports and counts.
func (m *serviceMap) writeDOT(w io.Writer) error {
	var b strings.Builder
	b.WriteString("digraph sluice {\n")
	b.WriteString("  rankdir=LR;\n")
	fmt.Fprintf(&b, "  label=%s;\n  labelloc=t;\n", dotQuote(dotEscape("Sluice service map: "+m.summary())))
	b.WriteString(`  node [shape=box, style="rounded,filled", fillcolor="#edf2f7", fontname="Helvetica", fontsize=11];` + "\n")
	b.WriteString(`  edge [fontname="Helvetica", fontsize=9];` + "\n")
	node := func(indent string, n *mapNode) {
		label := dotEscape(n.Name)
		if n.Namespace != "" {
			label += `\n` + dotEscape(n.Kind)
		}
		fmt.Fprintf(&b, "%s%s [label=%s, shape=%s];\n", indent, dotQuote(dotEscape(n.ID)), dotQuote(label), dotShape(n))
	}
	for i := 0; i < len(m.Nodes); {
		_, col := m.Nodes[i].column()
		j := i
		for j < len(m.Nodes) {
			if _, c := m.Nodes[j].column(); c != col {
				break
			}
			j++
		}
		if m.Nodes[i].Namespace == "" {
			for _, n := range m.Nodes[i:j] {
				node("  ", n)
			}
		} else {
			fmt.Fprintf(&b, "  subgraph %s {\n    label=%s;\n    style=\"rounded,dashed\";\n", dotQuote(dotEscape("cluster_"+col)), dotQuote(dotEscape(col)))
			for _, n := range m.Nodes[i:j] {
				node("    ", n)
			}
			b.WriteString("  }\n")
		}
		i = j
	}
	for _, p := range m.pairs() {
		var label []string
		for _, l := range p.lines() {
			label = append(label, dotEscape(l))
		}
		color, dashed := p.style()
		attrs := fmt.Sprintf("label=%s, color=%s, fontcolor=%s", dotQuote(strings.Join(label, `\n`)), dotQuote(color), dotQuote(color))
		if dashed {
			attrs += ", style=dashed"
		}
		fmt.Fprintf(&b, "  %s -> %s [%s];\n", dotQuote(dotEscape(p.from.ID)), dotQuote(dotEscape(p.to.ID)), attrs)
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}
