package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/flow"
)

// flowFilters turns the filter flags of `sluice observe` and `sluice map`
// into a GetFlows whitelist and blacklist, with the semantics of `hubble
// observe` (hubble/cmd/observe/flows_filter.go), so that a command line
// selects the same flows in both tools:
//
//   - Each flag adds a value to a FlowFilter field. The values of one flag
//     are alternatives (OR); different flags must all hold (AND).
//   - A flag that names no direction (--pod, --ip, --label, --service,
//     --port) matches either end of a flow. It fills the source field of a
//     first filter and the destination field of a second; a flow passes if
//     either filter matches. Every other flag (--from-…, --to-…, --verdict,
//     --protocol …) fills both filters.
//   - --namespace restricts the pods and services of the source in the
//     first filter and of the destination in the second (a namespace alone
//     means any pod in it); --from-namespace and --to-namespace restrict
//     one end in both.
//   - --not sends the next filter flag to the blacklist, which is built by
//     the same rules: a flow is shown when it matches no blacklist filter.
//
// Flags are applied in command-line order: pflag calls Set as it parses.
type flowFilters struct {
	include, exclude filterSet
	// negateNext is set by --not until the next filter flag.
	negateNext bool
}

// filterSet is one list (whitelist or blacklist) under construction.
type filterSet struct {
	// src and dst are the filters for the source and the destination form
	// of direction-less flags; flags with a direction update both.
	src, dst *flowpb.FlowFilter
	// Namespaces are applied when the filters are built, once all pod and
	// service flags are known.
	ns, fromNS, toNS []string
	// used lists the flags given, for the conflict check.
	used []string
}

// filterConflicts are flag groups of which only one may be used per list.
// Each group names one end of a flow in two ways, and the filter the pair
// would build does not mean what it reads as: --port 80 --to-port 443
// yields (source 80 and destination 443) or (destination 80 or 443),
// which also matches flows to 443 from any port. These are Hubble's
// groups for the flags Sluice offers.
var filterConflicts = [][]string{
	{"from-ip", "ip", "from-namespace", "namespace"},
	{"from-ip", "ip", "from-pod", "pod"},
	{"to-ip", "ip", "to-namespace", "namespace"},
	{"to-ip", "ip", "to-pod", "pod"},
	{"to-pod", "namespace"},
	{"from-pod", "namespace"},
	{"to-service", "namespace"},
	{"from-service", "namespace"},
	{"label", "from-label"},
	{"label", "to-label"},
	{"service", "from-service"},
	{"service", "to-service"},
	{"port", "to-port"},
	{"port", "from-port"},
}

// filterFlag is one filter flag: set validates a value and adds it.
type filterFlag struct {
	name, short, usage string
	set                func(s *filterSet, v string) error
}

// both applies a change to the filters of both ends.
func (s *filterSet) both(update func(*flowpb.FlowFilter)) {
	s.init()
	update(s.src)
	update(s.dst)
}

// either applies the source form of a flag to the first filter and its
// destination form to the second.
func (s *filterSet) either(src, dst func(*flowpb.FlowFilter)) {
	s.init()
	src(s.src)
	dst(s.dst)
}

func (s *filterSet) init() {
	if s.src == nil {
		s.src, s.dst = &flowpb.FlowFilter{}, &flowpb.FlowFilter{}
	}
}

