package policysuggest

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/model"
)

// DefaultMaxAddresses is how many addresses outside the cluster one rule
// lists before they are aggregated into prefixes.
const DefaultMaxAddresses = 8

// Options configure a Builder.
type Options struct {
	// Namespaces are those whose workloads get policies; none means all.
	Namespaces []string
	// MaxAddresses bounds the ipBlocks of one rule (see the package
	// documentation); 0 is DefaultMaxAddresses.
	MaxAddresses int
	// Audit puts each namespace with policies in audit mode.
	Audit bool
}

// volatileLabels are set by controllers per pod or per revision: a
// selector on them would miss the workload's next pods.
var volatileLabels = map[string]bool{
	"pod-template-hash":                        true,
	"controller-revision-hash":                 true,
	"pod-template-generation":                  true,
	"statefulset.kubernetes.io/pod-name":       true,
	"apps.kubernetes.io/pod-index":             true,
	"controller-uid":                           true,
	"job-name":                                 true,
	"batch.kubernetes.io/controller-uid":       true,
	"batch.kubernetes.io/job-name":             true,
	"batch.kubernetes.io/job-completion-index": true,
}

// selectorLabel reports whether a flow label ("k8s:key=value") can select
// a workload: a pod label Kubernetes knows, not one the controller sets
// per pod nor one Hubble derives from the namespace or the cluster.
func selectorLabel(l string) (key, value string, ok bool) {
	kv, ok := strings.CutPrefix(l, "k8s:")
	if !ok {
		return "", "", false
	}
	key, value, _ = strings.Cut(kv, "=")
	if key == "" || volatileLabels[key] || key == "io.kubernetes.pod.namespace" || strings.HasPrefix(key, "io.cilium.") {
		return "", "", false
	}
	return key, value, true
}

// workload is a group of pods policies select as one.
type workload struct {
	key       string
	namespace string
	// kind and name are the controller's; kind is empty for pods grouped
	// by their labels.
	kind, name string
	// labels are those every observed pod of the workload has.
	labels map[string]string
	pods   map[string]bool
	// ingress and egress are the rules being built, by peer.
	ingress, egress map[string]*rule
}

func (w *workload) String() string {
	if w.kind == "" {
		return path.Join(w.namespace, w.name) + " (pods " + labelsText(w.labels) + ")"
	}
	return path.Join(w.namespace, w.name) + " (" + w.kind + ")"
}

// rule is the connections of one direction with one peer: a workload, or
// addresses outside the cluster.
type rule struct {
	peer *workload
	// addrs are the outside addresses, with their ports.
	addrs map[netip.Addr]map[port]*evidence
	// ports are a workload peer's.
	ports map[port]*evidence
	// node marks addresses of nodes (for the comment).
	node map[netip.Addr]bool
}

type port struct {
	proto model.Protocol
	num   uint16
}

func (p port) String() string { return string(p.proto) + "/" + strconv.Itoa(int(p.num)) }

func comparePorts(a, b port) int {
	return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.num, b.num))
}

// evidence is what justifies one port of a rule.
type evidence struct {
	count       int
	first, last time.Time
	example     string
	// added is why the port is there without having been seen.
	added string
}

func (e *evidence) add(c *flow.Connection) {
	e.count++
	if e.example == "" {
		e.example = c.String()
	}
	if !c.Time.IsZero() && (e.first.IsZero() || c.Time.Before(e.first)) {
		e.first = c.Time
	}
	if c.Time.After(e.last) {
		e.last = c.Time
	}
}

func (e *evidence) merge(o *evidence) {
	if e.example == "" {
		e.example = o.example
	}
	e.count += o.count
	if !o.first.IsZero() && (e.first.IsZero() || o.first.Before(e.first)) {
		e.first = o.first
	}
	if o.last.After(e.last) {
		e.last = o.last
	}
}

// Builder collects flows and writes the policies they justify.
type Builder struct {
	opts      Options
	conns     map[flow.ConnectionKey]flow.Connection
	workloads map[string]*workload
	// Counts of what was read, for the header.
	flows, notConnections int
	first, last           time.Time
	// unselectable are pods whose labels select nothing narrower than
	// their namespace, with why.
	unselectable map[string]string
	hostIngress  int
}

// New returns an empty Builder.
func New(opts Options) *Builder {
	if opts.MaxAddresses <= 0 {
		opts.MaxAddresses = DefaultMaxAddresses
	}
	return &Builder{opts: opts, conns: map[flow.ConnectionKey]flow.Connection{}, workloads: map[string]*workload{},
		unselectable: map[string]string{}}
}

// Add reads one flow. The flows of one connection (start, end, both
// nodes' views) count once.
func (b *Builder) Add(f *flowpb.Flow) {
	b.flows++
	c, ok := flow.ConnectionOf(f)
	if !ok {
		b.notConnections++
		return
	}
	if !c.Time.IsZero() {
		if b.first.IsZero() || c.Time.Before(b.first) {
			b.first = c.Time
		}
		if c.Time.After(b.last) {
			b.last = c.Time
		}
	}
	k := c.Key()
	if old, seen := b.conns[k]; seen && !c.Time.Before(old.Time) {
		return
	}
	b.conns[k] = c
}

func (b *Builder) inScope(ns string) bool {
	return len(b.opts.Namespaces) == 0 || slices.Contains(b.opts.Namespaces, ns)
}

