package observer

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sluice-net/sluice/pkg/flow"
)

// Filters is a compiled request filter: a flow passes when it matches at
// least one whitelist filter (or the whitelist is empty) and no blacklist
// filter. Within one FlowFilter every field that is set must match (AND);
// within one field, any of the listed values (OR). These are Hubble's
// semantics (cilium pkg/hubble/filters).
type Filters struct {
	allow, deny []filter
}

// filter is one FlowFilter: all of its predicates must hold.
type filter []predicate

// predicate tests one field of a flow. Predicates read a flow.View: the
// facts of a stored record without building its flow, or of a prebuilt
// flow.
type predicate func(*flow.View) bool

func (f filter) match(fl *flow.View) bool {
	for _, p := range f {
		if !p(fl) {
			return false
		}
	}
	return true
}

// CompileFilters compiles a request's whitelist and blacklist. It fails
// on a malformed value or a field this server cannot evaluate, naming it.
func CompileFilters(whitelist, blacklist []*flowpb.FlowFilter) (*Filters, error) {
	var fs Filters
	for _, l := range []struct {
		name string
		in   []*flowpb.FlowFilter
		out  *[]filter
	}{{"whitelist", whitelist, &fs.allow}, {"blacklist", blacklist, &fs.deny}} {
		for i, ff := range l.in {
			f, err := compileFilter(ff)
			if err != nil {
				return nil, fmt.Errorf("%s filter %d: %w", l.name, i, err)
			}
			*l.out = append(*l.out, f)
		}
	}
	return &fs, nil
}

// Match reports whether a flow passes.
func (fs *Filters) Match(fl *flowpb.Flow) bool {
	v := flow.ViewOf(fl)
	return fs.MatchView(&v)
}