// filterFlags are the filter flags, in the order help lists them.
var filterFlags = []filterFlag{
	{name: "not", usage: "negate the next filter flag: show the flows it does not match, e.g. --not --verdict DROPPED"},

	{name: "pod", usage: "flows from or to pods whose name starts with `[NS/]POD` (namespace default if none)",
		set: func(s *filterSet, v string) error {
			s.either(func(f *flowpb.FlowFilter) { f.SourcePod = append(f.SourcePod, v) },
				func(f *flowpb.FlowFilter) { f.DestinationPod = append(f.DestinationPod, v) })
			return nil
		}},
	{name: "from-pod", usage: "flows from pods whose name starts with `[NS/]POD`",
		set: func(s *filterSet, v string) error {
			s.both(func(f *flowpb.FlowFilter) { f.SourcePod = append(f.SourcePod, v) })
			return nil
		}},
	{name: "to-pod", usage: "flows to pods whose name starts with `[NS/]POD`",
		set: func(s *filterSet, v string) error {
			s.both(func(f *flowpb.FlowFilter) { f.DestinationPod = append(f.DestinationPod, v) })
			return nil
		}},

	{name: "namespace", short: "n", usage: "flows from or to pods and services in the `NAMESPACE`",
		set: func(s *filterSet, v string) error { s.ns = append(s.ns, v); return nil }},
	{name: "from-namespace", usage: "flows from pods and services in the `NAMESPACE`",
		set: func(s *filterSet, v string) error { s.fromNS = append(s.fromNS, v); return nil }},
	{name: "to-namespace", usage: "flows to pods and services in the `NAMESPACE`",
		set: func(s *filterSet, v string) error { s.toNS = append(s.toNS, v); return nil }},

	{name: "ip", usage: "flows from or to an `ADDRESS` (10.0.0.1) or prefix (10.0.0.0/8)",
		set: func(s *filterSet, v string) error {
			if err := checkIP(v); err != nil {
				return err
			}
			s.either(func(f *flowpb.FlowFilter) { f.SourceIp = append(f.SourceIp, v) },
				func(f *flowpb.FlowFilter) { f.DestinationIp = append(f.DestinationIp, v) })
			return nil
		}},
	{name: "from-ip", usage: "flows from an `ADDRESS` or prefix",
		set: func(s *filterSet, v string) error {
			if err := checkIP(v); err != nil {
				return err
			}
			s.both(func(f *flowpb.FlowFilter) { f.SourceIp = append(f.SourceIp, v) })
			return nil
		}},
	{name: "to-ip", usage: "flows to an `ADDRESS` or prefix",
		set: func(s *filterSet, v string) error {
			if err := checkIP(v); err != nil {
				return err
			}
			s.both(func(f *flowpb.FlowFilter) { f.DestinationIp = append(f.DestinationIp, v) })
			return nil
		}},

	{name: "label", short: "l", usage: "flows from or to endpoints matching the label `SELECTOR` (app=web, k8s:app in (a,b), reserved:world)",
		set: func(s *filterSet, v string) error {
			s.either(func(f *flowpb.FlowFilter) { f.SourceLabel = append(f.SourceLabel, v) },
				func(f *flowpb.FlowFilter) { f.DestinationLabel = append(f.DestinationLabel, v) })
			return nil
		}},
	{name: "from-label", usage: "flows from endpoints matching the label `SELECTOR`",
		set: func(s *filterSet, v string) error {
			s.both(func(f *flowpb.FlowFilter) { f.SourceLabel = append(f.SourceLabel, v) })
			return nil
		}},
	{name: "to-label", usage: "flows to endpoints matching the label `SELECTOR`",
		set: func(s *filterSet, v string) error {
			s.both(func(f *flowpb.FlowFilter) { f.DestinationLabel = append(f.DestinationLabel, v) })
			return nil
		}},

	{name: "service", usage: "flows from or to services whose name starts with `[NS/]SERVICE`",
		set: func(s *filterSet, v string) error {
			s.either(func(f *flowpb.FlowFilter) { f.SourceService = append(f.SourceService, v) },
				func(f *flowpb.FlowFilter) { f.DestinationService = append(f.DestinationService, v) })
			return nil
		}},
	{name: "from-service", usage: "flows from services whose name starts with `[NS/]SERVICE`",
		set: func(s *filterSet, v string) error {
			s.both(func(f *flowpb.FlowFilter) { f.SourceService = append(f.SourceService, v) })
			return nil
		}},
	{name: "to-service", usage: "flows to services whose name starts with `[NS/]SERVICE`",
		set: func(s *filterSet, v string) error {
			s.both(func(f *flowpb.FlowFilter) { f.DestinationService = append(f.DestinationService, v) })
			return nil
		}},

	{name: "port", usage: "flows with `PORT` as source or destination port",
		set: func(s *filterSet, v string) error {
			if err := checkPort(v); err != nil {
				return err
			}
			s.either(func(f *flowpb.FlowFilter) { f.SourcePort = append(f.SourcePort, v) },
				func(f *flowpb.FlowFilter) { f.DestinationPort = append(f.DestinationPort, v) })
			return nil
		}},
	{name: "from-port", usage: "flows with source port `PORT`",
		set: func(s *filterSet, v string) error {
			if err := checkPort(v); err != nil {
				return err
			}
			s.both(func(f *flowpb.FlowFilter) { f.SourcePort = append(f.SourcePort, v) })
			return nil
		}},
	{name: "to-port", usage: "flows with destination port `PORT`",
		set: func(s *filterSet, v string) error {
			if err := checkPort(v); err != nil {
				return err
			}
			s.both(func(f *flowpb.FlowFilter) { f.DestinationPort = append(f.DestinationPort, v) })
			return nil
		}},

	{name: "protocol", usage: "flows of the `PROTOCOL`: tcp, udp, sctp, icmp, icmpv4, icmpv6 or http (the node proxy's requests)",
		set: func(s *filterSet, v string) error {
			p := strings.ToLower(v)
			if !slices.Contains(protocols, p) {
				return fmt.Errorf("unknown protocol: want one of %s", strings.Join(protocols, ", "))
			}
			s.both(func(f *flowpb.FlowFilter) { f.Protocol = append(f.Protocol, p) })
			return nil
		}},
	{name: "verdict", usage: "flows with the `VERDICT`: FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED or TRANSLATED",
		set: func(s *filterSet, v string) error {
			n, ok := flowpb.Verdict_value[strings.ToUpper(v)]
			if !ok {
				return errors.New("unknown verdict: want FORWARDED, DROPPED, AUDIT, REDIRECTED, ERROR, TRACED or TRANSLATED")
			}
			s.both(func(f *flowpb.FlowFilter) { f.Verdict = append(f.Verdict, flowpb.Verdict(n)) })
			return nil
		}},
	{name: "drop-reason", usage: "drops with the Hubble drop `REASON` (POLICY_DENIED, CT_MAP_INSERTION_FAILED …; the README lists them)",
		set: func(s *filterSet, v string) error {
			r, err := parseDropReasonDesc(v)
			if err != nil {
				return err
			}
			s.both(func(f *flowpb.FlowFilter) { f.DropReasonDesc = append(f.DropReasonDesc, r) })
			return nil
		}},
	{name: "type", short: "t", usage: "flows of the event `TYPE[:SUBTYPE]`: trace[:to-endpoint|from-endpoint|from-network|to-network …], drop[:REASON], policy-verdict, trace-sock (or sock)[:post-xlate-fwd …], l7 (the node proxy's HTTP requests)",
		set: func(s *filterSet, v string) error {
			t, err := parseEventType(v)
			if err != nil {
				return err
			}
			s.both(func(f *flowpb.FlowFilter) { f.EventType = append(f.EventType, t) })
			return nil
		}},
	{name: "http-status", usage: "HTTP requests answered with the status `CODE` (404) or a code starting with it (4+, 40+)",
		set: func(s *filterSet, v string) error {
			if !httpStatusCode.MatchString(v) {
				return errors.New("want a status code (404) or a prefix of one followed by + (4+, 40+)")
			}
			s.both(func(f *flowpb.FlowFilter) { f.HttpStatusCode = append(f.HttpStatusCode, v) })
			return nil
		}},
	{name: "http-method", usage: "HTTP requests with the `METHOD` (GET, POST …; any case)",
		set: func(s *filterSet, v string) error {
			if v == "" {
				return errors.New("want a method, e.g. GET")
			}
			s.both(func(f *flowpb.FlowFilter) { f.HttpMethod = append(f.HttpMethod, v) })
			return nil
		}},
	{name: "http-path", usage: "HTTP requests whose path (without the query) matches the regular expression `REGEX`, e.g. '^/api/'",
		set: regexpFlag(func(f *flowpb.FlowFilter) *[]string { return &f.HttpPath })},
	{name: "http-url", usage: "HTTP requests whose URL (scheme://host/path?query) matches the regular expression `REGEX`",
		set: regexpFlag(func(f *flowpb.FlowFilter) *[]string { return &f.HttpUrl })},
	{name: "http-header", usage: "HTTP requests with the header `KEY:VALUE` (the key in lower case, as flows show it)",
		set: func(s *filterSet, v string) error {
			key, value, ok := strings.Cut(v, ":")
			if !ok || key == "" {
				return errors.New("want KEY:VALUE, e.g. x-request-id:6a1b2f0e")
			}
			s.both(func(f *flowpb.FlowFilter) {
				f.HttpHeader = append(f.HttpHeader, &flowpb.HTTPHeader{Key: key, Value: value})
			})
			return nil
		}},
	{name: "tcp-flags", usage: "TCP flows with all of the `FLAGS` (SYN, SYN,ACK, RST …); repeat the flag for alternatives",
		set: func(s *filterSet, v string) error {
			fl, err := parseTCPFlags(v)
			if err != nil {
				return err
			}
			s.both(func(f *flowpb.FlowFilter) { f.TcpFlags = append(f.TcpFlags, fl) })
			return nil
		}},
	{name: "traffic-direction", usage: "flows in the `DIRECTION` (ingress or egress) as the observing endpoint sees it",
		set: func(s *filterSet, v string) error {
			var d flowpb.TrafficDirection
			switch strings.ToLower(v) {
			case "ingress":
				d = flowpb.TrafficDirection_INGRESS
			case "egress":
				d = flowpb.TrafficDirection_EGRESS
			default:
				return errors.New("want ingress or egress")
			}
			s.both(func(f *flowpb.FlowFilter) { f.TrafficDirection = append(f.TrafficDirection, d) })
			return nil
		}},
	{name: "node-name", usage: "flows seen on nodes matching `[CLUSTER/]NODE` ('*' matches any run of name characters)",
		set: func(s *filterSet, v string) error {
			s.both(func(f *flowpb.FlowFilter) { f.NodeName = append(f.NodeName, v) })
			return nil
		}},
}

