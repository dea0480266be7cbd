package policysuggest

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-net/sluice/pkg/policy"
)

// namespaceNameLabel is the label the API server sets on every namespace
// to its name: what a namespaceSelector picks one namespace by.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// Summary counts what a Builder wrote.
type Summary struct {
	Flows, Connections, Policies, Rules int
}

// WriteYAML writes the policies, as a multi-document YAML stream ready for
// kubectl apply (or a manifest directory), with comments for people.
func (b *Builder) WriteYAML(w io.Writer) (Summary, error) {
	b.build()
	sum := Summary{Flows: b.flows, Connections: len(b.conns)}
	var subjects []*workload
	names := map[string]int{}
	for _, wl := range b.workloads {
		if !b.inScope(wl.namespace) || (len(wl.ingress) == 0 && len(wl.egress) == 0) {
			continue
		}
		if len(wl.labels) == 0 {
			b.unselectable[wl.String()] = "its pods share no label: a selector would pick the whole namespace"
			continue
		}
		subjects = append(subjects, wl)
		names[wl.namespace+"/"+wl.name]++
	}
	slices.SortFunc(subjects, func(x, y *workload) int { return cmp.Compare(x.key, y.key) })

	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	header := b.header()
	if b.opts.Audit {
		nss := map[string]bool{}
		for _, s := range subjects {
			nss[s.namespace] = true
		}
		for i, ns := range slices.Sorted(maps.Keys(nss)) {
			doc := auditNamespace(ns)
			if i == 0 {
				doc.HeadComment = header + "\n\n" + doc.HeadComment
				header = ""
			}
			if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{doc}}); err != nil {
				return sum, fmt.Errorf("write the audit annotation of %s: %w", ns, err)
			}
		}
	}
	for _, s := range subjects {
		doc, rules := policyDoc(s, names[s.namespace+"/"+s.name] > 1, b.opts.MaxAddresses)
		if header != "" {
			doc.HeadComment = header + "\n\n" + doc.HeadComment
			header = ""
		}
		if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{doc}}); err != nil {
			return sum, fmt.Errorf("write the policy of %s: %w", s, err)
		}
		sum.Policies++
		sum.Rules += rules
	}
	if header != "" {
		// Nothing to suggest: say why, as a YAML comment.
		if _, err := io.WriteString(w, commentBlock(header+"\n\nNo workload of the chosen namespaces was seen in a connection: no policy to suggest.")); err != nil {
			return sum, err
		}
	}
	return sum, enc.Close()
}

func (b *Builder) header() string {
	var h []string
	h = append(h, "Least-privilege NetworkPolicies suggested by `sluice policy suggest` from "+
		count(b.flows, "flow")+": "+count(len(b.conns), "connection")+b.window()+".")
	if b.notConnections > 0 {
		h = append(h, count(b.notConnections, "flow")+" showed no connection that went through (drops, socket-LB translations, ICMP, L7 requests) and justify nothing.")
	}
	h = append(h, "Review before applying: a connection not seen here is denied once they apply.")
	if b.hostIngress > 0 {
		h = append(h, "Connections from the pods' own node (kubelet probes, "+strconv.Itoa(b.hostIngress)+" seen) need no rule: Sluice always allows them.")
	}
	for _, k := range slices.Sorted(maps.Keys(b.unselectable)) {
		h = append(h, "Not covered: "+k+": "+b.unselectable[k]+".")
	}
	return strings.Join(h, "\n")
}