// MatchView reports whether the flow a view stands for passes. A
// stored record is filtered without building its flow.
func (fs *Filters) MatchView(v *flow.View) bool {
	if fs.empty() {
		return true
	}
	if len(fs.allow) > 0 {
		ok := false
		for _, f := range fs.allow {
			if f.match(v) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, f := range fs.deny {
		if f.match(v) {
			return false
		}
	}
	return true
}

// empty reports that every flow passes.
func (fs *Filters) empty() bool { return fs == nil || len(fs.allow) == 0 && len(fs.deny) == 0 }

// fieldCompilers compile the FlowFilter fields this server evaluates, by
// proto field name. Fields about data Sluice flows do not carry (DNS,
// FQDNs, CEL, ...) are rejected rather than silently matching nothing.
var fieldCompilers = map[protoreflect.Name]func(*flowpb.FlowFilter) (predicate, error){
	"source_ip":      func(ff *flowpb.FlowFilter) (predicate, error) { return ipFilter(ff.GetSourceIp(), sourceIP) },
	"destination_ip": func(ff *flowpb.FlowFilter) (predicate, error) { return ipFilter(ff.GetDestinationIp(), destinationIP) },
	"source_ip_xlated": func(ff *flowpb.FlowFilter) (predicate, error) {
		return ipFilter(ff.GetSourceIpXlated(), sourceIPXlated)
	},
	"source_pod": func(ff *flowpb.FlowFilter) (predicate, error) { return nameFilter(ff.GetSourcePod(), sourcePod) },
	"destination_pod": func(ff *flowpb.FlowFilter) (predicate, error) {
		return nameFilter(ff.GetDestinationPod(), destinationPod)
	},
	"source_service": func(ff *flowpb.FlowFilter) (predicate, error) {
		return nameFilter(ff.GetSourceService(), sourceService)
	},
	"destination_service": func(ff *flowpb.FlowFilter) (predicate, error) {
		return nameFilter(ff.GetDestinationService(), destinationService)
	},
	"source_label": func(ff *flowpb.FlowFilter) (predicate, error) { return labelFilter(ff.GetSourceLabel(), sourceEP) },
	"destination_label": func(ff *flowpb.FlowFilter) (predicate, error) {
		return labelFilter(ff.GetDestinationLabel(), destinationEP)
	},
	"source_workload": func(ff *flowpb.FlowFilter) (predicate, error) {
		return workloadFilter(ff.GetSourceWorkload(), sourceEP), nil
	},
	"destination_workload": func(ff *flowpb.FlowFilter) (predicate, error) {
		return workloadFilter(ff.GetDestinationWorkload(), destinationEP), nil
	},
	"source_identity": func(ff *flowpb.FlowFilter) (predicate, error) {
		return identityFilter(ff.GetSourceIdentity(), sourceEP), nil
	},
	"destination_identity": func(ff *flowpb.FlowFilter) (predicate, error) {
		return identityFilter(ff.GetDestinationIdentity(), destinationEP), nil
	},
	"source_cluster_name": func(ff *flowpb.FlowFilter) (predicate, error) {
		return clusterFilter(ff.GetSourceClusterName(), sourceEP), nil
	},
	"destination_cluster_name": func(ff *flowpb.FlowFilter) (predicate, error) {
		return clusterFilter(ff.GetDestinationClusterName(), destinationEP), nil
	},
	"source_port": func(ff *flowpb.FlowFilter) (predicate, error) { return portFilter(ff.GetSourcePort(), sourcePort) },
	"destination_port": func(ff *flowpb.FlowFilter) (predicate, error) {
		return portFilter(ff.GetDestinationPort(), destinationPort)
	},
	"protocol": func(ff *flowpb.FlowFilter) (predicate, error) { return protocolFilter(ff.GetProtocol()) },
	"verdict": func(ff *flowpb.FlowFilter) (predicate, error) {
		return valueFilter(ff.GetVerdict(), (*flow.View).Verdict), nil
	},
	"drop_reason_desc": func(ff *flowpb.FlowFilter) (predicate, error) {
		return valueFilter(ff.GetDropReasonDesc(), (*flow.View).DropReasonDesc), nil
	},
	"traffic_direction": func(ff *flowpb.FlowFilter) (predicate, error) {
		return valueFilter(ff.GetTrafficDirection(), (*flow.View).TrafficDirection), nil
	},
	"ip_version": func(ff *flowpb.FlowFilter) (predicate, error) {
		return valueFilter(ff.GetIpVersion(), (*flow.View).IPVersion), nil
	},
	"event_type": func(ff *flowpb.FlowFilter) (predicate, error) { return eventTypeFilter(ff.GetEventType()), nil },
	"reply":      func(ff *flowpb.FlowFilter) (predicate, error) { return replyFilter(ff.GetReply()), nil },
	"tcp_flags":  func(ff *flowpb.FlowFilter) (predicate, error) { return tcpFlagsFilter(ff.GetTcpFlags()), nil },
	"node_name":  func(ff *flowpb.FlowFilter) (predicate, error) { return nodeNameFilter(ff.GetNodeName()) },

	"http_status_code": func(ff *flowpb.FlowFilter) (predicate, error) {
		return httpFilter(ff, func() (predicate, error) { return httpStatusFilter(ff.GetHttpStatusCode()) })
	},
	"http_method": func(ff *flowpb.FlowFilter) (predicate, error) {
		return httpFilter(ff, func() (predicate, error) { return httpMethodFilter(ff.GetHttpMethod()), nil })
	},
	"http_path": func(ff *flowpb.FlowFilter) (predicate, error) {
		return httpFilter(ff, func() (predicate, error) { return httpURLFilter(ff.GetHttpPath(), true) })
	},
	"http_url": func(ff *flowpb.FlowFilter) (predicate, error) {
		return httpFilter(ff, func() (predicate, error) { return httpURLFilter(ff.GetHttpUrl(), false) })
	},
	"http_header": func(ff *flowpb.FlowFilter) (predicate, error) {
		return httpFilter(ff, func() (predicate, error) { return httpHeaderFilter(ff.GetHttpHeader()), nil })
	},
	"trace_id": func(ff *flowpb.FlowFilter) (predicate, error) {
		return valueFilter(ff.GetTraceId(), (*flow.View).TraceID), nil
	},
}

func compileFilter(ff *flowpb.FlowFilter) (filter, error) {
	var f filter
	var err error
	ff.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		compile, ok := fieldCompilers[fd.Name()]
		if !ok {
			err = fmt.Errorf("field %s is not supported by this server", fd.Name())
			return false
		}
		var p predicate
		if p, err = compile(ff); err != nil {
			err = fmt.Errorf("%s: %w", fd.Name(), err)
			return false
		}
		f = append(f, p)
		return true
	})
	return f, err
}