// regexpFlag adds a regular expression to a field of both filters.
func regexpFlag(field func(*flowpb.FlowFilter) *[]string) func(*filterSet, string) error {
	return func(s *filterSet, v string) error {
		if _, err := regexp.Compile(v); err != nil {
			return fmt.Errorf("not a regular expression: %w", err)
		}
		s.both(func(f *flowpb.FlowFilter) { *field(f) = append(*field(f), v) })
		return nil
	}
}

// protocols are the --protocol values: http selects the node proxy's L7
// flows. The observer also accepts Hubble's other names (dns, vrrp,
// igmp), which no Sluice flow carries.
var protocols = []string{"tcp", "udp", "sctp", "icmp", "icmpv4", "icmpv6", "http"}

// httpStatusCode is what --http-status takes, as the observer (and
// Hubble's server) checks it: a code, or a prefix of one and "+".
var httpStatusCode = regexp.MustCompile(`^(?:[1-5][0-9]{2}|[1-5][0-9]?\+)$`)

// addFlags registers the filter flags on fs.
func (ff *flowFilters) addFlags(fs *pflag.FlagSet) {
	for _, f := range filterFlags {
		v := &filterValue{ff: ff, flag: f}
		if f.name == "not" {
			fs.VarPF(v, f.name, f.short, f.usage).NoOptDefVal = "true"
			continue
		}
		fs.VarP(v, f.name, f.short, f.usage)
	}
	// Hubble's name for --drop-reason, so its command lines work here.
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "drop-reason-desc" {
			name = "drop-reason"
		}
		return pflag.NormalizedName(name)
	})
}