func (b *Builder) window() string {
	if b.first.IsZero() {
		return ""
	}
	return ", seen from " + stamp(b.first) + " to " + stamp(b.last)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// auditNamespace is the Namespace document that puts ns in audit mode.
func auditNamespace(ns string) *yaml.Node {
	doc := mapping(
		scalar("apiVersion"), scalar("v1"),
		scalar("kind"), scalar("Namespace"),
		scalar("metadata"), mapping(
			scalar("name"), scalar(ns),
			scalar("annotations"), mapping(scalar(policy.AuditAnnotation), quoted("true")),
		),
	)
	doc.HeadComment = "Audit mode for namespace " + ns + " first (this document comes before the policies): what they would\n" +
		"deny is forwarded and reported, `sluice observe --verdict AUDIT` shows it. Audit mode is per namespace:\n" +
		"it also stops enforcing the policies already there. Remove the annotation to enforce.\n" +
		"kubectl apply merges it into the namespace; a manifest directory (the files source) must not define\n" +
		"the namespace twice: add the annotation to its Namespace there instead."
	return doc
}

// policyDoc is the NetworkPolicy of workload s, and its rule count.
func policyDoc(s *workload, clash bool, maxAddrs int) (*yaml.Node, int) {
	spec := mapping(scalar("podSelector"), matchLabels(s.labels), scalar("policyTypes"), flowSeq(scalar("Ingress"), scalar("Egress")))
	n := 0
	for _, dir := range []struct {
		key, peers, verb string
		rules            map[string]*rule
	}{{"ingress", "from", "from", s.ingress}, {"egress", "to", "to", s.egress}} {
		items := rulesOf(dir.rules, dir.peers, dir.verb, maxAddrs)
		if len(items) == 0 {
			types := spec.Content[3]
			note := "no " + dir.key + " connection was seen: " + dir.key + " is denied"
			if types.LineComment != "" {
				note = types.LineComment + "; " + note
			}
			types.LineComment = note
			continue
		}
		spec.Content = append(spec.Content, scalar(dir.key), sequence(items...))
		n += len(items)
	}
	doc := mapping(
		scalar("apiVersion"), scalar("networking.k8s.io/v1"),
		scalar("kind"), scalar("NetworkPolicy"),
		scalar("metadata"), mapping(scalar("name"), scalar(policyName(s, clash)), scalar("namespace"), scalar(s.namespace)),
		scalar("spec"), spec,
	)
	doc.HeadComment = s.String() + ": " + count(len(s.pods), "pod") + " seen, selected by " + labelsText(s.labels)
	return doc, n
}

// rulesOf writes one direction's rules: one per peer workload, then one
// per set of ports that addresses outside the cluster share.
func rulesOf(rules map[string]*rule, peersKey, verb string, maxAddrs int) []*yaml.Node {
	var out []*yaml.Node
	for _, k := range slices.Sorted(maps.Keys(rules)) {
		r := rules[k]
		if r.peer == nil {
			out = append(out, addrRules(r, peersKey, verb, maxAddrs)...)
			continue
		}
		keepDNS(r.ports)
		peer := mapping(scalar("namespaceSelector"), matchLabels(map[string]string{namespaceNameLabel: r.peer.namespace}))
		head := verb + " " + r.peer.String()
		if len(r.peer.labels) > 0 {
			peer.Content = append(peer.Content, scalar("podSelector"), matchLabels(r.peer.labels))
		} else {
			head += "\nWARNING: its pods share no label, so this allows every pod of namespace " + r.peer.namespace
		}
		item := mapping(scalar(peersKey), sequence(peer), scalar("ports"), portsSeq(r.ports))
		item.HeadComment = head + "\n" + evidenceText(r.ports)
		out = append(out, item)
	}
	return out
}

// addrRules splits the outside addresses of r by the ports they were seen
// on: one rule per set of ports.
func addrRules(r *rule, peersKey, verb string, maxAddrs int) []*yaml.Node {
	groups := map[string][]netip.Addr{}
	for a, ps := range r.addrs {
		keepDNS(ps)
		var sig []string
		for _, p := range slices.SortedFunc(maps.Keys(ps), comparePorts) {
			sig = append(sig, p.String())
		}
		k := strings.Join(sig, ",")
		groups[k] = append(groups[k], a)
	}
	var out []*yaml.Node
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		addrs := groups[k]
		slices.SortFunc(addrs, netip.Addr.Compare)
		ports := map[port]*evidence{}
		nodes := 0
		for _, a := range addrs {
			for p, e := range r.addrs[a] {
				if ports[p] == nil {
					ports[p] = &evidence{added: e.added}
				}
				ports[p].merge(e)
			}
			if r.node[a] {
				nodes++
			}
		}
		prefixes, note := aggregate(addrs, maxAddrs)
		var peers []*yaml.Node
		for _, p := range prefixes {
			peers = append(peers, mapping(scalar("ipBlock"), mapping(scalar("cidr"), scalar(p.String()))))
		}
		var shown []string
		for _, a := range addrs[:min(len(addrs), maxAddrs)] {
			shown = append(shown, a.String())
		}
		if len(addrs) > maxAddrs {
			shown = append(shown, "and "+strconv.Itoa(len(addrs)-maxAddrs)+" more")
		}
		what := "outside the cluster"
		switch {
		case nodes == len(addrs):
			what = "nodes of the cluster"
		case nodes > 0:
			what = "outside the cluster, " + strconv.Itoa(nodes) + " of them nodes"
		}
		head := verb + " " + strings.Join(shown, ", ") + " (" + what + ")"
		if note != "" {
			head += "\n" + note
		}
		item := mapping(scalar(peersKey), sequence(peers...), scalar("ports"), portsSeq(ports))
		item.HeadComment = head + "\n" + evidenceText(ports)
		out = append(out, item)
	}
	return out
}