func sourceEP(f *flow.View) *flowpb.Endpoint      { return f.Source() }
func destinationEP(f *flow.View) *flowpb.Endpoint { return f.Destination() }
func sourceIP(f *flow.View) netip.Addr            { return f.SourceIP() }
func destinationIP(f *flow.View) netip.Addr       { return f.DestinationIP() }
func sourceIPXlated(f *flow.View) netip.Addr      { return f.SourceIPXlated() }

func sourcePod(f *flow.View) (string, string) {
	return f.Source().GetNamespace(), f.Source().GetPodName()
}

func destinationPod(f *flow.View) (string, string) {
	return f.Destination().GetNamespace(), f.Destination().GetPodName()
}

func sourceService(f *flow.View) (string, string) {
	return f.SourceService().GetNamespace(), f.SourceService().GetName()
}

func destinationService(f *flow.View) (string, string) {
	return f.DestinationService().GetNamespace(), f.DestinationService().GetName()
}

// ipFilter matches addresses ("10.0.0.1") and prefixes ("10.0.0.0/8").
func ipFilter(values []string, get func(*flow.View) netip.Addr) (predicate, error) {
	var addrs []netip.Addr
	var prefixes []netip.Prefix
	for _, v := range values {
		if strings.Contains(v, "/") {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return nil, fmt.Errorf("invalid prefix %q: %w", v, err)
			}
			prefixes = append(prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fmt.Errorf("invalid address %q: %w", v, err)
		}
		addrs = append(addrs, a.Unmap())
	}
	return func(f *flow.View) bool {
		a := get(f)
		if !a.IsValid() {
			return false
		}
		a = a.Unmap()
		return slices.Contains(addrs, a) || slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) })
	}, nil
}

// nameFilter matches pods and services as Hubble does: "ns/prefix"
// matches names starting with prefix in namespace ns, "ns/" anything in
// ns, and a bare "prefix" means the namespace "default".
func nameFilter(values []string, get func(*flow.View) (ns, name string)) (predicate, error) {
	type want struct{ ns, prefix string }
	var ws []want
	for _, v := range values {
		if v == "" {
			return nil, fmt.Errorf("empty name: want namespace/name-prefix")
		}
		ns, prefix, ok := strings.Cut(v, "/")
		if !ok {
			ns, prefix = "default", v
		}
		ws = append(ws, want{ns, prefix})
	}
	return func(f *flow.View) bool {
		ns, name := get(f)
		if ns == "" && name == "" {
			return false
		}
		return slices.ContainsFunc(ws, func(w want) bool {
			return (w.ns == "" || w.ns == ns) && strings.HasPrefix(name, w.prefix)
		})
	}, nil
}

// labelFilter matches Kubernetes label selectors against an endpoint's
// labels. As in Hubble, a key may name the label's source
// ("k8s:app=web", "reserved:world"); a key without one ("app=web")
// matches a label of any source.
func labelFilter(selectors []string, get func(*flow.View) *flowpb.Endpoint) (predicate, error) {
	var sels []labels.Selector
	for _, s := range selectors {
		sel, err := labels.Parse(translateSelector(s))
		if err != nil {
			return nil, fmt.Errorf("invalid label selector %q: %w", s, err)
		}
		sels = append(sels, sel)
	}
	return func(f *flow.View) bool {
		set := labelSet(get(f).GetLabels())
		for _, s := range sels {
			if s.Matches(set) {
				return true
			}
		}
		return false
	}, nil
}

// anySource is the source of selector keys that name none.
const anySource = "any"

// labelSet is an endpoint's "source:key=value" labels as a selector
// reads them: each label under "source.key" and under "any.key" (':' is
// not allowed in selector keys, so the source is joined with '.'). It
// looks labels up in place rather than building a map per flow.
type labelSet []string

