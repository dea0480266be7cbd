package flow

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// fakeEnricher is the agent's state in miniature.
type fakeEnricher struct {
	local    map[uint32]Endpoint
	byIP     map[netip.Addr]Endpoint
	byCgroup map[uint64]Endpoint
	ids      map[identity.ID]identity.Labels
	services map[uint32]Service
	rules    map[uint32]Rule
}

func (f *fakeEnricher) LocalEndpoint(id uint32) (Endpoint, bool) {
	ep, ok := f.local[id]
	return ep, ok
}

func (f *fakeEnricher) EndpointByIP(ip netip.Addr) (Endpoint, bool) {
	ep, ok := f.byIP[ip]
	return ep, ok
}

func (f *fakeEnricher) EndpointByCgroup(id uint64) (Endpoint, bool) {
	ep, ok := f.byCgroup[id]
	return ep, ok
}

func (f *fakeEnricher) IdentityLabels(id identity.ID) (identity.Labels, bool) {
	ls, ok := f.ids[id]
	return ls, ok
}

func (f *fakeEnricher) Service(id uint32) (Service, bool) {
	s, ok := f.services[id]
	return s, ok
}

func (f *fakeEnricher) PolicyRule(id uint32) (Rule, bool) {
	r, ok := f.rules[id]
	return r, ok
}

var (
	// web-7d9f8c6b5d-x2x4q: a Deployment's pod on this node, endpoint 12.
	webPod = &model.Pod{
		Namespace: "shop", Name: "web-7d9f8c6b5d-x2x4q",
		Labels: map[string]string{"app": "web", "pod-template-hash": "7d9f8c6b5d"},
		IPs:    []netip.Addr{netip.MustParseAddr("10.244.1.5")},
		Owners: []model.OwnerRef{{Kind: "ReplicaSet", Name: "web-7d9f8c6b5d", Controller: true}},
	}
	webLabels = identity.NewLabels(
		identity.Label{Source: "k8s", Key: "app", Value: "web"},
		identity.Label{Source: "k8s", Key: "io.kubernetes.pod.namespace", Value: "shop"},
	)
	// db-0: a StatefulSet's pod on another node, known by address.
	dbPod = &model.Pod{
		Namespace: "shop", Name: "db-0",
		Labels: map[string]string{"app": "db"},
		IPs:    []netip.Addr{netip.MustParseAddr("10.244.2.7")},
		Owners: []model.OwnerRef{{Kind: "StatefulSet", Name: "db", Controller: true}},
	}
	dbLabels = identity.NewLabels(
		identity.Label{Source: "k8s", Key: "app", Value: "db"},
		identity.Label{Source: "k8s", Key: "io.kubernetes.pod.namespace", Value: "shop"},
	)
)

func testEnricher() *fakeEnricher {
	web := Endpoint{ID: 12, Identity: 300, Pod: webPod, Labels: webLabels}
	db := Endpoint{Identity: 301, Pod: dbPod}
	return &fakeEnricher{
		local: map[uint32]Endpoint{12: web},
		byIP: map[netip.Addr]Endpoint{webPod.IPs[0]: web, dbPod.IPs[0]: db, netip.MustParseAddr("192.168.0.2"): {Identity: identity.RemoteNode},
			netip.MustParseAddr("192.168.0.1"): {Identity: identity.Host}},
		byCgroup: map[uint64]Endpoint{4242: web},
		ids:      map[identity.ID]identity.Labels{301: dbLabels},
		services: map[uint32]Service{7: {Namespace: "shop", Name: "db"}},
		rules: map[uint32]Rule{
			3: {Namespace: "shop", Name: "allow-web", Kind: "NetworkPolicy", Direction: flowpb.TrafficDirection_INGRESS, MatchType: MatchL3L4},
			4: {Namespace: "shop", Name: "web-egress", Kind: "NetworkPolicy", MatchType: MatchL4Only},
		},
	}
}

var t0 = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// Expected endpoints, as Hubble shows them.
func webEP() *flowpb.Endpoint {
	return &flowpb.Endpoint{ID: 12, Identity: 300, Namespace: "shop", PodName: "web-7d9f8c6b5d-x2x4q",
		Labels:    []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"},
		Workloads: []*flowpb.Workload{{Kind: "Deployment", Name: "web"}}}
}