// filterValue is the pflag.Value of one filter flag. Every occurrence
// calls Set, in command-line order, which is what --not relies on.
type filterValue struct {
	ff   *flowFilters
	flag filterFlag
}

func (v *filterValue) String() string { return "" }

// Type is the value's name in help when the usage does not name it; for
// --not, "bool" makes help print it without an argument.
func (v *filterValue) Type() string {
	if v.flag.name == "not" {
		return "bool"
	}
	return "string"
}

func (v *filterValue) Set(val string) error {
	ff := v.ff
	if v.flag.name == "not" {
		if val == "false" {
			return nil
		}
		if ff.negateNext {
			return errors.New("--not --not: --not negates the one filter flag that follows it")
		}
		ff.negateNext = true
		return nil
	}
	s := &ff.include
	if ff.negateNext {
		s, ff.negateNext = &ff.exclude, false
	}
	if err := v.flag.set(s, val); err != nil {
		return err
	}
	if !slices.Contains(s.used, v.flag.name) {
		s.used = append(s.used, v.flag.name)
	}
	return nil
}

// build returns the whitelist and blacklist.
func (ff *flowFilters) build() (whitelist, blacklist []*flowpb.FlowFilter, err error) {
	if ff.negateNext {
		return nil, nil, errors.New("--not comes last: put the filter flag it negates after it, e.g. --not --verdict DROPPED")
	}
	if whitelist, err = ff.include.filters(""); err != nil {
		return nil, nil, err
	}
	if blacklist, err = ff.exclude.filters("--not "); err != nil {
		return nil, nil, err
	}
	return whitelist, blacklist, nil
}