// Has implements labels.Labels.
func (ls labelSet) Has(key string) bool {
	_, ok := ls.Lookup(key)
	return ok
}

// Get implements labels.Labels.
func (ls labelSet) Get(key string) string {
	v, _ := ls.Lookup(key)
	return v
}

// Lookup implements labels.Labels: "src.key" is the label whose source is
// src and key is key, of any source for src "any". A label without a
// source has source "any".
func (ls labelSet) Lookup(sel string) (string, bool) {
	src, key, ok := strings.Cut(sel, ".")
	if !ok {
		return "", false
	}
	found, value := false, ""
	for _, l := range ls {
		lsrc, kv, ok := strings.Cut(l, ":")
		if !ok {
			lsrc, kv = anySource, l
		}
		k, v, _ := strings.Cut(kv, "=")
		if k != key || src != anySource && src != lsrc {
			continue
		}
		// As a map would: the last label of the key wins.
		found, value = true, v
	}
	return value, found
}

// translateSelector rewrites each requirement's key of a selector to
// labelSet's form: "k8s:app in (a,b),!reserved:world,env=prod" becomes
// "k8s.app in (a,b),!reserved.world,any.env=prod".
func translateSelector(sel string) string {
	var reqs []string
	depth, start := 0, 0
	for i, r := range sel {
		switch {
		case r == '(':
			depth++
		case r == ')':
			depth--
		case r == ',' && depth == 0:
			reqs = append(reqs, sel[start:i])
			start = i + 1
		}
	}
	reqs = append(reqs, sel[start:])
	for i, req := range reqs {
		req = strings.TrimSpace(req)
		neg := ""
		if rest, ok := strings.CutPrefix(req, "!"); ok {
			neg, req = "!", strings.TrimSpace(rest)
		}
		end := strings.IndexAny(req, " \t=!")
		if end < 0 {
			end = len(req)
		}
		key, rest := req[:end], req[end:]
		if src, k, ok := strings.Cut(key, ":"); ok {
			key = src + "." + k
		} else if key != "" {
			key = anySource + "." + key
		}
		reqs[i] = neg + key + rest
	}
	return strings.Join(reqs, ",")
}

// workloadFilter matches an endpoint's workloads; an empty kind or name
// in the filter matches any.
func workloadFilter(ws []*flowpb.Workload, get func(*flow.View) *flowpb.Endpoint) predicate {
	return func(f *flow.View) bool {
		for _, w := range get(f).GetWorkloads() {
			if slices.ContainsFunc(ws, func(fw *flowpb.Workload) bool {
				return (fw.GetName() == "" || fw.GetName() == w.GetName()) &&
					(fw.GetKind() == "" || fw.GetKind() == w.GetKind())
			}) {
				return true
			}
		}
		return false
	}
}

func identityFilter(ids []uint32, get func(*flow.View) *flowpb.Endpoint) predicate {
	return func(f *flow.View) bool {
		ep := get(f)
		return ep != nil && slices.Contains(ids, ep.GetIdentity())
	}
}

func clusterFilter(names []string, get func(*flow.View) *flowpb.Endpoint) predicate {
	return func(f *flow.View) bool { return slices.Contains(names, get(f).GetClusterName()) }
}

func sourcePort(f *flow.View) (uint32, bool) {
	switch p, sport, _ := f.L4(); p {
	case flow.L4TCP, flow.L4UDP, flow.L4SCTP:
		return sport, true
	}
	return 0, false
}

func destinationPort(f *flow.View) (uint32, bool) {
	switch p, _, dport := f.L4(); p {
	case flow.L4TCP, flow.L4UDP, flow.L4SCTP:
		return dport, true
	}
	return 0, false
}

func portFilter(values []string, get func(*flow.View) (uint32, bool)) (predicate, error) {
	var ports []uint32
	for _, v := range values {
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("invalid port %q: want 0-65535", v)
		}
		ports = append(ports, uint32(p))
	}
	return func(f *flow.View) bool {
		p, ok := get(f)
		return ok && slices.Contains(ports, p)
	}, nil
}