func dbEP() *flowpb.Endpoint {
	return &flowpb.Endpoint{Identity: 301, Namespace: "shop", PodName: "db-0",
		Labels:    []string{"k8s:app=db", "k8s:io.kubernetes.pod.namespace=shop"},
		Workloads: []*flowpb.Workload{{Kind: "StatefulSet", Name: "db"}}}
}

func worldEP() *flowpb.Endpoint {
	return &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}
}

func tcp(sport, dport uint32, fl *flowpb.TCPFlags) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport, Flags: fl}}}
}

func ipv4(src, dst string) *flowpb.IP {
	return &flowpb.IP{Source: src, Destination: dst, IpVersion: flowpb.IPVersion_IPv4}
}

func allowWeb() *flowpb.Policy {
	return &flowpb.Policy{Name: "allow-web", Namespace: "shop", Kind: "NetworkPolicy", Labels: []string{
		"k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy",
		"k8s:io.cilium.k8s.policy.name=allow-web",
		"k8s:io.cilium.k8s.policy.namespace=shop",
	}}
}

func TestConvert(t *testing.T) {
	syn := &flowpb.TCPFlags{SYN: true}
	tests := []struct {
		name string
		ev   events.Event
		want *flowpb.Flow // Time, Emitter, NodeName are filled in
	}{{
		name: "new connection out of a pod, no policy: trace from-endpoint",
		ev: events.Event{Type: events.ConnNew, Dir: events.DirEgress, EndpointID: 12, IfIndex: 9, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02,
			Src: ap("10.244.1.5:40000"), Dst: ap("10.244.2.7:5432")},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L3_L4,
			IP: ipv4("10.244.1.5", "10.244.2.7"), L4: tcp(40000, 5432, syn),
			Source: webEP(), Destination: dbEP(),
			EventType:             &flowpb.CiliumEventType{Type: 4, SubType: 5},
			TraceObservationPoint: flowpb.TraceObservationPoint_FROM_ENDPOINT,
			TraceReason:           flowpb.TraceReason_NEW,
			TrafficDirection:      flowpb.TrafficDirection_EGRESS,
			IsReply:               wrapperspb.Bool(false),
			Interface:             &flowpb.NetworkInterface{Index: 9},
			Summary:               "TCP Flags: SYN",
		},
	}, {
		name: "connection end: a forwarded trace with the totals in the summary",
		ev: events.Event{Type: events.ConnEnd, Dir: events.DirEgress, EndpointID: 12, IfIndex: 9, Proto: unix.IPPROTO_TCP, TCPFlags: 0x11,
			Src: ap("10.244.1.5:40000"), Dst: ap("10.244.2.7:5432"),
			PacketsOrig: 5, PacketsReply: 4, BytesOrig: 340, BytesReply: 9000, Duration: 3200 * time.Millisecond},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L3_L4,
			IP: ipv4("10.244.1.5", "10.244.2.7"), L4: tcp(40000, 5432, &flowpb.TCPFlags{FIN: true, ACK: true}),
			Source: webEP(), Destination: dbEP(),
			EventType:             &flowpb.CiliumEventType{Type: 4, SubType: 5},
			TraceObservationPoint: flowpb.TraceObservationPoint_FROM_ENDPOINT,
			TrafficDirection:      flowpb.TrafficDirection_EGRESS,
			IsReply:               wrapperspb.Bool(false),
			Interface:             &flowpb.NetworkInterface{Index: 9},
			Summary:               "connection closed after 3.2s: 5/4 packets, 340/9000 bytes (orig/reply); TCP Flags: ACK, FIN",
		},
	}, {
		name: "new connection into a pod, allowed by a rule: policy verdict",
		ev: events.Event{Type: events.ConnNew, Dir: events.DirIngress, EndpointID: 12, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02,
			Src: ap("10.244.2.7:33000"), Dst: ap("10.244.1.5:8080"),
			Verdict: events.VerdictAllow, SrcIdentity: 301, DstIdentity: 300, PolicyRule: 3},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L3_L4,
			IP: ipv4("10.244.2.7", "10.244.1.5"), L4: tcp(33000, 8080, syn),
			Source: dbEP(), Destination: webEP(),
			EventType:        &flowpb.CiliumEventType{Type: 5},
			TraceReason:      flowpb.TraceReason_NEW,
			TrafficDirection: flowpb.TrafficDirection_INGRESS,
			IsReply:          wrapperspb.Bool(false),
			PolicyMatchType:  uint32(MatchL3L4),
			IngressAllowedBy: []*flowpb.Policy{allowWeb()},
			Summary:          "TCP Flags: SYN",
		},
	}, {
		name: "egress redirected to the proxy: rule direction from the event",
		ev: events.Event{Type: events.ConnNew, Dir: events.DirEgress, EndpointID: 12, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02,
			Src: ap("10.244.1.5:40001"), Dst: ap("10.244.2.7:80"),
			Verdict: events.VerdictRedirect, SrcIdentity: 300, DstIdentity: 301, PolicyRule: 4, ProxyPort: 15001},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_REDIRECTED, Type: flowpb.FlowType_L3_L4,
			IP: ipv4("10.244.1.5", "10.244.2.7"), L4: tcp(40001, 80, syn),
			Source: webEP(), Destination: dbEP(),
			EventType:        &flowpb.CiliumEventType{Type: 5},
			TraceReason:      flowpb.TraceReason_NEW,
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			IsReply:          wrapperspb.Bool(false),
			ProxyPort:        15001,
			// Handed to the node's proxy: Hubble's point for it.
			TraceObservationPoint: flowpb.TraceObservationPoint_TO_PROXY,
			PolicyMatchType:       uint32(MatchL4Only),
			EgressAllowedBy: []*flowpb.Policy{{Name: "web-egress", Namespace: "shop", Kind: "NetworkPolicy", Labels: []string{
				"k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy",
				"k8s:io.cilium.k8s.policy.name=web-egress",
				"k8s:io.cilium.k8s.policy.namespace=shop",
			}}},
			Summary: "TCP Flags: SYN",
		},
	}, {
		name: "denied but audited: AUDIT, no rule",
		ev: events.Event{Type: events.ConnNew, Dir: events.DirIngress, EndpointID: 12, Proto: unix.IPPROTO_UDP,
			Src: ap("10.244.2.7:5353"), Dst: ap("10.244.1.5:53"),
			Verdict: events.VerdictAudit, SrcIdentity: 301, DstIdentity: 300},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_AUDIT, Type: flowpb.FlowType_L3_L4,
			IP:     ipv4("10.244.2.7", "10.244.1.5"),
			L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 5353, DestinationPort: 53}}},
			Source: dbEP(), Destination: webEP(),
			EventType:        &flowpb.CiliumEventType{Type: 5},
			TraceReason:      flowpb.TraceReason_NEW,
			TrafficDirection: flowpb.TrafficDirection_INGRESS,
			IsReply:          wrapperspb.Bool(false),
			Summary:          "UDP",
		},
	}, {
		name: "policy drop from outside the cluster: world, default deny",
		ev: events.Event{Type: events.Drop, Dir: events.DirIngress, EndpointID: 12, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02,
			Src: ap("203.0.113.9:51000"), Dst: ap("10.244.1.5:22"),
			Reason: 133, Verdict: events.VerdictDeny, SrcIdentity: 2, DstIdentity: 300},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_DROPPED, DropReason: 133, DropReasonDesc: flowpb.DropReason_POLICY_DENIED,
			Type: flowpb.FlowType_L3_L4,
			IP:   ipv4("203.0.113.9", "10.244.1.5"), L4: tcp(51000, 22, syn),
			Source: worldEP(), Destination: webEP(),
			EventType:        &flowpb.CiliumEventType{Type: 1, SubType: 133},
			TrafficDirection: flowpb.TrafficDirection_INGRESS,
			Summary:          "TCP Flags: SYN",
		},
	}, {
		name: "no proxy listens: the drop names the proxy port it was for",
		ev: events.Event{Type: events.Drop, Dir: events.DirEgress, EndpointID: 12, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02,
			Src: ap("10.244.1.5:40003"), Dst: ap("10.244.2.7:80"),
			Reason: 1004, Verdict: events.VerdictRedirect, SrcIdentity: 300, DstIdentity: 301, ProxyPort: 15001},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_DROPPED, DropReason: 1004, DropReasonDesc: flowpb.DropReason_DROP_REASON_UNKNOWN,
			Type: flowpb.FlowType_L3_L4,
			IP:   ipv4("10.244.1.5", "10.244.2.7"), L4: tcp(40003, 80, syn),
			Source: webEP(), Destination: dbEP(),
			EventType:        &flowpb.CiliumEventType{Type: 1, SubType: 1004},
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			ProxyPort:        15001,
			Summary:          "PROXY_UNAVAILABLE; TCP Flags: SYN",
		},
	}, {
		name: "policy drop by a rule whose direction is egress",
		ev: events.Event{Type: events.Drop, Dir: events.DirEgress, EndpointID: 12, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02,
			Src: ap("10.244.1.5:40002"), Dst: ap("10.244.2.7:5432"),
			Reason: 1002, Verdict: events.VerdictDeny, SrcIdentity: 300, DstIdentity: 301, PolicyRule: 4},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_DROPPED, DropReason: 1002, DropReasonDesc: flowpb.DropReason_DROP_REASON_UNKNOWN,
			Type: flowpb.FlowType_L3_L4,
			IP:   ipv4("10.244.1.5", "10.244.2.7"), L4: tcp(40002, 5432, syn),
			Source: webEP(), Destination: dbEP(),
			EventType:        &flowpb.CiliumEventType{Type: 1, SubType: 1002},
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			EgressDeniedBy: []*flowpb.Policy{{Name: "web-egress", Namespace: "shop", Kind: "NetworkPolicy", Labels: []string{
				"k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy",
				"k8s:io.cilium.k8s.policy.name=web-egress",
				"k8s:io.cilium.k8s.policy.namespace=shop",
			}}},
			Summary: "POLICY_REVOKED; TCP Flags: SYN",
		},
	}, {
		name: "reply of a revoked connection, cut on its way into the client: is_reply, the packet's own ends, the connection's direction",
		ev: events.Event{Type: events.Drop, Dir: events.DirIngress, EndpointID: 12, Proto: unix.IPPROTO_TCP, TCPFlags: 0x10,
			Src: ap("10.244.2.7:5432"), Dst: ap("10.244.1.5:40002"), Tracked: true, Reply: true,
			Reason: 1002, Verdict: events.VerdictDeny, SrcIdentity: 301, DstIdentity: 300},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_DROPPED, DropReason: 1002, DropReasonDesc: flowpb.DropReason_DROP_REASON_UNKNOWN,
			Type: flowpb.FlowType_L3_L4,
			IP:   ipv4("10.244.2.7", "10.244.1.5"), L4: tcp(5432, 40002, &flowpb.TCPFlags{ACK: true}),
			Source: dbEP(), Destination: webEP(),
			EventType:        &flowpb.CiliumEventType{Type: 1, SubType: 1002},
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			IsReply:          wrapperspb.Bool(true), Reply: true,
			Summary: "POLICY_REVOKED; TCP Flags: ACK",
		},
	}, {
		name: "policy drop of a connection's first packet: tracked, not a reply",
		ev: events.Event{Type: events.Drop, Dir: events.DirIngress, EndpointID: 12, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02,
			Src: ap("203.0.113.9:51001"), Dst: ap("10.244.1.5:22"), Tracked: true,
			Reason: 133, Verdict: events.VerdictDeny, SrcIdentity: 2, DstIdentity: 300},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_DROPPED, DropReason: 133, DropReasonDesc: flowpb.DropReason_POLICY_DENIED,
			Type: flowpb.FlowType_L3_L4,
			IP:   ipv4("203.0.113.9", "10.244.1.5"), L4: tcp(51001, 22, syn),
			Source: worldEP(), Destination: webEP(),
			EventType:        &flowpb.CiliumEventType{Type: 1, SubType: 133},
			TrafficDirection: flowpb.TrafficDirection_INGRESS,
			IsReply:          wrapperspb.Bool(false),
			Summary:          "TCP Flags: SYN",
		},
	}, {
		name: "Sluice-only drop on an uplink (NodePort): unknown reason named in the summary",
		ev: events.Event{Type: events.Drop, Dir: events.DirIngress, IfIndex: 2, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02,
			Src: ap("203.0.113.9:51000"), Dst: ap("192.168.0.1:30080"),
			Reason: 1001, ServiceID: 7, VIP: ap("192.168.0.1:30080")},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_DROPPED, DropReason: 1001, DropReasonDesc: flowpb.DropReason_DROP_REASON_UNKNOWN,
			Type: flowpb.FlowType_L3_L4,
			IP:   ipv4("203.0.113.9", "192.168.0.1"), L4: tcp(51000, 30080, syn),
			Source: worldEP(), Destination: &flowpb.Endpoint{Identity: 1, Labels: []string{"reserved:host"}},
			DestinationService: &flowpb.Service{Namespace: "shop", Name: "db"},
			Extensions:         origDst("192.168.0.1:30080"),
			EventType:          &flowpb.CiliumEventType{Type: 1, SubType: 1001},
			TrafficDirection:   flowpb.TrafficDirection_INGRESS,
			Interface:          &flowpb.NetworkInterface{Index: 2},
			Summary:            "NAT_PORTS_EXHAUSTED; TCP Flags: SYN",
		},
	}, {
		name: "new connection to a service, translated per packet: the service, and the port the client used",
		ev: events.Event{Type: events.ConnNew, Dir: events.DirEgress, EndpointID: 12, IfIndex: 9, Proto: unix.IPPROTO_TCP, TCPFlags: 0x02,
			Src: ap("10.244.1.5:40003"), Dst: ap("10.244.2.7:5432"), Tracked: true,
			ServiceID: 7, VIP: ap("10.96.0.20:80")},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L3_L4,
			IP: ipv4("10.244.1.5", "10.244.2.7"), L4: tcp(40003, 5432, syn),
			Source: webEP(), Destination: dbEP(),
			DestinationService:    &flowpb.Service{Namespace: "shop", Name: "db"},
			Extensions:            origDst("10.96.0.20:80"),
			EventType:             &flowpb.CiliumEventType{Type: 4, SubType: 5},
			TraceObservationPoint: flowpb.TraceObservationPoint_FROM_ENDPOINT,
			TraceReason:           flowpb.TraceReason_NEW,
			TrafficDirection:      flowpb.TrafficDirection_EGRESS,
			IsReply:               wrapperspb.Bool(false),
			Interface:             &flowpb.NetworkInterface{Index: 9},
			Summary:               "TCP Flags: SYN",
		},
	}, {
		name: "socket LB translation: SOCK flow from the calling pod to the backend",
		ev: events.Event{Type: events.Translate, Dir: events.DirEgress, Proto: unix.IPPROTO_TCP,
			Src: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), Dst: ap("10.244.2.7:5432"),
			ServiceID: 7, VIP: ap("10.96.0.20:5432"), SockCookie: 99, CgroupID: 4242},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_TRANSLATED, Type: flowpb.FlowType_SOCK,
			IP: ipv4("10.244.1.5", "10.244.2.7"), L4: tcp(0, 5432, nil),
			Source: webEP(), Destination: dbEP(),
			DestinationService: &flowpb.Service{Namespace: "shop", Name: "db"},
			Extensions:         origDst("10.96.0.20:5432"),
			EventType:          &flowpb.CiliumEventType{Type: 7, SubType: 2},
			SockXlatePoint:     flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_FWD,
			SocketCookie:       99, CgroupId: 4242,
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			Summary:          "TCP to service 10.96.0.20:5432",
		},
	}, {
		name: "socket LB refusal: no backend at connect()",
		ev: events.Event{Type: events.Drop, Dir: events.DirEgress, Proto: unix.IPPROTO_TCP,
			Src: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), Dst: ap("10.96.0.20:5432"),
			Reason:    158,
			ServiceID: 7, VIP: ap("10.96.0.20:5432"), SockCookie: 98, CgroupID: 4242},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_DROPPED, DropReason: 158, DropReasonDesc: flowpb.DropReason_SERVICE_BACKEND_NOT_FOUND,
			Type: flowpb.FlowType_L3_L4,
			IP:   ipv4("10.244.1.5", "10.96.0.20"), L4: tcp(0, 5432, nil),
			Source: webEP(), Destination: worldEP(),
			DestinationService: &flowpb.Service{Namespace: "shop", Name: "db"},
			Extensions:         origDst("10.96.0.20:5432"),
			EventType:          &flowpb.CiliumEventType{Type: 1, SubType: 158},
			SocketCookie:       98, CgroupId: 4242,
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			Summary:          "TCP to service 10.96.0.20:5432",
		},
	}, {
		name: "unknown event type from a newer datapath",
		ev: events.Event{Type: 9, Dir: events.DirEgress, EndpointID: 12, Proto: unix.IPPROTO_UDP,
			Src: ap("10.244.1.5:1000"), Dst: ap("10.244.2.7:53")},
		want: &flowpb.Flow{
			Type:   flowpb.FlowType_L3_L4,
			IP:     ipv4("10.244.1.5", "10.244.2.7"),
			L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 1000, DestinationPort: 53}}},
			Source: webEP(), Destination: dbEP(),
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			Summary:          "datapath event unknown(9); UDP",
		},
	}, {
		name: "ping from a node: remote-node identity, ICMP echo request",
		ev: events.Event{Type: events.ConnNew, Dir: events.DirIngress, EndpointID: 12, Proto: unix.IPPROTO_ICMP,
			Src: ap("192.168.0.2:17"), Dst: ap("10.244.1.5:0")},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L3_L4,
			IP:     ipv4("192.168.0.2", "10.244.1.5"),
			L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 8}}},
			Source: &flowpb.Endpoint{Identity: 6, Labels: []string{"reserved:remote-node"}}, Destination: webEP(),
			EventType:             &flowpb.CiliumEventType{Type: 4, SubType: 0},
			TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
			TraceReason:           flowpb.TraceReason_NEW,
			TrafficDirection:      flowpb.TrafficDirection_INGRESS,
			IsReply:               wrapperspb.Bool(false),
			Summary:               "ICMPv4 EchoRequest",
		},
	}, {
		name: "SCTP into a pod the agent no longer knows: endpoint ID kept, labels from the identity",
		ev: events.Event{Type: events.ConnNew, Dir: events.DirIngress, EndpointID: 40, Proto: unix.IPPROTO_SCTP,
			Src: ap("10.244.2.7:3868"), Dst: ap("10.244.1.99:3868"), DstIdentity: 301},
		want: &flowpb.Flow{
			Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L3_L4,
			IP:     ipv4("10.244.2.7", "10.244.1.99"),
			L4:     &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{SourcePort: 3868, DestinationPort: 3868}}},
			Source: dbEP(), Destination: &flowpb.Endpoint{ID: 40, Identity: 301, Labels: []string{"k8s:app=db", "k8s:io.kubernetes.pod.namespace=shop"}},
			EventType:             &flowpb.CiliumEventType{Type: 4, SubType: 0},
			TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
			TraceReason:           flowpb.TraceReason_NEW,
			TrafficDirection:      flowpb.TrafficDirection_INGRESS,
			IsReply:               wrapperspb.Bool(false),
			Summary:               "SCTP",
		},
	}}
	c := &Converter{NodeName: "node-a", Version: "test", Enricher: testEnricher()}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.ev.Time = t0
			got := c.Convert(&tt.ev)
			want := tt.want
			want.Time = timestamppb.New(t0)
			want.Emitter = &flowpb.Emitter{Name: "Sluice", Version: "test"}
			want.NodeName = "node-a"
			if !proto.Equal(got, want) {
				t.Errorf("flow differs\n got: %s\nwant: %s", protojson.Format(got), protojson.Format(want))
			}
		})
	}
}

