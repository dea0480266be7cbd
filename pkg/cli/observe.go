package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/observer"
)

// defaultObserveLast is how many flows `sluice observe` prints when told
// neither how many nor since when, as `hubble observe` does.
const defaultObserveLast = 20

// timeLayout is how flow times print: Hubble's default (StampMilli), in
// UTC as Hubble prints them.
const timeLayout = time.StampMilli

// flowSource is what `observe` and `map` share: the observer's address,
// the selection of stored flows and the filters.
type flowSource struct {
	g            *globals
	server       string
	last         uint64
	since, until string
	filters      flowFilters
}

func (s *flowSource) addFlags(cmd *cobra.Command, defaultLast string) {
	fs := cmd.Flags()
	fs.StringVar(&s.server, "server", "", "the agent's observer: unix://PATH, a socket path, or HOST:PORT (default unix://<state-dir>/"+observer.DefaultSocketName+")")
	fs.Uint64Var(&s.last, "last", 0, "read the last `N` matching flows ("+defaultLast+")")
	fs.StringVar(&s.since, "since", "", "read flows since `TIME`: a duration ago (5m, 1h30m) or an RFC 3339 time (2025-03-14T09:26:53Z)")
	fs.StringVar(&s.until, "until", "", "read flows until `TIME`: a duration ago or an RFC 3339 time")
	s.filters.addFlags(fs)
}

// target is the gRPC address of the observer.
func (s *flowSource) target() string {
	switch {
	case s.server == "":
		return "unix://" + filepath.Join(s.g.stateDir, observer.DefaultSocketName)
	case strings.HasPrefix(s.server, "/"):
		return "unix://" + s.server
	}
	return s.server
}

// request builds the GetFlows request common to both commands; the
// caller sets the number of flows and following.
func (s *flowSource) request(now time.Time) (*observerpb.GetFlowsRequest, error) {
	req := &observerpb.GetFlowsRequest{}
	var err error
	if req.Since, err = parseFlowTime("since", s.since, now); err != nil {
		return nil, err
	}
	if req.Until, err = parseFlowTime("until", s.until, now); err != nil {
		return nil, err
	}
	if req.Since != nil && req.Until != nil && req.Until.AsTime().Before(req.Since.AsTime()) {
		return nil, fmt.Errorf("--until %s is before --since %s: no flow can be in between", s.until, s.since)
	}
	if req.Whitelist, req.Blacklist, err = s.filters.build(); err != nil {
		return nil, err
	}
	return req, nil
}

// parseFlowTime parses --since and --until: a duration before now, or an
// RFC 3339 time.
func parseFlowTime(flag, v string, now time.Time) (*timestamppb.Timestamp, error) {
	if v == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return nil, fmt.Errorf("--%s %s: want a positive duration, how long ago", flag, v)
		}
		return timestamppb.New(now.Add(-d)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: want a duration ago (5m, 1h30m) or an RFC 3339 time (2025-03-14T09:26:53Z)", flag, v)
	}
	return timestamppb.New(t), nil
}

func observerError(target string, err error) error {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("cannot reach the agent's observer at %s (is the agent running? set --state-dir or --server): %s", target, st.Message())
	case codes.InvalidArgument:
		return fmt.Errorf("the observer at %s rejected the request: %s", target, st.Message())
	}
	return fmt.Errorf("get flows from %s: %w", target, err)
}

type observeOptions struct {
	flowSource
	output       string
	follow       bool
	first        uint64
	printRequest bool
	cpuProfile   string
}