// protocolFilter accepts the names Hubble accepts. Sluice flows never
// carry VRRP, IGMP or DNS records, so those names match nothing; "http"
// matches the L7 flows of the node's proxy.
func protocolFilter(values []string) (predicate, error) {
	var protos []string
	for _, v := range values {
		p := strings.ToLower(v)
		switch p {
		case "tcp", "udp", "sctp", "icmp", "icmpv4", "icmpv6", "vrrp", "igmp", "dns", "http":
			protos = append(protos, p)
		default:
			return nil, fmt.Errorf("unknown protocol %q", v)
		}
	}
	return func(f *flow.View) bool {
		l4, _, _ := f.L4()
		dns, http := f.L7()
		for _, p := range protos {
			var ok bool
			switch p {
			case "tcp":
				ok = l4 == flow.L4TCP
			case "udp":
				ok = l4 == flow.L4UDP
			case "sctp":
				ok = l4 == flow.L4SCTP
			case "icmp":
				ok = l4 == flow.L4ICMPv4 || l4 == flow.L4ICMPv6
			case "icmpv4":
				ok = l4 == flow.L4ICMPv4
			case "icmpv6":
				ok = l4 == flow.L4ICMPv6
			case "vrrp":
				ok = l4 == flow.L4VRRP
			case "igmp":
				ok = l4 == flow.L4IGMP
			case "dns":
				ok = dns
			case "http":
				ok = http
			}
			if ok {
				return true
			}
		}
		return false
	}, nil
}

func valueFilter[T comparable](values []T, get func(*flow.View) T) predicate {
	return func(f *flow.View) bool { return slices.Contains(values, get(f)) }
}

// eventTypeFilter matches the monitor message type; type 0 matches any,
// and the sub-type only counts when match_sub_type is set.
func eventTypeFilter(types []*flowpb.EventTypeFilter) predicate {
	return func(f *flow.View) bool {
		typ, sub, ok := f.EventType()
		if !ok {
			return false
		}
		return slices.ContainsFunc(types, func(t *flowpb.EventTypeFilter) bool {
			return (t.GetType() == 0 || t.GetType() == typ) &&
				(!t.GetMatchSubType() || t.GetSubType() == sub)
		})
	}
}

// replyFilter matches is_reply. Flows that do not know (drops aside,
// which Hubble counts as not replies) match neither true nor false.
func replyFilter(values []bool) predicate {
	return func(f *flow.View) bool {
		reply, known := f.IsReply()
		if !known && f.Verdict() != flowpb.Verdict_DROPPED {
			return false
		}
		return slices.Contains(values, reply)
	}
}

// tcpFlagsFilter matches flows that have all the flags of any one entry.
func tcpFlagsFilter(sets []*flowpb.TCPFlags) predicate {
	want := make([]uint16, len(sets))
	for i, w := range sets {
		want[i] = flow.TCPFlagBits(w)
	}
	return func(f *flow.View) bool {
		have, ok := f.TCPFlags()
		if !ok {
			return false
		}
		return slices.ContainsFunc(want, func(w uint16) bool { return have&w == w })
	}
}

// defaultCluster is the cluster Hubble assumes for node names without one.
const defaultCluster = "default"

// nodeNameFilter matches node names against Hubble's patterns:
// "[cluster/]node" where '*' stands for any run of name characters
// ([-.0-9a-z]) and an empty part for any name.
func nodeNameFilter(patterns []string) (predicate, error) {
	var b strings.Builder
	b.WriteString(`\A(?:`)
	for i, p := range patterns {
		if i > 0 {
			b.WriteByte('|')
		}
		cluster, node, ok := strings.Cut(p, "/")
		if !ok {
			cluster, node = "", p
		}
		if p == "" || strings.Contains(node, "/") {
			return nil, fmt.Errorf("invalid node name pattern %q: want [cluster/]node", p)
		}
		for j, part := range []string{cluster, node} {
			if j > 0 {
				b.WriteByte('/')
			}
			if err := namePattern(&b, part); err != nil {
				return nil, fmt.Errorf("invalid node name pattern %q: %w", p, err)
			}
		}
	}
	b.WriteString(`)\z`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("node name patterns %q: %w", patterns, err)
	}
	return func(f *flow.View) bool {
		n := f.NodeName()
		if n == "" {
			return false
		}
		if !strings.Contains(n, "/") {
			n = defaultCluster + "/" + n
		}
		return re.MatchString(n)
	}, nil
}