// origDst is the extension of a flow to a service whose client addressed
// the frontend ap.
func origDst(ap string) *anypb.Any {
	f := &flowpb.Flow{}
	SetOriginalDestination(f, netip.MustParseAddrPort(ap))
	return f.Extensions
}

// The original destination survives the trip through JSON, as `sluice
// observe -o json` and `hubble observe -o json` print it, and reads back.
func TestOriginalDestination(t *testing.T) {
	c := &Converter{Enricher: testEnricher()}
	f := c.Convert(&events.Event{Type: events.ConnNew, Dir: events.DirEgress, EndpointID: 12, Proto: unix.IPPROTO_UDP,
		Src: ap("10.244.1.5:40000"), Dst: ap("10.244.2.7:5353"), ServiceID: 7, VIP: ap("10.96.0.10:53")})
	js, err := protojson.Marshal(f)
	require.NoError(t, err)
	require.Contains(t, string(js), `"original_destination"`)
	var back flowpb.Flow
	require.NoError(t, protojson.Unmarshal(js, &back))
	got, ok := OriginalDestination(&back)
	require.True(t, ok)
	require.Equal(t, ap("10.96.0.10:53"), got)

	_, ok = OriginalDestination(c.Convert(&events.Event{Type: events.ConnNew, Dir: events.DirEgress, EndpointID: 12, Proto: unix.IPPROTO_UDP,
		Src: ap("10.244.1.5:40000"), Dst: ap("10.244.2.7:5353")}))
	require.False(t, ok, "not translated: no original destination")
}