// filters checks a list's flags and builds its filters: one, or two when
// the source and destination forms differ. prefix is how the list's flags
// are written on the command line, for errors.
func (s *filterSet) filters(prefix string) ([]*flowpb.FlowFilter, error) {
	if len(s.used) == 0 {
		return nil, nil
	}
	for _, group := range filterConflicts {
		var in []string
		for _, name := range group {
			if slices.Contains(s.used, name) {
				in = append(in, name)
			}
		}
		if len(in) > 1 {
			return nil, fmt.Errorf("%s--%s and %s--%s cannot be combined: they name the same end of a flow in two ways; use one of them",
				prefix, in[0], prefix, in[1])
		}
	}
	s.init()
	for _, f := range []*flowpb.FlowFilter{s.src, s.dst} {
		if err := s.checkNamespaces(f); err != nil {
			return nil, fmt.Errorf("%s%w", prefix, err)
		}
	}
	src, dst := proto.CloneOf(s.src), proto.CloneOf(s.dst)
	for _, f := range []*flowpb.FlowFilter{src, dst} {
		restrictSource(f, s.fromNS)
		restrictDestination(f, s.toNS)
	}
	restrictSource(src, s.ns)
	restrictDestination(dst, s.ns)
	if proto.Equal(src, dst) {
		return []*flowpb.FlowFilter{src}, nil
	}
	return []*flowpb.FlowFilter{src, dst}, nil
}

// restrictSource puts a filter's source pods and services in the
// namespaces; with neither, it selects any pod of the namespaces.
func restrictSource(f *flowpb.FlowFilter, namespaces []string) {
	if len(namespaces) == 0 {
		return
	}
	if len(f.SourcePod) == 0 && len(f.SourceService) == 0 {
		f.SourcePod = []string{""}
	}
	f.SourcePod = inNamespaces(f.SourcePod, namespaces)
	f.SourceService = inNamespaces(f.SourceService, namespaces)
}

func restrictDestination(f *flowpb.FlowFilter, namespaces []string) {
	if len(namespaces) == 0 {
		return
	}
	if len(f.DestinationPod) == 0 && len(f.DestinationService) == 0 {
		f.DestinationPod = []string{""}
	}
	f.DestinationPod = inNamespaces(f.DestinationPod, namespaces)
	f.DestinationService = inNamespaces(f.DestinationService, namespaces)
}

// inNamespaces qualifies names without a namespace with each namespace:
// "web" in a and b is "a/web", "b/web". Names with one are kept; the
// namespace check rejects those outside the namespaces.
func inNamespaces(names, namespaces []string) []string {
	if len(names) == 0 {
		return nil
	}
	var out []string
	for _, n := range names {
		if strings.Contains(n, "/") {
			out = append(out, n)
			continue
		}
		for _, ns := range namespaces {
			out = append(out, ns+"/"+n)
		}
	}
	return out
}