func namePattern(b *strings.Builder, p string) error {
	p = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(p), "."))
	if p == "" {
		b.WriteString(`[-.0-9_a-z]+`)
		return nil
	}
	for _, r := range p {
		switch {
		case r == '*':
			b.WriteString(`[-.0-9_a-z]*`)
		case r == '.':
			b.WriteString(`\.`)
		case r == '-' || r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z':
			b.WriteRune(r)
		default:
			return fmt.Errorf("character %q not allowed", r)
		}
	}
	return nil
}

// httpFilter compiles an HTTP field, which Hubble only accepts in a
// filter that selects L7 events or any events (cilium
// pkg/hubble/filters/http.go): the same request fails here as there.
func httpFilter(ff *flowpb.FlowFilter, compile func() (predicate, error)) (predicate, error) {
	if types := ff.GetEventType(); len(types) > 0 && !slices.ContainsFunc(types, func(t *flowpb.EventTypeFilter) bool {
		return t.GetType() == flow.MessageTypeAccessLog
	}) {
		return nil, fmt.Errorf("HTTP filters need the event type filter to match l7 events (type %d) or to be left out", flow.MessageTypeAccessLog)
	}
	return compile()
}

var (
	httpStatusFull   = regexp.MustCompile(`^[1-5][0-9]{2}$`)
	httpStatusPrefix = regexp.MustCompile(`^[1-5][0-9]?\+$`)
)

// httpStatusFilter matches response codes: "404" exactly, "4+" or "40+"
// by prefix. Records without a code (requests) match none.
func httpStatusFilter(values []string) (predicate, error) {
	var full, prefixes []string
	for _, v := range values {
		switch {
		case httpStatusFull.MatchString(v):
			full = append(full, v)
		case httpStatusPrefix.MatchString(v):
			prefixes = append(prefixes, strings.TrimSuffix(v, "+"))
		default:
			return nil, fmt.Errorf("invalid status code %q: want a code (404) or a prefix (4+, 40+)", v)
		}
	}
	return func(f *flow.View) bool {
		h := f.HTTP()
		if h.GetCode() == 0 {
			return false
		}
		code := fmt.Sprintf("%03d", h.GetCode())
		return slices.Contains(full, code) || slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(code, p) })
	}, nil
}

// httpMethodFilter matches request methods, case-insensitively.
func httpMethodFilter(methods []string) predicate {
	return func(f *flow.View) bool {
		m := f.HTTP().GetMethod()
		return m != "" && slices.ContainsFunc(methods, func(w string) bool { return strings.EqualFold(m, w) })
	}
}

// httpURLFilter matches regular expressions (unanchored, as Hubble's)
// against the URL, or with path against the URL's path alone.
func httpURLFilter(exprs []string, path bool) (predicate, error) {
	res := make([]*regexp.Regexp, 0, len(exprs))
	for _, e := range exprs {
		re, err := regexp.Compile(e)
		if err != nil {
			return nil, fmt.Errorf("invalid regular expression %q: %w", e, err)
		}
		res = append(res, re)
	}
	return func(f *flow.View) bool {
		s := f.HTTP().GetUrl()
		if s == "" {
			return false
		}
		if path {
			u, err := url.ParseRequestURI(s)
			if err != nil {
				return false
			}
			s = u.Path
		}
		return slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(s) })
	}, nil
}

// httpHeaderFilter matches flows with any of the headers (key and value
// exactly).
func httpHeaderFilter(want []*flowpb.HTTPHeader) predicate {
	return func(f *flow.View) bool {
		return slices.ContainsFunc(f.HTTP().GetHeaders(), func(h *flowpb.HTTPHeader) bool {
			return slices.ContainsFunc(want, func(w *flowpb.HTTPHeader) bool {
				return w.GetKey() == h.GetKey() && w.GetValue() == h.GetValue()
			})
		})
	}
}