// A flow is complete when it is made: deleting the pod afterwards (or
// reusing its address) does not change what was recorded.
func TestConvertResolvesAtEventTime(t *testing.T) {
	e := testEnricher()
	c := &Converter{NodeName: "node-a", Enricher: e}
	s, err := NewStore(4)
	if err != nil {
		t.Fatal(err)
	}
	s.Add(c.Convert(&events.Event{Time: t0, Type: events.ConnNew, Dir: events.DirEgress, EndpointID: 12, Proto: unix.IPPROTO_TCP,
		Src: ap("10.244.1.5:40000"), Dst: ap("10.244.2.7:5432")}))
	delete(e.local, 12)
	delete(e.byIP, webPod.IPs[0])
	delete(e.byIP, dbPod.IPs[0])

	evs, _ := s.Snapshot()
	f := evs[0].Flow()
	if f.GetSource().GetPodName() != "web-7d9f8c6b5d-x2x4q" || f.GetDestination().GetPodName() != "db-0" {
		t.Errorf("stored flow lost its pods after deletion: %v -> %v", f.GetSource(), f.GetDestination())
	}
}

// A pod with no identity labels from the agent still shows its own labels.
func TestConvertLabelsFromPod(t *testing.T) {
	e := &fakeEnricher{local: map[uint32]Endpoint{5: {ID: 5, Identity: 400, Pod: dbPod}}}
	c := &Converter{Enricher: e}
	f := c.Convert(&events.Event{Time: t0, Type: events.ConnNew, Dir: events.DirEgress, EndpointID: 5, Proto: unix.IPPROTO_UDP,
		Src: ap("10.244.2.7:1000"), Dst: ap("198.51.100.1:53")})
	want := []string{"k8s:app=db", "k8s:io.kubernetes.pod.namespace=shop"}
	if got := f.GetSource().GetLabels(); !slices.Equal(got, want) {
		t.Errorf("source labels = %q, want %q", got, want)
	}
	if got := f.GetDestination().GetLabels(); !slices.Equal(got, []string{"reserved:world"}) {
		t.Errorf("destination labels = %q, want reserved:world", got)
	}
}

