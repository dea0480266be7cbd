package observer

import (
	"slices"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Sample flows on two nodes, by name:
//
//	web->db    shop/web-…  → shop/db-0          TCP SYN 40000→5432  FORWARDED  trace    egress   node-a
//	world->web 203.0.113.9 → shop/web-…         TCP SYN 51000→22    DROPPED    drop     ingress  node-a
//	web->dns   shop/web-…  → kube-system/core…  UDP 5353→53         FORWARDED  pol.vd.  egress   node-b
//	db->web    shop/db-0   → shop/web-… (IPv6)  TCP SYN,ACK reply   FORWARDED  trace    ingress  node-a
//	ping       remote node → shop/web-…         ICMPv4 echo         FORWARDED  trace    ingress  node-a
func sampleFlows() map[string]*flowpb.Flow {
	web := func() *flowpb.Endpoint {
		return &flowpb.Endpoint{ID: 12, Identity: 300, Namespace: "shop", PodName: "web-7d9f8c6b5d-x2x4q",
			Labels:    []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"},
			Workloads: []*flowpb.Workload{{Kind: "Deployment", Name: "web"}}}
	}
	db := &flowpb.Endpoint{Identity: 301, Namespace: "shop", PodName: "db-0",
		Labels:    []string{"k8s:app=db", "k8s:io.kubernetes.pod.namespace=shop"},
		Workloads: []*flowpb.Workload{{Kind: "StatefulSet", Name: "db"}}}
	dns := &flowpb.Endpoint{Identity: 302, Namespace: "kube-system", PodName: "coredns-5d78c9869d-abcde",
		Labels: []string{"k8s:io.kubernetes.pod.namespace=kube-system", "k8s:k8s-app=kube-dns"}}
	world := &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}
	remote := &flowpb.Endpoint{Identity: 6, Labels: []string{"reserved:remote-node"}}
	tcp := func(s, d uint32, fl *flowpb.TCPFlags) *flowpb.Layer4 {
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: s, DestinationPort: d, Flags: fl}}}
	}
	v4 := func(s, d string) *flowpb.IP {
		return &flowpb.IP{Source: s, Destination: d, IpVersion: flowpb.IPVersion_IPv4}
	}
	return map[string]*flowpb.Flow{
		"web->db": {
			Source: web(), Destination: db, IP: v4("10.244.1.5", "10.244.2.7"),
			L4: tcp(40000, 5432, &flowpb.TCPFlags{SYN: true}), Verdict: flowpb.Verdict_FORWARDED,
			EventType: &flowpb.CiliumEventType{Type: 4, SubType: 5}, TrafficDirection: flowpb.TrafficDirection_EGRESS,
			IsReply: wrapperspb.Bool(false), NodeName: "node-a",
			DestinationService: &flowpb.Service{Namespace: "shop", Name: "db"},
		},
		"world->web": {
			Source: world, Destination: web(), IP: v4("203.0.113.9", "10.244.1.5"),
			L4: tcp(51000, 22, &flowpb.TCPFlags{SYN: true}), Verdict: flowpb.Verdict_DROPPED,
			DropReasonDesc: flowpb.DropReason_POLICY_DENIED,
			EventType:      &flowpb.CiliumEventType{Type: 1, SubType: 133}, TrafficDirection: flowpb.TrafficDirection_INGRESS,
			NodeName: "node-a",
		},
		"web->dns": {
			Source: web(), Destination: dns, IP: v4("10.244.1.5", "10.96.0.10"),
			L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 5353, DestinationPort: 53}}},
			Verdict: flowpb.Verdict_FORWARDED, EventType: &flowpb.CiliumEventType{Type: 5},
			TrafficDirection: flowpb.TrafficDirection_EGRESS, IsReply: wrapperspb.Bool(false), NodeName: "node-b",
		},
		"db->web": {
			Source: db, Destination: web(),
			IP: &flowpb.IP{Source: "fd00::2", Destination: "fd00::1", IpVersion: flowpb.IPVersion_IPv6},
			L4: tcp(5432, 40000, &flowpb.TCPFlags{SYN: true, ACK: true}), Verdict: flowpb.Verdict_FORWARDED,
			EventType: &flowpb.CiliumEventType{Type: 4}, TrafficDirection: flowpb.TrafficDirection_INGRESS,
			IsReply: wrapperspb.Bool(true), NodeName: "node-a",
		},
		"ping": {
			Source: remote, Destination: web(), IP: v4("192.168.0.2", "10.244.1.5"),
			L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 8}}},
			Verdict: flowpb.Verdict_FORWARDED, EventType: &flowpb.CiliumEventType{Type: 4},
			TrafficDirection: flowpb.TrafficDirection_INGRESS, IsReply: wrapperspb.Bool(false), NodeName: "node-a",
		},
	}
}

