package flow

import (
	"net/netip"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/model"
)

func TestConnectionOf(t *testing.T) {
	web := &flowpb.Endpoint{Namespace: "shop", PodName: "web-1", Labels: []string{"k8s:app=web"}}
	db := &flowpb.Endpoint{Namespace: "shop", PodName: "db-0", Labels: []string{"k8s:app=db"}}
	tcp := func(sport, dport uint32) *flowpb.Layer4 {
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport}}}
	}
	ip := &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2"}
	for _, tc := range []struct {
		name   string
		f      *flowpb.Flow
		ok     bool
		client string
		server string
		port   uint16
	}{
		{"new connection", &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED, IP: ip, L4: tcp(40000, 5432), Source: web, Destination: db,
			IsReply: wrapperspb.Bool(false)}, true, "web-1", "db-0", 5432},
		{"audited: policy would deny it, it went through", &flowpb.Flow{Verdict: flowpb.Verdict_AUDIT, IP: ip, L4: tcp(40000, 5432),
			Source: web, Destination: db}, true, "web-1", "db-0", 5432},
		{"a reply is turned around", &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED, IP: &flowpb.IP{Source: "10.0.0.2", Destination: "10.0.0.1"},
			L4: tcp(5432, 40000), Source: db, Destination: web, IsReply: wrapperspb.Bool(true)}, true, "web-1", "db-0", 5432},
		{"a drop is no connection", &flowpb.Flow{Verdict: flowpb.Verdict_DROPPED, IP: ip, L4: tcp(40000, 5432)}, false, "", "", 0},
		{"a socket-LB translation is not", &flowpb.Flow{Verdict: flowpb.Verdict_TRANSLATED, IP: ip, L4: tcp(0, 5432)}, false, "", "", 0},
		{"nor ICMP", &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED, IP: ip, L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{}}}}, false, "", "", 0},
		{"nor an L7 request", &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED, IP: ip, L4: tcp(40000, 80), L7: &flowpb.Layer7{}}, false, "", "", 0},
		{"nor a flow without addresses", &flowpb.Flow{Verdict: flowpb.Verdict_FORWARDED, L4: tcp(40000, 80)}, false, "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := ConnectionOf(tc.f)
			require.Equal(t, tc.ok, ok)
			if !ok {
				return
			}
			require.Equal(t, tc.client, c.Client.Endpoint.GetPodName())
			require.Equal(t, tc.server, c.Server.Endpoint.GetPodName())
			require.Equal(t, tc.port, c.Port)
			require.Equal(t, model.ProtocolTCP, c.Protocol)
			require.Equal(t, ConnectionKey{Client: netip.MustParseAddrPort("10.0.0.1:40000"), Server: netip.MustParseAddrPort("10.0.0.2:5432"),
				Protocol: model.ProtocolTCP}, c.Key(), "both directions of a connection have one key")
		})
	}
}