func (g *globals) observeCommand() *cobra.Command {
	o := &observeOptions{flowSource: flowSource{g: g}}
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Flows from the agent's Hubble observer, filtered as `hubble observe` filters them",
		Long: `Flows from the agent's Hubble observer, filtered as ` + "`hubble observe`" + ` filters them.
The observer listens on <state-dir>/hubble.sock.

A flow must match at least one value of each filter flag given. --not before
a filter flag inverts it: the flows it matches are left out. Flags without
from-/to- (--pod, --ip, --port, --label, --service, --namespace) match either
end of a flow.`,
		Example: `  sluice observe --last 50 --namespace shop
  sluice observe -f --verdict DROPPED
  sluice observe --from-pod shop/web --to-port 5432 --not --verdict FORWARDED
  sluice observe --type drop:POLICY_REVOKED --since 10m -o json
  sluice observe --type l7 --http-status 4+ --http-path '^/api/'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	o.addFlags(cmd, "default 20 unless following or given --since/--until")
	fs := cmd.Flags()
	// A local -o shadows the global one: observe prints other formats.
	fs.StringVarP(&o.output, "output", "o", "compact", "output format: compact (one line per flow), table, json (a flow per line) or jsonpb (a GetFlowsResponse per line)")
	fs.BoolVarP(&o.follow, "follow", "f", false, "keep printing new flows as they come (until interrupted)")
	fs.Uint64Var(&o.first, "first", 0, "print the first (oldest) `N` matching flows stored")
	fs.BoolVar(&o.printRequest, "print-request", false, "print the GetFlows request the flags make, as JSON, and exit without sending it")
	// For measuring the CLI itself (tools/benchflows): a follower stopped
	// with ^C still writes its profile.
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a Go CPU profile of this command to `FILE`")
	_ = fs.MarkHidden("cpu-profile")
	return cmd
}

func (o *observeOptions) run(cmd *cobra.Command) error {
	w := cmd.OutOrStdout()
	out := bufio.NewWriterSize(w, 64<<10)
	p, err := newFlowPrinter(o.output, out)
	if err != nil {
		return err
	}
	switch {
	case o.first > 0 && cmd.Flags().Changed("last"):
		return errors.New("--first and --last cannot be combined: choose the oldest or the newest flows")
	case o.first > 0 && o.follow:
		return errors.New("--first and --follow cannot be combined: following starts from the newest flows")
	case o.output == "table" && o.follow:
		return errors.New("-o table cannot be followed: it aligns columns over all rows; use -o compact with --follow")
	}
	req, err := o.request(time.Now())
	if err != nil {
		return err
	}
	req.Follow = o.follow
	switch {
	case o.first > 0:
		req.First, req.Number = true, o.first
	case o.last > 0:
		req.Number = o.last
	case !o.follow && req.Since == nil && req.Until == nil:
		req.Number = defaultObserveLast
	}
	if o.printRequest {
		b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(req)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	ctx := cmd.Context()
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if o.follow {
		// ^C ends a follow: what was received is printed first.
		var cancel context.CancelFunc
		ctx, cancel = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer cancel()
	}
	return o.printFlows(ctx, req, p, out)
}

// startCPUProfile profiles this process into file until the returned
// function is called.
func startCPUProfile(file string) (func(), error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("--cpu-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpu-profile %s: %w", file, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// flowPrinter writes GetFlows responses, as received, in one output
// format.
type flowPrinter interface {
	write(raw []byte) error
	close() error
}

func newFlowPrinter(format string, w io.Writer) (flowPrinter, error) {
	switch format {
	case "compact":
		return &decoded{p: compactPrinter{w}}, nil
	case "table":
		return &decoded{p: &tablePrinter{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}}, nil
	case "json":
		return &jsonPrinter{w: w, wire: newWireJSON()}, nil
	case "jsonpb":
		return &jsonPrinter{w: w, wire: newWireJSON(), responses: true}, nil
	}
	return nil, fmt.Errorf("-o %q is not an output format of observe: use compact, table, json or jsonpb", format)
}

// responsePrinter prints decoded responses.
type responsePrinter interface {
	write(*observerpb.GetFlowsResponse) error
	close() error
}

// decoded decodes each response for a responsePrinter.
type decoded struct {
	p responsePrinter
	r observerpb.GetFlowsResponse // reused: the printers keep nothing
}

func (d *decoded) write(raw []byte) error {
	if err := proto.Unmarshal(raw, &d.r); err != nil {
		return fmt.Errorf("decode a GetFlows response: %w", err)
	}
	return d.p.write(&d.r)
}

func (d *decoded) close() error { return d.p.close() }

type compactPrinter struct{ w io.Writer }

func (p compactPrinter) write(r *observerpb.GetFlowsResponse) error {
	var line string
	switch {
	case r.GetFlow() != nil:
		line = compactFlow(r.GetFlow())
	case r.GetLostEvents() != nil:
		l := r.GetLostEvents()
		line = fmt.Sprintf("%s: EVENTS LOST: %d (%s)", formatTime(r.GetTime()), l.GetNumEventsLost(), l.GetSource())
	default:
		return nil // node status notices of a relay: not for one node
	}
	_, err := fmt.Fprintln(p.w, line)
	return err
}

func (compactPrinter) close() error { return nil }

// compactFlow is a flow on one line, as `hubble observe` prints it:
//
//	Mar 14 09:26:56.589: default/web-0:43512 (ID:300) -> shop/db-0:5432 (ID:310) from-endpoint FORWARDED (TCP Flags: SYN)
//
// Replies print from the server to the client, with <-. The verdict names
// the policies that decided it.
func compactFlow(f *flowpb.Flow) string {
	src, dst := flowEnds(f)
	srcID, dstID := flowIdentityText(f.GetSource().GetIdentity()), flowIdentityText(f.GetDestination().GetIdentity())
	arrow := "->"
	if f.GetIsReply().GetValue() {
		src, dst, srcID, dstID, arrow = dst, src, dstID, srcID, "<-"
	}
	line := fmt.Sprintf("%s: %s %s %s %s %s %s %s", formatTime(f.GetTime()), src, srcID, arrow, dst, dstID, flowTypeText(f), flowVerdictText(f))
	if s := f.GetSummary(); s != "" {
		line += " (" + s + ")"
	}
	return line
}

type tablePrinter struct {
	tw     *tabwriter.Writer
	header bool
}

func (p *tablePrinter) write(r *observerpb.GetFlowsResponse) error {
	if !p.header {
		fmt.Fprintln(p.tw, "TIMESTAMP\tSOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY")
		p.header = true
	}
	switch {
	case r.GetFlow() != nil:
		f := r.GetFlow()
		src, dst := flowEnds(f)
		fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%s\n", formatTime(f.GetTime()), src, dst, flowTypeText(f), flowVerdictText(f), dash(f.GetSummary()))
	case r.GetLostEvents() != nil:
		l := r.GetLostEvents()
		fmt.Fprintf(p.tw, "%s\t%s\t-\tEVENTS LOST\t-\t%d events lost\n", formatTime(r.GetTime()), l.GetSource(), l.GetNumEventsLost())
	}
	return nil
}

func (p *tablePrinter) close() error {
	if !p.header {
		fmt.Fprintln(p.tw, "TIMESTAMP\tSOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY")
	}
	return p.tw.Flush()
}

// jsonPrinter writes one JSON object per line: the flow (json), or the
// whole GetFlowsResponse (jsonpb). Field names are the proto names, as
// Hubble writes them. A lost-events notice is {"lost_events": {...}} in
// json, which `jq 'select(.lost_events)'` tells from flows. The JSON is
// written from the wire bytes (wireJSON); protojson writes what that does
// not handle.
type jsonPrinter struct {
	w         io.Writer
	wire      *wireJSON
	responses bool
	line      []byte
}

var jsonLine = protojson.MarshalOptions{UseProtoNames: true}

// GetFlowsResponse's fields of the response types -o json prints.
const (
	responseFlowField       = 1
	responseLostEventsField = 3
)

var (
	responseDesc  = (&observerpb.GetFlowsResponse{}).ProtoReflect().Descriptor()
	flowDesc      = (&flowpb.Flow{}).ProtoReflect().Descriptor()
	lostEventDesc = (&flowpb.LostEvent{}).ProtoReflect().Descriptor()
)

func (p *jsonPrinter) write(raw []byte) error {
	line, err := p.json(p.line[:0], raw)
	if errors.Is(err, errNotTranscoded) {
		line, err = p.protojson(p.line[:0], raw)
	}
	if err != nil {
		return fmt.Errorf("encode a flow as JSON: %w", err)
	}
	p.line = line
	if len(line) == 0 {
		return nil
	}
	_, err = p.w.Write(append(line, '\n'))
	return err
}

// json appends the line of a response from its wire bytes; nothing for
// response types -o json does not print.
func (p *jsonPrinter) json(out, raw []byte) ([]byte, error) {
	if p.responses {
		return p.wire.Append(out, responseDesc, raw)
	}
	// The printed message is the response's one flow or lost-events
	// notice. Sent more than once (the oneof's last field wins, a message
	// sent in parts merges), it is protojson's to decide.
	var (
		num protowire.Number // 0: neither
		msg []byte
	)
	for b := raw; len(b) > 0; {
		n, typ, v, rest, err := nextField(b)
		if err != nil {
			return out, err
		}
		b = rest
		if n != responseFlowField && n != responseLostEventsField {
			continue
		}
		if typ != protowire.BytesType || num != 0 {
			return out, errNotTranscoded
		}
		num = n
		msg, _ = protowire.ConsumeBytes(v)
	}
	switch num {
	case responseFlowField:
		return p.wire.Append(out, flowDesc, msg)
	case responseLostEventsField:
		out = append(out, `{"lost_events":`...)
		out, err := p.wire.Append(out, lostEventDesc, msg)
		return append(out, '}'), err
	}
	return out, nil
}

// protojson appends the line of a response as protojson writes it.
func (p *jsonPrinter) protojson(out, raw []byte) ([]byte, error) {
	r := &observerpb.GetFlowsResponse{}
	if err := proto.Unmarshal(raw, r); err != nil {
		return out, err
	}
	var m proto.Message = r
	if !p.responses {
		switch {
		case r.GetFlow() != nil:
			m = r.GetFlow()
		case r.GetLostEvents() != nil:
			m = &observerpb.GetFlowsResponse{ResponseTypes: r.GetResponseTypes()}
		default:
			return out, nil
		}
	}
	return jsonLine.MarshalAppend(out, m)
}

func (*jsonPrinter) close() error { return nil }

func formatTime(ts *timestamppb.Timestamp) string {
	if !ts.IsValid() {
		return "N/A"
	}
	return ts.AsTime().Format(timeLayout)
}

// flowEnds names the source and destination: the pod, else the service,
// else the address; with the port, if any.
func flowEnds(f *flowpb.Flow) (src, dst string) {
	sport, dport := flowPorts(f)
	src = endName(f.GetIP().GetSource(), sport, f.GetSource(), f.GetSourceService())
	dst = endName(f.GetIP().GetDestination(), dport, f.GetDestination(), f.GetDestinationService())
	return src, dst
}

func endName(ip string, port uint32, ep *flowpb.Endpoint, svc *flowpb.Service) string {
	host := ip
	switch {
	case ep.GetPodName() != "":
		host = path.Join(ep.GetNamespace(), ep.GetPodName())
	case svc.GetName() != "":
		host = path.Join(svc.GetNamespace(), svc.GetName())
	case host == "":
		host = "-"
	}
	if port == 0 {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// flowPorts returns a flow's transport ports, zero for none.
func flowPorts(f *flowpb.Flow) (src, dst uint32) {
	l4 := f.GetL4()
	switch {
	case l4.GetTCP() != nil:
		return l4.GetTCP().GetSourcePort(), l4.GetTCP().GetDestinationPort()
	case l4.GetUDP() != nil:
		return l4.GetUDP().GetSourcePort(), l4.GetUDP().GetDestinationPort()
	case l4.GetSCTP() != nil:
		return l4.GetSCTP().GetSourcePort(), l4.GetSCTP().GetDestinationPort()
	}
	return 0, 0
}

// flowIdentityText is an identity as Hubble prints it: "(world)" for a
// reserved one, "(ID:300)" otherwise.
func flowIdentityText(id uint32) string {
	if id == uint32(identity.Unknown) {
		return "(unknown)"
	}
	if ls, ok := identity.ReservedLabels(identity.ID(id)); ok && len(ls) == 1 {
		return "(" + ls[0].Key + ")"
	}
	return "(ID:" + strconv.FormatUint(uint64(id), 10) + ")"
}

// matchTypes name flow.MatchType as Hubble prints it (cilium
// pkg/monitor/api PolicyMatchType).
var matchTypes = map[flow.MatchType]string{
	flow.MatchNone: "none", flow.MatchL3Only: "L3-Only", flow.MatchL3L4: "L3-L4", flow.MatchL4Only: "L4-Only",
	flow.MatchAll: "all", flow.MatchL3Proto: "L3-Proto", flow.MatchProtoOnly: "Proto-Only",
}

// flowTypeText is the TYPE column: a trace's observation point, a drop's
// reason, "policy-verdict:L3-L4 INGRESS", a socket translation point,
// "http-response".
func flowTypeText(f *flowpb.Flow) string {
	// L7 flows: "http-request", "http-response", as Hubble prints them.
	if l7 := f.GetL7(); l7 != nil {
		proto := "l7"
		if l7.GetHttp() != nil {
			proto = "http"
		}
		return proto + "-" + strings.ToLower(l7.GetType().String())
	}
	et := f.GetEventType()
	switch et.GetType() {
	case flow.MessageTypeTrace:
		if i := int(et.GetSubType()); i >= 0 && i < len(traceObservationPoints) {
			return traceObservationPoints[i]
		}
		return "trace:" + strconv.Itoa(int(et.GetSubType()))
	case flow.MessageTypeDrop:
		return dropReasonText(f)
	case flow.MessageTypePolicyVerdict:
		m, ok := matchTypes[flow.MatchType(f.GetPolicyMatchType())]
		if !ok {
			m = "unknown"
		}
		return "policy-verdict:" + m + " " + f.GetTrafficDirection().String()
	case flow.MessageTypeTraceSock:
		if n, ok := sockXlatePoints[flowpb.SocketTranslationPoint(et.GetSubType())]; ok {
			return n
		}
		return flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_UNKNOWN.String()
	}
	return "UNKNOWN"
}

// dropReasonText names a drop's reason: Hubble's name, or Sluice's for
// the reasons Hubble has none for.
func dropReasonText(f *flowpb.Flow) string {
	if d := f.GetDropReasonDesc(); d != flowpb.DropReason_DROP_REASON_UNKNOWN {
		return d.String()
	}
	if r := f.GetDropReason(); r != 0 && r <= 0xffff {
		return events.DropReason(r).String()
	}
	return flowpb.DropReason_DROP_REASON_UNKNOWN.String()
}

// flowVerdictText is the verdict, as policy verdict events word it (ALLOWED,
// DENIED, AUDITED, REDIRECTED TO PROXY :PORT), with the policies that
// decided it:
// "ALLOWED BY shop/allow-web (NetworkPolicy)", "DENIED BY cnp/guardrail
// egress[0] (ClusterNetworkPolicy)".
func flowVerdictText(f *flowpb.Flow) string {
	v := f.GetVerdict()
	text := v.String()
	var by []*flowpb.Policy
	policyEvent := f.GetEventType().GetType() == flow.MessageTypePolicyVerdict
	switch v {
	case flowpb.Verdict_FORWARDED, flowpb.Verdict_REDIRECTED:
		switch {
		case v == flowpb.Verdict_REDIRECTED:
			// Allowed, but to the node's L7 proxy, whose listener decides.
			text = "REDIRECTED TO PROXY :" + strconv.Itoa(int(f.GetProxyPort()))
		case policyEvent:
			text = "ALLOWED"
		}
		by = slices.Concat(f.GetIngressAllowedBy(), f.GetEgressAllowedBy())
	case flowpb.Verdict_DROPPED, flowpb.Verdict_ERROR:
		if policyEvent {
			text = "DENIED"
		}
		by = slices.Concat(f.GetIngressDeniedBy(), f.GetEgressDeniedBy())
	case flowpb.Verdict_AUDIT:
		if policyEvent {
			text = "AUDITED"
		}
		by = slices.Concat(f.GetIngressDeniedBy(), f.GetEgressDeniedBy())
	}
	var names []string
	for _, p := range by {
		if p.GetName() == "" {
			continue
		}
		n := path.Join(p.GetNamespace(), p.GetName())
		for _, l := range p.GetLabels() {
			// The deciding rule, where the object holds rules of
			// different actions (ClusterNetworkPolicy).
			if ref, ok := strings.CutPrefix(l, flow.RuleLabel+"="); ok {
				n = ref
			}
		}
		if p.GetKind() != "" {
			n += " (" + p.GetKind() + ")"
		}
		names = append(names, n)
	}
	if len(names) > 0 {
		text += " BY " + strings.Join(names, ", ")
	}
	return text
}