// checkNamespaces rejects filters that can match nothing: a pod or
// service named with a namespace that the namespace flags leave out, or a
// pod and a service of the same end in different namespaces. f is a
// filter before the namespaces are applied.
func (s *filterSet) checkNamespaces(f *flowpb.FlowFilter) error {
	for _, c := range []struct {
		flag       string
		namespaces []string
		names      []string
	}{
		{"namespace", s.ns, slices.Concat(f.SourcePod, f.SourceService, f.DestinationPod, f.DestinationService)},
		{"from-namespace", s.fromNS, slices.Concat(f.SourcePod, f.SourceService)},
		{"to-namespace", s.toNS, slices.Concat(f.DestinationPod, f.DestinationService)},
	} {
		if len(c.namespaces) == 0 {
			continue
		}
		for _, name := range c.names {
			if ns, _, ok := strings.Cut(name, "/"); ok && !slices.Contains(c.namespaces, ns) {
				return fmt.Errorf("%q is outside --%s %s: no flow can match both", name, c.flag, strings.Join(c.namespaces, ", "))
			}
		}
	}
	for _, end := range [][2][]string{{f.SourcePod, f.SourceService}, {f.DestinationPod, f.DestinationService}} {
		for _, pod := range end[0] {
			pns, _, ok := strings.Cut(pod, "/")
			if !ok {
				continue
			}
			for _, svc := range end[1] {
				if sns, _, ok := strings.Cut(svc, "/"); ok && sns != pns {
					return fmt.Errorf("pod %q and service %q are in different namespaces: no flow can match both", pod, svc)
				}
			}
		}
	}
	return nil
}

func checkIP(v string) error {
	if strings.Contains(v, "/") {
		if _, err := netip.ParsePrefix(v); err != nil {
			return errors.New("not a prefix: want e.g. 10.0.0.0/8")
		}
		return nil
	}
	if _, err := netip.ParseAddr(v); err != nil {
		return errors.New("not an address: want e.g. 10.0.0.1 or fd00::1, or a prefix")
	}
	return nil
}

func checkPort(v string) error {
	if _, err := strconv.ParseUint(v, 10, 16); err != nil {
		return errors.New("not a port: want a number from 0 to 65535")
	}
	return nil
}

// sluiceDropReasons maps the names of drop reasons Hubble has no number
// for (events.SluiceDropReasonBase and up) to their numbers.
func sluiceDropReasons() map[string]uint16 {
	out := map[string]uint16{}
	for r := events.SluiceDropReasonBase; r < events.SluiceDropReasonBase+64; r++ {
		if r.Known() {
			out[r.String()] = uint16(r)
		}
	}
	return out
}

// parseDropReasonDesc parses a Hubble drop reason name. Sluice's own
// reasons are not Hubble's: their flows carry DROP_REASON_UNKNOWN, and
// only the event sub-type has their number.
func parseDropReasonDesc(v string) (flowpb.DropReason, error) {
	name := strings.ToUpper(v)
	if n, ok := flowpb.DropReason_value[name]; ok {
		return flowpb.DropReason(n), nil
	}
	if _, ok := sluiceDropReasons()[name]; ok {
		return 0, fmt.Errorf("%s is a Sluice drop reason Hubble has no name for: select it with --type drop:%s", name, name)
	}
	return 0, errors.New("unknown drop reason: use a name of Hubble's flow.DropReason, e.g. POLICY_DENIED")
}

// messageTypeCapture is Cilium's monitor message type of debug captures
// (cilium pkg/monitor/api), which Sluice never emits; the observer
// accepts it.
const messageTypeCapture = 3

// eventTypes are the --type names, as Hubble names them; "sock" is
// short for trace-sock.
var eventTypes = map[string]int32{
	"drop":           flow.MessageTypeDrop,
	"capture":        messageTypeCapture,
	"trace":          flow.MessageTypeTrace,
	"policy-verdict": flow.MessageTypePolicyVerdict,
	"trace-sock":     flow.MessageTypeTraceSock,
	"sock":           flow.MessageTypeTraceSock,
	"l7":             flow.MessageTypeAccessLog,
}