// workloadOf is the workload of a pod end, nil for an end that is not a
// pod (or a pod that cannot be selected, recorded in unselectable).
func (b *Builder) workloadOf(e *flow.ConnectionEnd) *workload {
	ep := e.Endpoint
	if ep.GetPodName() == "" || ep.GetNamespace() == "" {
		return nil
	}
	labels := map[string]string{}
	for _, l := range ep.GetLabels() {
		if k, v, ok := selectorLabel(l); ok {
			labels[k] = v
		}
	}
	w := &workload{namespace: ep.GetNamespace()}
	if ws := ep.GetWorkloads(); len(ws) > 0 && ws[0].GetName() != "" {
		w.kind, w.name = ws[0].GetKind(), ws[0].GetName()
		w.key = w.namespace + "/" + w.kind + "/" + w.name
	} else {
		if len(labels) == 0 {
			b.unselectable[path.Join(ep.GetNamespace(), ep.GetPodName())] = "no labels to select it by"
			return nil
		}
		w.name = nameFromLabels(labels)
		w.key = w.namespace + "/labels/" + labelsText(labels)
	}
	have := b.workloads[w.key]
	if have == nil {
		w.labels = labels
		w.pods = map[string]bool{}
		w.ingress, w.egress = map[string]*rule{}, map[string]*rule{}
		b.workloads[w.key] = w
		have = w
	} else {
		// The labels all its pods share: pods of one controller differ
		// only in what a revision changed.
		maps.DeleteFunc(have.labels, func(k, v string) bool { return labels[k] != v })
	}
	have.pods[ep.GetPodName()] = true
	return have
}

// nameFromLabels names a workload known only by its labels, for its
// policy's name.
func nameFromLabels(labels map[string]string) string {
	for _, k := range []string{"app.kubernetes.io/name", "app", "k8s-app", "name"} {
		if v := labels[k]; v != "" {
			return v
		}
	}
	keys := slices.Sorted(maps.Keys(labels))
	return labels[keys[0]]
}

func labelsText(labels map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// build turns the connections into rules.
func (b *Builder) build() {
	keys := slices.SortedFunc(maps.Keys(b.conns), func(x, y flow.ConnectionKey) int {
		return cmp.Or(x.Client.Compare(y.Client), x.Server.Compare(y.Server), cmp.Compare(x.Protocol, y.Protocol))
	})
	for _, k := range keys {
		c := b.conns[k]
		client, server := b.workloadOf(&c.Client), b.workloadOf(&c.Server)
		if (client == nil && c.Client.Endpoint.GetPodName() != "") || (server == nil && c.Server.Endpoint.GetPodName() != "") {
			// A pod that no selector can name: its address is no
			// substitute (pods come and go with new ones).
			continue
		}
		p := port{c.Protocol, c.Port}
		if server != nil && b.inScope(server.namespace) {
			switch {
			case client != nil:
				peerRule(server.ingress, client).port(p).add(&c)
			case isHost(c.Client.Endpoint):
				// The node's own connections into its pods (kubelet
				// probes) are always allowed.
				b.hostIngress++
			default:
				addrRule(server.ingress, c.Client).addr(c.Client.Addr, p).add(&c)
			}
		}
		if client != nil && b.inScope(client.namespace) {
			if server != nil {
				peerRule(client.egress, server).port(p).add(&c)
			} else {
				addrRule(client.egress, c.Server).addr(c.Server.Addr, p).add(&c)
			}
		}
	}
}

func isHost(ep *flowpb.Endpoint) bool {
	return slices.Contains(ep.GetLabels(), "reserved:host")
}

func isNode(ep *flowpb.Endpoint) bool {
	return isHost(ep) || slices.Contains(ep.GetLabels(), "reserved:remote-node")
}

func peerRule(rules map[string]*rule, peer *workload) *rule {
	r := rules[peer.key]
	if r == nil {
		r = &rule{peer: peer, ports: map[port]*evidence{}}
		rules[peer.key] = r
	}
	return r
}

// addrRule is the rule of the addresses outside the cluster; it is split
// by port set when written.
func addrRule(rules map[string]*rule, e flow.ConnectionEnd) *rule {
	r := rules[""]
	if r == nil {
		r = &rule{addrs: map[netip.Addr]map[port]*evidence{}, node: map[netip.Addr]bool{}}
		rules[""] = r
	}
	if isNode(e.Endpoint) {
		r.node[e.Addr] = true
	}
	return r
}

func (r *rule) port(p port) *evidence {
	e := r.ports[p]
	if e == nil {
		e = &evidence{}
		r.ports[p] = e
	}
	return e
}

func (r *rule) addr(a netip.Addr, p port) *evidence {
	ps := r.addrs[a]
	if ps == nil {
		ps = map[port]*evidence{}
		r.addrs[a] = ps
	}
	e := ps[p]
	if e == nil {
		e = &evidence{}
		ps[p] = e
	}
	return e
}

// keepDNS adds the other transport of port 53 to a rule's ports.
func keepDNS(ports map[port]*evidence) {
	for _, pair := range [][2]model.Protocol{{model.ProtocolUDP, model.ProtocolTCP}, {model.ProtocolTCP, model.ProtocolUDP}} {
		seen, other := port{pair[0], 53}, port{pair[1], 53}
		if _, ok := ports[seen]; ok {
			if _, ok := ports[other]; !ok {
				ports[other] = &evidence{added: "not seen: added beside " + seen.String() + ", as resolvers retry truncated answers over TCP"}
			}
		}
	}
}

var nonName = regexp.MustCompile(`[^a-z0-9-]+`)

// policyName is the policy's name: "<workload>-suggested", with the kind
// when two workloads of a namespace share a name.
func policyName(w *workload, clash bool) string {
	name := w.name
	if clash && w.kind != "" {
		name += "-" + w.kind
	}
	name = strings.Trim(nonName.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if name == "" {
		name = "workload"
	}
	return fmt.Sprintf("%.243s-suggested", name)
}