func TestFilters(t *testing.T) {
	all := []string{"db->web", "ping", "web->db", "web->dns", "world->web"}
	type ff = flowpb.FlowFilter
	tests := []filterCase{
		{name: "no filters", want: all},
		{name: "empty filter matches all", white: []*ff{{}}, want: all},
		{name: "empty blacklist filter excludes all", black: []*ff{{}}, want: nil},

		// Pods and services: namespace/name-prefix, bare names in "default".
		{name: "source pod prefix", white: []*ff{{SourcePod: []string{"shop/web"}}}, want: []string{"web->db", "web->dns"}},
		{name: "pod namespace only", white: []*ff{{SourcePod: []string{"shop/"}}}, want: []string{"db->web", "web->db", "web->dns"}},
		{name: "bare pod name is in default", white: []*ff{{SourcePod: []string{"web"}}}, want: nil},
		{name: "either of two pods", white: []*ff{{DestinationPod: []string{"shop/db", "kube-system/coredns"}}}, want: []string{"web->db", "web->dns"}},
		{name: "pod either way (OR of filters)", white: []*ff{{SourcePod: []string{"shop/db-0"}}, {DestinationPod: []string{"shop/db-0"}}}, want: []string{"db->web", "web->db"}},
		{name: "destination service", white: []*ff{{DestinationService: []string{"shop/db"}}}, want: []string{"web->db"}},

		// AND within a filter, blacklist excludes.
		{name: "pod and verdict", white: []*ff{{DestinationPod: []string{"shop/web"}, Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}, want: []string{"world->web"}},
		{name: "blacklist a pod", black: []*ff{{SourcePod: []string{"shop/web"}}}, want: []string{"db->web", "ping", "world->web"}},
		{name: "whitelist and blacklist", white: []*ff{{DestinationPod: []string{"shop/web"}}}, black: []*ff{{Protocol: []string{"icmp"}}}, want: []string{"db->web", "world->web"}},

		// Labels: Kubernetes selectors, keys with or without their source.
		{name: "label with source", white: []*ff{{SourceLabel: []string{"k8s:app=web"}}}, want: []string{"web->db", "web->dns"}},
		{name: "label without source", white: []*ff{{DestinationLabel: []string{"app=db"}}}, want: []string{"web->db"}},
		{name: "reserved world", white: []*ff{{SourceLabel: []string{"reserved:world"}}}, want: []string{"world->web"}},
		{name: "set-based selector", white: []*ff{{SourceLabel: []string{"k8s:app in (db, web)"}}}, want: []string{"db->web", "web->db", "web->dns"}},
		{name: "label does not exist", white: []*ff{{SourceLabel: []string{"!k8s:app"}}}, want: []string{"ping", "world->web"}},
		{name: "two requirements", white: []*ff{{DestinationLabel: []string{"k8s:io.kubernetes.pod.namespace=kube-system,k8s-app=kube-dns"}}}, want: []string{"web->dns"}},
		{name: "label value not equal", white: []*ff{{SourceLabel: []string{"app!=web,k8s:app"}}}, want: []string{"db->web"}},

		// Addresses, ports, protocols.
		{name: "source ip", white: []*ff{{SourceIp: []string{"10.244.1.5"}}}, want: []string{"web->db", "web->dns"}},
		{name: "destination cidr", white: []*ff{{DestinationIp: []string{"10.96.0.0/12"}}}, want: []string{"web->dns"}},
		{name: "ipv6 address", white: []*ff{{SourceIp: []string{"fd00::2"}}}, want: []string{"db->web"}},
		{name: "ip version", white: []*ff{{IpVersion: []flowpb.IPVersion{flowpb.IPVersion_IPv6}}}, want: []string{"db->web"}},
		{name: "destination port", white: []*ff{{DestinationPort: []string{"53", "22"}}}, want: []string{"web->dns", "world->web"}},
		{name: "source port", white: []*ff{{SourcePort: []string{"5432"}}}, want: []string{"db->web"}},
		{name: "protocol", white: []*ff{{Protocol: []string{"UDP", "icmp"}}}, want: []string{"ping", "web->dns"}},
		{name: "l7 protocol matches nothing", white: []*ff{{Protocol: []string{"http"}}}, want: nil},
		{name: "tcp flags SYN", white: []*ff{{TcpFlags: []*flowpb.TCPFlags{{SYN: true}}}}, want: []string{"db->web", "web->db", "world->web"}},
		{name: "tcp flags SYN+ACK", white: []*ff{{TcpFlags: []*flowpb.TCPFlags{{SYN: true, ACK: true}}}}, want: []string{"db->web"}},

		// Verdicts, reasons, event types, direction, reply.
		{name: "verdict", white: []*ff{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}, want: []string{"world->web"}},
		{name: "drop reason", white: []*ff{{DropReasonDesc: []flowpb.DropReason{flowpb.DropReason_POLICY_DENIED}}}, want: []string{"world->web"}},
		{name: "event type drop", white: []*ff{{EventType: []*flowpb.EventTypeFilter{{Type: 1}}}}, want: []string{"world->web"}},
		{name: "event type policy verdict", white: []*ff{{EventType: []*flowpb.EventTypeFilter{{Type: 5}}}}, want: []string{"web->dns"}},
		{name: "trace from-endpoint only", white: []*ff{{EventType: []*flowpb.EventTypeFilter{{Type: 4, MatchSubType: true, SubType: 5}}}}, want: []string{"web->db"}},
		{name: "traffic direction", white: []*ff{{TrafficDirection: []flowpb.TrafficDirection{flowpb.TrafficDirection_EGRESS}}}, want: []string{"web->db", "web->dns"}},
		{name: "replies", white: []*ff{{Reply: []bool{true}}}, want: []string{"db->web"}},
		{name: "not replies (drops count as not)", white: []*ff{{Reply: []bool{false}}}, want: []string{"ping", "web->db", "web->dns", "world->web"}},

		// Identities, workloads, nodes.
		{name: "source identity", white: []*ff{{SourceIdentity: []uint32{2, 6}}}, want: []string{"ping", "world->web"}},
		{name: "workload kind", white: []*ff{{SourceWorkload: []*flowpb.Workload{{Kind: "Deployment"}}}}, want: []string{"web->db", "web->dns"}},
		{name: "workload name", white: []*ff{{DestinationWorkload: []*flowpb.Workload{{Name: "db"}}}}, want: []string{"web->db"}},
		{name: "node name", white: []*ff{{NodeName: []string{"node-b"}}}, want: []string{"web->dns"}},
		{name: "node name pattern", white: []*ff{{NodeName: []string{"node-*"}}}, want: all},
		{name: "node name in default cluster", white: []*ff{{NodeName: []string{"default/node-a"}}}, want: []string{"db->web", "ping", "web->db", "world->web"}},
		{name: "node name in another cluster", white: []*ff{{NodeName: []string{"other/node-a"}}}, want: nil},

		// Errors name the problem.
		{name: "bad port", white: []*ff{{SourcePort: []string{"http"}}}, wantErrContains: `invalid port "http"`},
		{name: "bad address", white: []*ff{{SourceIp: []string{"10.0.0.300"}}}, wantErrContains: "invalid address"},
		{name: "bad prefix", black: []*ff{{DestinationIp: []string{"10.0.0.0/40"}}}, wantErrContains: "blacklist filter 0: destination_ip: invalid prefix"},
		{name: "bad selector", white: []*ff{{SourceLabel: []string{"app in (web"}}}, wantErrContains: "invalid label selector"},
		{name: "empty pod", white: []*ff{{}, {SourcePod: []string{""}}}, wantErrContains: "whitelist filter 1: source_pod: empty name"},
		{name: "unknown protocol", white: []*ff{{Protocol: []string{"quic"}}}, wantErrContains: `unknown protocol "quic"`},
		{name: "bad node pattern", white: []*ff{{NodeName: []string{"a/b/c"}}}, wantErrContains: "invalid node name pattern"},
		{name: "unsupported field", white: []*ff{{SourceFqdn: []string{"example.com"}}}, wantErrContains: "field source_fqdn is not supported"},
	}
	checkFilters(t, sampleFlows(), tests)
}

// L7 flows of the node's proxy, beside the sample flows:
//
//	get     shop/web-… → shop/db-0  GET http://db.shop:8080/api/items?limit=5  200  FORWARDED
//	delete  shop/web-… → shop/db-0  DELETE http://db.shop:8080/api/items/7     403  DROPPED
//	request shop/web-… → shop/db-0  POST http://db.shop:8080/api/items         no response
func l7Flows() map[string]*flowpb.Flow {
	flows := sampleFlows()
	l7 := func(method, url string, code uint32, v flowpb.Verdict, headers ...*flowpb.HTTPHeader) *flowpb.Flow {
		f := proto.CloneOf(flows["web->db"])
		f.Type, f.Verdict, f.EventType = flowpb.FlowType_L7, v, &flowpb.CiliumEventType{Type: 129}
		f.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
			Code: code, Method: method, Url: url, Protocol: "HTTP/1.1", Headers: headers}}}
		return f
	}
	flows["get"] = l7("GET", "http://db.shop:8080/api/items?limit=5", 200, flowpb.Verdict_FORWARDED,
		&flowpb.HTTPHeader{Key: "x-request-id", Value: "r-1"})
	flows["get"].TraceContext = &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: "4bf92f3577b34da6a3ce929d0e0e4736"}}
	flows["delete"] = l7("DELETE", "http://db.shop:8080/api/items/7", 403, flowpb.Verdict_DROPPED,
		&flowpb.HTTPHeader{Key: "x-request-id", Value: "r-2"})
	flows["request"] = l7("POST", "http://db.shop:8080/api/items", 0, flowpb.Verdict_FORWARDED)
	flows["request"].L7.Type = flowpb.L7FlowType_REQUEST
	return flows
}