// traceObservationPoints name the sub-types of trace events (Cilium's
// bpf/lib/trace.h numbering, which pkg/flow uses).
var traceObservationPoints = []string{
	"to-endpoint", "to-proxy", "to-host", "to-stack", "to-overlay",
	"from-endpoint", "from-proxy", "from-host", "from-stack", "from-overlay",
	"from-network", "to-network", "from-crypto", "to-crypto",
}

// sockXlatePoints name the sub-types of trace-sock events, as Hubble
// prints them.
var sockXlatePoints = map[flowpb.SocketTranslationPoint]string{
	flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_PRE_DIRECTION_FWD:  "pre-xlate-fwd",
	flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_FWD: "post-xlate-fwd",
	flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_PRE_DIRECTION_REV:  "pre-xlate-rev",
	flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_REV: "post-xlate-rev",
}

// parseEventType parses TYPE[:SUBTYPE], by name or number. Sub-types are
// a trace's observation point, a drop's reason (Sluice's own reasons
// included: the sub-type is the datapath's number) or a socket
// translation point.
func parseEventType(v string) (*flowpb.EventTypeFilter, error) {
	typ, sub, hasSub := strings.Cut(v, ":")
	t, ok := eventTypes[strings.ToLower(typ)]
	if !ok {
		n, err := strconv.ParseUint(typ, 10, 8)
		if err != nil {
			return nil, errors.New("unknown event type: want trace, drop, policy-verdict, trace-sock, capture, l7 or a number")
		}
		t = int32(n)
	}
	out := &flowpb.EventTypeFilter{Type: t}
	if !hasSub {
		return out, nil
	}
	out.MatchSubType = true
	if n, err := strconv.ParseUint(sub, 10, 16); err == nil {
		out.SubType = int32(n)
		return out, nil
	}
	switch t {
	case flow.MessageTypeTrace:
		if i := slices.Index(traceObservationPoints, strings.ToLower(sub)); i >= 0 {
			out.SubType = int32(i)
			return out, nil
		}
		return nil, fmt.Errorf("unknown trace observation point %q: want one of %s", sub, strings.Join(traceObservationPoints, ", "))
	case flow.MessageTypeDrop:
		name := strings.ToUpper(sub)
		if n, ok := sluiceDropReasons()[name]; ok {
			out.SubType = int32(n)
			return out, nil
		}
		if n, ok := flowpb.DropReason_value[name]; ok {
			out.SubType = n
			return out, nil
		}
		return nil, fmt.Errorf("unknown drop reason %q", sub)
	case flow.MessageTypeTraceSock:
		for p, name := range sockXlatePoints {
			if name == strings.ToLower(sub) {
				out.SubType = int32(p)
				return out, nil
			}
		}
		return nil, fmt.Errorf("unknown socket translation point %q: want pre-xlate-fwd, post-xlate-fwd, pre-xlate-rev or post-xlate-rev", sub)
	}
	return nil, fmt.Errorf("sub-type %q: want a number for this event type", sub)
}

// parseTCPFlags parses a comma-separated list of TCP flag names.
func parseTCPFlags(v string) (*flowpb.TCPFlags, error) {
	fl := &flowpb.TCPFlags{}
	for name := range strings.SplitSeq(v, ",") {
		switch strings.ToUpper(strings.TrimSpace(name)) {
		case "SYN":
			fl.SYN = true
		case "ACK":
			fl.ACK = true
		case "FIN":
			fl.FIN = true
		case "RST":
			fl.RST = true
		case "PSH":
			fl.PSH = true
		case "URG":
			fl.URG = true
		case "ECE":
			fl.ECE = true
		case "CWR":
			fl.CWR = true
		case "NS":
			fl.NS = true
		default:
			return nil, fmt.Errorf("unknown TCP flag %q: want SYN, ACK, FIN, RST, PSH, URG, ECE, CWR or NS", name)
		}
	}
	return fl, nil
}