func TestDropReason(t *testing.T) {
	tests := []struct {
		id   uint16
		want flowpb.DropReason
	}{
		{133, flowpb.DropReason_POLICY_DENIED},
		{158, flowpb.DropReason_SERVICE_BACKEND_NOT_FOUND},
		{177, flowpb.DropReason_DENIED_BY_LB_SRC_RANGE_CHECK},
		{169, flowpb.DropReason_FIB_LOOKUP_FAILED},
		{1000, flowpb.DropReason_DROP_REASON_UNKNOWN},
		{1003, flowpb.DropReason_DROP_REASON_UNKNOWN},
		{1, flowpb.DropReason_DROP_REASON_UNKNOWN}, // not a Hubble reason
	}
	for _, tt := range tests {
		if got := DropReason(tt.id); got != tt.want {
			t.Errorf("DropReason(%d) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

// Every datapath drop reason below the Sluice base must be Hubble's reason
// of the same number: the C enum promises it, and the flow passes the
// number through.
func TestDatapathReasonsAreHubbles(t *testing.T) {
	for id := uint16(1); id < uint16(events.SluiceDropReasonBase); id++ {
		if !events.DropReason(id).Known() {
			continue
		}
		name := events.DropReason(id).String()
		got := DropReason(id)
		if got == flowpb.DropReason_DROP_REASON_UNKNOWN {
			t.Errorf("datapath reason %d (%s) is not a Hubble reason", id, name)
			continue
		}
		if got.String() != name {
			t.Errorf("datapath reason %d is %q, Hubble's is %q", id, name, got)
		}
	}
}