// aggregate returns the ipBlocks for addrs: each address alone while
// there are at most max, else the fewest /24 (IPv6 /64), /16 (/48), /8
// (/32) prefixes, the first of those that number at most max, with a note
// saying so.
func aggregate(addrs []netip.Addr, max int) ([]netip.Prefix, string) {
	levels := [][2]int{{32, 128}, {24, 64}, {16, 48}, {8, 32}, {0, 0}}
	for i, l := range levels {
		set := map[netip.Prefix]bool{}
		for _, a := range addrs {
			bits := l[0]
			if a.Is6() {
				bits = l[1]
			}
			set[netip.PrefixFrom(a, bits).Masked()] = true
		}
		if len(set) > max && i < len(levels)-1 {
			continue
		}
		out := slices.SortedFunc(maps.Keys(set), func(x, y netip.Prefix) int {
			return cmp.Or(x.Addr().Compare(y.Addr()), cmp.Compare(x.Bits(), y.Bits()))
		})
		if i == 0 {
			return out, ""
		}
		return out, fmt.Sprintf("%d addresses aggregated into %d /%d (IPv6 /%d) prefixes: more than %d in one rule (--max-addresses); they allow more than was seen",
			len(addrs), len(out), l[0], l[1], max)
	}
	return nil, ""
}

// evidenceText is one comment line per port: the connections seen.
func evidenceText(ports map[port]*evidence) string {
	var lines []string
	for _, p := range slices.SortedFunc(maps.Keys(ports), comparePorts) {
		e := ports[p]
		if e.count == 0 {
			lines = append(lines, "  "+p.String()+": "+e.added)
			continue
		}
		line := "  " + p.String() + ": " + count(e.count, "connection")
		switch {
		case e.first.IsZero():
		case e.first.Equal(e.last):
			line += " at " + stamp(e.first)
		default:
			line += ", first " + stamp(e.first) + ", last " + stamp(e.last)
		}
		lines = append(lines, line+", e.g. "+e.example)
	}
	return strings.Join(lines, "\n")
}

// count is "1 flow", "2 flows".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func portsSeq(ports map[port]*evidence) *yaml.Node {
	var items []*yaml.Node
	for _, p := range slices.SortedFunc(maps.Keys(ports), comparePorts) {
		items = append(items, mapping(scalar("protocol"), scalar(string(p.proto)), scalar("port"), integer(int(p.num))))
	}
	return sequence(items...)
}

func matchLabels(labels map[string]string) *yaml.Node {
	m := mapping()
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		m.Content = append(m.Content, scalar(k), quotedIfNeeded(labels[k]))
	}
	return mapping(scalar("matchLabels"), m)
}

func commentBlock(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if l == "" {
			b.WriteString("#\n")
			continue
		}
		b.WriteString("# " + l + "\n")
	}
	return b.String()
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }
func quoted(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Style: yaml.DoubleQuotedStyle}
}
func integer(v int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(v)}
}

// quotedIfNeeded keeps a label value a string: "true", "1" or "" would
// otherwise read back as a boolean, a number or null.
func quotedIfNeeded(v string) *yaml.Node {
	var probe any
	if err := yaml.Unmarshal([]byte(v), &probe); err != nil || v == "" {
		return quoted(v)
	}
	if _, ok := probe.(string); !ok {
		return quoted(v)
	}
	return scalar(v)
}

func mapping(kv ...*yaml.Node) *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode, Content: kv} }
func sequence(items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Content: items}
}
func flowSeq(items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle, Content: items}
}