// The HTTP filters select what Hubble's select, with Hubble's syntax
// (status codes and prefixes, methods in any case, path and URL regular
// expressions) and its rule that they go with l7 event types only.
func TestHTTPFilters(t *testing.T) {
	type ff = flowpb.FlowFilter
	l7 := []*flowpb.EventTypeFilter{{Type: 129}}
	tests := []filterCase{
		{name: "event type l7", white: []*ff{{EventType: l7}}, want: []string{"delete", "get", "request"}},
		{name: "protocol http", white: []*ff{{Protocol: []string{"http"}}}, want: []string{"delete", "get", "request"}},
		{name: "status code", white: []*ff{{HttpStatusCode: []string{"403"}}}, want: []string{"delete"}},
		{name: "status prefix", white: []*ff{{HttpStatusCode: []string{"2+", "40+"}, EventType: l7}}, want: []string{"delete", "get"}},
		{name: "status 5xx", white: []*ff{{HttpStatusCode: []string{"5+"}}}, want: nil},
		{name: "method any case", white: []*ff{{HttpMethod: []string{"get", "POST"}}}, want: []string{"get", "request"}},
		{name: "not the method", white: []*ff{{EventType: l7}}, black: []*ff{{HttpMethod: []string{"GET"}}}, want: []string{"delete", "request"}},
		{name: "path regexp", white: []*ff{{HttpPath: []string{"^/api/items/[0-9]+$"}}}, want: []string{"delete"}},
		{name: "path leaves the query out", white: []*ff{{HttpPath: []string{"limit"}}}, want: nil},
		{name: "url regexp sees the query", white: []*ff{{HttpUrl: []string{"limit=5"}}}, want: []string{"get"}},
		{name: "header", white: []*ff{{HttpHeader: []*flowpb.HTTPHeader{{Key: "x-request-id", Value: "r-2"}}}}, want: []string{"delete"}},
		{name: "trace id", white: []*ff{{TraceId: []string{"4bf92f3577b34da6a3ce929d0e0e4736"}}}, want: []string{"get"}},
		{name: "method and pod", white: []*ff{{HttpMethod: []string{"DELETE"}, SourcePod: []string{"shop/web"}, Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}, want: []string{"delete"}},

		{name: "http field with another event type", white: []*ff{{HttpMethod: []string{"GET"}, EventType: []*flowpb.EventTypeFilter{{Type: 4}}}},
			wantErrContains: "whitelist filter 0: http_method: HTTP filters need the event type filter to match l7 events"},
		{name: "bad status", white: []*ff{{HttpStatusCode: []string{"600"}}}, wantErrContains: `http_status_code: invalid status code "600"`},
		{name: "bad path", black: []*ff{{HttpPath: []string{"("}}}, wantErrContains: "blacklist filter 0: http_path: invalid regular expression"},
	}
	checkFilters(t, l7Flows(), tests)
}

// filterCase is a request's filters and the names of the flows they let
// through (sorted), or the error they fail with.
type filterCase struct {
	name            string
	white, black    []*flowpb.FlowFilter
	want            []string
	wantErrContains string
}

func checkFilters(t *testing.T, flows map[string]*flowpb.Flow, tests []filterCase) {
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := CompileFilters(tt.white, tt.black)
			if tt.wantErrContains != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrContains) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErrContains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for name, f := range flows {
				if fs.Match(f) {
					got = append(got, name)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("matched %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTranslateSelector(t *testing.T) {
	for in, want := range map[string]string{
		"app=web":                      "any.app=web",
		"k8s:app=web":                  "k8s.app=web",
		"reserved:world":               "reserved.world",
		"!k8s:app":                     "!k8s.app",
		"k8s:app in (a, b),env!=prod":  "k8s.app in (a, b),any.env!=prod",
		"app notin (x,y), k8s:tier==1": "any.app notin (x,y),k8s.tier==1",
	} {
		if got := translateSelector(in); got != want {
			t.Errorf("translateSelector(%q) = %q, want %q", in, got, want)
		}
	}
}
