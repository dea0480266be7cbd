package service

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/sluice-net/sluice/pkg/model"
)

const ns = "default"

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func ips(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, ip(s))
	}
	return out
}

// svc returns a ClusterIP service with one TCP port 80 → 8080 named "http";
// mods adjust it.
func svc(name, clusterIP string, mods ...func(*model.Service)) *model.Service {
	s := &model.Service{
		Namespace:             ns,
		Name:                  name,
		Type:                  model.ServiceTypeClusterIP,
		ClusterIPs:            ips(clusterIP),
		Ports:                 []model.ServicePort{{Name: "http", Protocol: model.ProtocolTCP, Port: 80, TargetPort: model.PortNumber(8080)}},
		Selector:              map[string]string{"app": name},
		SessionAffinity:       model.SessionAffinityNone,
		InternalTrafficPolicy: model.TrafficPolicyCluster,
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func withPorts(p ...model.ServicePort) func(*model.Service) {
	return func(s *model.Service) { s.Ports = p }
}

func withType(t model.ServiceType, nodePort uint16) func(*model.Service) {
	return func(s *model.Service) {
		s.Type = t
		s.ExternalTrafficPolicy = model.TrafficPolicyCluster
		for i := range s.Ports {
			s.Ports[i].NodePort = nodePort + uint16(i)
		}
	}
}

func withETPLocal(s *model.Service) { s.ExternalTrafficPolicy = model.TrafficPolicyLocal }
func withITPLocal(s *model.Service) { s.InternalTrafficPolicy = model.TrafficPolicyLocal }

func withAnnotation(k, v string) func(*model.Service) {
	return func(s *model.Service) { s.Annotations = map[string]string{k: v} }
}

// slice returns an IPv4 slice for service svcName with one TCP port "http"
// 8080, unless ports are given.
func slice(name, svcName string, eps []model.Endpoint, ports ...model.EndpointPort) *model.EndpointSlice {
	if ports == nil {
		ports = []model.EndpointPort{{Name: "http", Protocol: model.ProtocolTCP, Port: 8080}}
	}
	return &model.EndpointSlice{
		Namespace:   ns,
		Name:        name,
		ServiceName: svcName,
		AddressType: model.AddressTypeIPv4,
		Ports:       ports,
		Endpoints:   eps,
	}
}

// Endpoint condition shorthands.
const (
	ready       = "ready"       // ready, serving
	termServing = "termServing" // terminating, still serving
	termGone    = "termGone"    // terminating, not serving
	notReady    = "notReady"    // neither ready nor terminating
)

func ep(addr, node, cond string) model.Endpoint {
	e := model.Endpoint{
		Addresses: ips(addr),
		NodeName:  node,
		TargetRef: &model.TargetRef{Kind: "Pod", Namespace: ns, Name: "pod-" + addr},
	}
	switch cond {
	case ready:
		e.Ready, e.Serving = true, true
	case termServing:
		e.Serving, e.Terminating = true, true
	case termGone:
		e.Terminating = true
	case notReady:
	default:
		panic(cond)
	}
	return e
}

func state(objs ...model.Object) *model.State {
	s := &model.State{}
	for _, o := range objs {
		s.Upsert(o)
	}
	return s
}

// summary renders frontends compactly, e.g.
// "default/web:http ClusterIP 10.96.0.1:80/TCP -> 10.0.0.1:8080 A, 10.0.0.2:8080 T".
// Flags: local (traffic policy Local), noep, nolocal, affinity=N, alg.
func summary(d *Desired) []string {
	var out []string
	for _, f := range d.Frontends {
		var b strings.Builder
		b.WriteString(f.String())
		if f.Algorithm != AlgorithmRandom {
			b.WriteString(" " + string(f.Algorithm))
		}
		if f.TrafficPolicyLocal {
			b.WriteString(" local")
		}
		if f.SessionAffinity {
			fmt.Fprintf(&b, " affinity=%d", f.AffinityTimeout)
		}
		if f.NoEndpoints {
			b.WriteString(" noep")
		}
		if f.NoLocalEndpoints {
			b.WriteString(" nolocal")
		}
		for i, be := range f.Backends {
			if i == 0 {
				b.WriteString(" ->")
			} else {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %s %c", netip.AddrPortFrom(be.Address, be.Port), be.State[0])
		}
		out = append(out, b.String())
	}
	return out
}
