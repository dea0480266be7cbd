package k8sconv

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	npv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/model"
)

// NamespaceNameLabel is set by the API server on every namespace; namespace
// selectors match on it, so sources that bypass the API server set it too.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// ServiceNameLabel links an endpoint slice to its service.
const ServiceNameLabel = "kubernetes.io/service-name"

// Service annotation prefixes that are kept in the model.
var serviceAnnotationPrefixes = []string{"sluice.io/", "service.kubernetes.io/"}

// Default session affinity timeout, as in Kubernetes (3 hours).
const defaultAffinityTimeoutSeconds = 10800

func checkMeta(m *metav1.ObjectMeta, namespaced bool) error {
	if m.Name == "" {
		return required("metadata.name")
	}
	if namespaced && m.Namespace == "" {
		return required("metadata.namespace")
	}
	return nil
}

// cloneLabels copies so the model never aliases the caller's maps (informer
// caches are shared), and returns nil for empty maps to keep equality simple.
func cloneLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// Object converts a pointer to one of the supported k8s.io/api types.
func Object(obj any) (model.Object, error) {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return Namespace(o)
	case *corev1.Pod:
		return Pod(o)
	case *corev1.Service:
		return Service(o)
	case *discoveryv1.EndpointSlice:
		return EndpointSlice(o)
	case *networkingv1.NetworkPolicy:
		return NetworkPolicy(o)
	case *corev1.Node:
		return Node(o)
	case *v1alpha1.SluiceL7Policy:
		return L7Policy(o)
	case *npv1alpha2.ClusterNetworkPolicy:
		return ClusterNetworkPolicy(o)
	}
	return nil, fmt.Errorf("unsupported object type %T", obj)
}

// Namespace converts a namespace and sets the kubernetes.io/metadata.name
// label to its name, overriding any other value as the API server does.
func Namespace(in *corev1.Namespace) (*model.Namespace, error) {
	if err := checkMeta(&in.ObjectMeta, false); err != nil {
		return nil, err
	}
	labels := maps.Clone(in.Labels)
	if labels == nil {
		labels = make(map[string]string, 1)
	}
	labels[NamespaceNameLabel] = in.Name
	out := &model.Namespace{Name: in.Name, Labels: labels}
	for k, v := range in.Annotations {
		if strings.HasPrefix(k, "sluice.io/") {
			if out.Annotations == nil {
				out.Annotations = make(map[string]string)
			}
			out.Annotations[k] = v
		}
	}
	return out, nil
}

func protocol(field string, p corev1.Protocol) (model.Protocol, error) {
	switch p {
	case "":
		return model.ProtocolTCP, nil
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		return model.Protocol(p), nil
	}
	return "", fieldErrorf(field, "unsupported protocol %q (want TCP, UDP or SCTP)", p)
}

func parseAddr(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fieldErrorf(field, "invalid IP address %q", s)
	}
	// Kubernetes writes IPv4 as dotted quads, but a v4-mapped form must not
	// make the same address look different to the datapath.
	return a.Unmap(), nil
}

func parsePrefix(field, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fieldErrorf(field, "invalid CIDR %q", s)
	}
	// The API server accepts (and older versions stored) CIDRs with host
	// bits set, e.g. 10.0.0.1/24; they mean the masked network.
	return p.Masked(), nil
}

func appendUniqueAddr(list []netip.Addr, a netip.Addr) []netip.Addr {
	if slices.Contains(list, a) {
		return list
	}
	return append(list, a)
}

var podPhases = map[corev1.PodPhase]model.PodPhase{
	"":                         model.PodPending,
	corev1.PodPending:          model.PodPending,
	corev1.PodRunning:          model.PodRunning,
	corev1.PodSucceeded:        model.PodSucceeded,
	corev1.PodFailed:           model.PodFailed,
	corev1.PodPhase("Unknown"): model.PodUnknown,
}

// Pod converts a pod.
func Pod(in *corev1.Pod) (*model.Pod, error) {
	if err := checkMeta(&in.ObjectMeta, true); err != nil {
		return nil, err
	}
	phase, ok := podPhases[in.Status.Phase]
	if !ok {
		return nil, fieldErrorf("status.phase", "unknown phase %q", in.Status.Phase)
	}
	out := &model.Pod{
		Namespace:   in.Namespace,
		Name:        in.Name,
		UID:         string(in.UID),
		Labels:      cloneLabels(in.Labels),
		NodeName:    in.Spec.NodeName,
		HostNetwork: in.Spec.HostNetwork,
		Phase:       phase,
	}
	if in.Status.PodIP != "" {
		a, err := parseAddr("status.podIP", in.Status.PodIP)
		if err != nil {
			return nil, err
		}
		out.IPs = append(out.IPs, a)
	}
	for i, ip := range in.Status.PodIPs {
		a, err := parseAddr(idx("status.podIPs", i)+".ip", ip.IP)
		if err != nil {
			return nil, err
		}
		out.IPs = appendUniqueAddr(out.IPs, a)
	}
	addPorts := func(field string, containers []corev1.Container, sidecarsOnly bool) error {
		for i, c := range containers {
			// Only restartable init containers (native sidecars) keep
			// serving; ports of run-to-completion init containers never
			// receive traffic.
			if sidecarsOnly && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
				continue
			}
			for j, p := range c.Ports {
				f := idx(idx(field, i)+".ports", j)
				num, err := portNumber(f+".containerPort", p.ContainerPort)
				if err != nil {
					return err
				}
				proto, err := protocol(f+".protocol", p.Protocol)
				if err != nil {
					return err
				}
				out.Ports = append(out.Ports, model.ContainerPort{Name: p.Name, Port: num, Protocol: proto})
			}
		}
		return nil
	}
	if err := addPorts("spec.initContainers", in.Spec.InitContainers, true); err != nil {
		return nil, err
	}
	if err := addPorts("spec.containers", in.Spec.Containers, false); err != nil {
		return nil, err
	}
	for i, o := range in.OwnerReferences {
		f := idx("metadata.ownerReferences", i)
		if o.Kind == "" {
			return nil, required(f + ".kind")
		}
		if o.Name == "" {
			return nil, required(f + ".name")
		}
		out.Owners = append(out.Owners, model.OwnerRef{
			Kind:       o.Kind,
			Name:       o.Name,
			Controller: o.Controller != nil && *o.Controller,
		})
	}
	return out, nil
}

// Service converts a service.
func Service(in *corev1.Service) (*model.Service, error) {
	if err := checkMeta(&in.ObjectMeta, true); err != nil {
		return nil, err
	}
	out := &model.Service{
		Namespace: in.Namespace,
		Name:      in.Name,
		Labels:    cloneLabels(in.Labels),
		Selector:  cloneLabels(in.Spec.Selector),
	}
	for k, v := range in.Annotations {
		for _, p := range serviceAnnotationPrefixes {
			if strings.HasPrefix(k, p) {
				if out.Annotations == nil {
					out.Annotations = make(map[string]string)
				}
				out.Annotations[k] = v
			}
		}
	}

	switch t := in.Spec.Type; t {
	case "":
		out.Type = model.ServiceTypeClusterIP
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
		out.Type = model.ServiceType(t)
	default:
		return nil, fieldErrorf("spec.type", "unsupported service type %q", t)
	}

	addIP := func(field, s string) error {
		if s == "" {
			return nil
		}
		if s == corev1.ClusterIPNone {
			out.Headless = true
			return nil
		}
		a, err := parseAddr(field, s)
		if err != nil {
			return err
		}
		out.ClusterIPs = appendUniqueAddr(out.ClusterIPs, a)
		return nil
	}
	if err := addIP("spec.clusterIP", in.Spec.ClusterIP); err != nil {
		return nil, err
	}
	for i, s := range in.Spec.ClusterIPs {
		if err := addIP(idx("spec.clusterIPs", i), s); err != nil {
			return nil, err
		}
	}
	if out.Headless && len(out.ClusterIPs) > 0 {
		return nil, fieldErrorf("spec.clusterIPs", "cannot mix %q with IP addresses", corev1.ClusterIPNone)
	}

	for i, p := range in.Spec.Ports {
		f := idx("spec.ports", i)
		num, err := portNumber(f+".port", p.Port)
		if err != nil {
			return nil, err
		}
		proto, err := protocol(f+".protocol", p.Protocol)
		if err != nil {
			return nil, err
		}
		target, err := portRef(f+".targetPort", p.TargetPort)
		if err != nil {
			return nil, err
		}
		if target.IsZero() {
			target = model.PortNumber(num)
		}
		var nodePort uint16
		if p.NodePort != 0 {
			if nodePort, err = portNumber(f+".nodePort", p.NodePort); err != nil {
				return nil, err
			}
		}
		out.Ports = append(out.Ports, model.ServicePort{
			Name: p.Name, Protocol: proto, Port: num, TargetPort: target, NodePort: nodePort,
		})
	}

	switch a := in.Spec.SessionAffinity; a {
	case "", corev1.ServiceAffinityNone:
		out.SessionAffinity = model.SessionAffinityNone
	case corev1.ServiceAffinityClientIP:
		out.SessionAffinity = model.SessionAffinityClientIP
		out.SessionAffinityTimeoutSeconds = defaultAffinityTimeoutSeconds
		if c := in.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			t := *c.ClientIP.TimeoutSeconds
			if t < 1 || t > 86400 {
				return nil, fieldErrorf("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%d is out of range 1-86400", t)
			}
			out.SessionAffinityTimeoutSeconds = uint32(t)
		}
	default:
		return nil, fieldErrorf("spec.sessionAffinity", "unsupported session affinity %q", a)
	}

	etp, err := trafficPolicy("spec.externalTrafficPolicy", string(in.Spec.ExternalTrafficPolicy))
	if err != nil {
		return nil, err
	}
	// The API server defaults the policy for every service that can take
	// external traffic, ClusterIP services with externalIPs included.
	if out.Type == model.ServiceTypeNodePort || out.Type == model.ServiceTypeLoadBalancer || len(in.Spec.ExternalIPs) > 0 {
		if etp == "" {
			etp = model.TrafficPolicyCluster
		}
		out.ExternalTrafficPolicy = etp
	}
	for i, a := range in.Spec.ExternalIPs {
		ip, err := parseAddr(idx("spec.externalIPs", i), a)
		if err != nil {
			return nil, err
		}
		out.ExternalIPs = appendUniqueAddr(out.ExternalIPs, ip)
	}
	for i, ing := range in.Status.LoadBalancer.Ingress {
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode != corev1.LoadBalancerIPModeVIP) {
			continue
		}
		ip, err := parseAddr(idx("status.loadBalancer.ingress", i)+".ip", ing.IP)
		if err != nil {
			return nil, err
		}
		out.LoadBalancerIPs = appendUniqueAddr(out.LoadBalancerIPs, ip)
	}
	for i, r := range in.Spec.LoadBalancerSourceRanges {
		p, err := netip.ParsePrefix(strings.TrimSpace(r))
		if err != nil {
			return nil, fieldErrorf(idx("spec.loadBalancerSourceRanges", i), "%q is not a CIDR", r)
		}
		out.LoadBalancerSourceRanges = append(out.LoadBalancerSourceRanges, p.Masked())
	}
	if in.Spec.HealthCheckNodePort != 0 {
		hc, err := portNumber("spec.healthCheckNodePort", in.Spec.HealthCheckNodePort)
		if err != nil {
			return nil, err
		}
		out.HealthCheckNodePort = hc
	}
	var itpIn string
	if in.Spec.InternalTrafficPolicy != nil {
		itpIn = string(*in.Spec.InternalTrafficPolicy)
	}
	itp, err := trafficPolicy("spec.internalTrafficPolicy", itpIn)
	if err != nil {
		return nil, err
	}
	if out.Type != model.ServiceTypeExternalName {
		if itp == "" {
			itp = model.TrafficPolicyCluster
		}
		out.InternalTrafficPolicy = itp
	}
	return out, nil
}

func trafficPolicy(field, s string) (model.TrafficPolicy, error) {
	switch model.TrafficPolicy(s) {
	case "", model.TrafficPolicyCluster, model.TrafficPolicyLocal:
		return model.TrafficPolicy(s), nil
	}
	return "", fieldErrorf(field, "unsupported traffic policy %q (want Cluster or Local)", s)
}

func portRef(field string, v intstr.IntOrString) (model.PortRef, error) {
	if v.Type == intstr.String {
		if v.StrVal == "" {
			return model.PortRef{}, nil
		}
		return model.PortName(v.StrVal), nil
	}
	if v.IntVal == 0 {
		return model.PortRef{}, nil
	}
	n, err := portNumber(field, v.IntVal)
	if err != nil {
		return model.PortRef{}, err
	}
	return model.PortNumber(n), nil
}

// EndpointSlice converts an endpoint slice. Conditions are resolved as
// documented on model.Endpoint.
func EndpointSlice(in *discoveryv1.EndpointSlice) (*model.EndpointSlice, error) {
	if err := checkMeta(&in.ObjectMeta, true); err != nil {
		return nil, err
	}
	out := &model.EndpointSlice{
		Namespace:   in.Namespace,
		Name:        in.Name,
		ServiceName: in.Labels[ServiceNameLabel],
	}
	switch at := in.AddressType; at {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
		out.AddressType = model.AddressType(at)
	case "":
		return nil, required("addressType")
	default:
		return nil, fieldErrorf("addressType", "unsupported address type %q (want IPv4, IPv6 or FQDN)", at)
	}
	for i, p := range in.Ports {
		f := idx("ports", i)
		var ep model.EndpointPort
		if p.Name != nil {
			ep.Name = *p.Name
		}
		var proto corev1.Protocol
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		var err error
		if ep.Protocol, err = protocol(f+".protocol", proto); err != nil {
			return nil, err
		}
		if p.Port != nil {
			if ep.Port, err = portNumber(f+".port", *p.Port); err != nil {
				return nil, err
			}
		}
		out.Ports = append(out.Ports, ep)
	}
	for i, e := range in.Endpoints {
		f := idx("endpoints", i)
		var me model.Endpoint
		if out.AddressType != model.AddressTypeFQDN {
			for j, s := range e.Addresses {
				af := idx(f+".addresses", j)
				a, err := parseAddr(af, s)
				if err != nil {
					return nil, err
				}
				if a.Is4() != (out.AddressType == model.AddressTypeIPv4) {
					return nil, fieldErrorf(af, "address %s does not match addressType %s", a, out.AddressType)
				}
				me.Addresses = appendUniqueAddr(me.Addresses, a)
			}
		}
		c := e.Conditions
		me.Ready = c.Ready == nil || *c.Ready
		me.Serving = me.Ready
		if c.Serving != nil {
			me.Serving = *c.Serving
		}
		me.Terminating = c.Terminating != nil && *c.Terminating
		if e.NodeName != nil {
			me.NodeName = *e.NodeName
		}
		if e.Zone != nil {
			me.Zone = *e.Zone
		}
		if r := e.TargetRef; r != nil {
			ns := r.Namespace
			if ns == "" {
				ns = in.Namespace
			}
			me.TargetRef = &model.TargetRef{Kind: r.Kind, Namespace: ns, Name: r.Name}
		}
		out.Endpoints = append(out.Endpoints, me)
	}
	return out, nil
}

// LabelSelector converts a label selector, rejecting unknown operators and
// value lists that do not fit the operator (as API validation does), because
// a misread selector silently widens or narrows policy.
func LabelSelector(field string, in *metav1.LabelSelector) (*model.LabelSelector, error) {
	if in == nil {
		return nil, nil
	}
	out := &model.LabelSelector{MatchLabels: cloneLabels(in.MatchLabels)}
	for i, r := range in.MatchExpressions {
		f := idx(field+".matchExpressions", i)
		if r.Key == "" {
			return nil, required(f + ".key")
		}
		op := model.SelectorOperator(r.Operator)
		switch op {
		case model.SelectorOpIn, model.SelectorOpNotIn:
			if len(r.Values) == 0 {
				return nil, fieldErrorf(f+".values", "must be non-empty for operator %s", op)
			}
		case model.SelectorOpExists, model.SelectorOpDoesNotExist:
			if len(r.Values) != 0 {
				return nil, fieldErrorf(f+".values", "must be empty for operator %s", op)
			}
		default:
			return nil, fieldErrorf(f+".operator", "invalid operator %q (want In, NotIn, Exists or DoesNotExist)", r.Operator)
		}
		out.MatchExpressions = append(out.MatchExpressions, model.SelectorRequirement{
			Key: r.Key, Operator: op, Values: slices.Clone(r.Values),
		})
	}
	return out, nil
}

// NetworkPolicy converts a network policy and defaults policyTypes as the API
// server does: Ingress always, plus Egress when there are egress rules.
func NetworkPolicy(in *networkingv1.NetworkPolicy) (*model.NetworkPolicy, error) {
	if err := checkMeta(&in.ObjectMeta, true); err != nil {
		return nil, err
	}
	sel, err := LabelSelector("spec.podSelector", &in.Spec.PodSelector)
	if err != nil {
		return nil, err
	}
	out := &model.NetworkPolicy{Namespace: in.Namespace, Name: in.Name, PodSelector: *sel}
	seen := map[model.PolicyType]bool{}
	for i, t := range in.Spec.PolicyTypes {
		pt := model.PolicyType(t)
		if pt != model.PolicyTypeIngress && pt != model.PolicyTypeEgress {
			return nil, fieldErrorf(idx("spec.policyTypes", i), "unsupported policy type %q (want Ingress or Egress)", t)
		}
		if !seen[pt] {
			seen[pt] = true
			out.PolicyTypes = append(out.PolicyTypes, pt)
		}
	}
	if len(out.PolicyTypes) == 0 {
		out.PolicyTypes = []model.PolicyType{model.PolicyTypeIngress}
		if len(in.Spec.Egress) > 0 {
			out.PolicyTypes = append(out.PolicyTypes, model.PolicyTypeEgress)
		}
	}
	for i, r := range in.Spec.Ingress {
		f := idx("spec.ingress", i)
		rule, err := policyRule(f, f+".from", r.From, r.Ports)
		if err != nil {
			return nil, err
		}
		out.Ingress = append(out.Ingress, rule)
	}
	for i, r := range in.Spec.Egress {
		f := idx("spec.egress", i)
		rule, err := policyRule(f, f+".to", r.To, r.Ports)
		if err != nil {
			return nil, err
		}
		out.Egress = append(out.Egress, rule)
	}
	return out, nil
}

func policyRule(field, peersField string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) (model.Rule, error) {
	var out model.Rule
	for i, p := range peers {
		f := idx(peersField, i)
		var mp model.Peer
		var err error
		if mp.PodSelector, err = LabelSelector(f+".podSelector", p.PodSelector); err != nil {
			return out, err
		}
		if mp.NamespaceSelector, err = LabelSelector(f+".namespaceSelector", p.NamespaceSelector); err != nil {
			return out, err
		}
		if b := p.IPBlock; b != nil {
			if mp.PodSelector != nil || mp.NamespaceSelector != nil {
				return out, fieldErrorf(f, "ipBlock cannot be combined with podSelector or namespaceSelector")
			}
			cidr, err := parsePrefix(f+".ipBlock.cidr", b.CIDR)
			if err != nil {
				return out, err
			}
			mb := &model.IPBlock{CIDR: cidr}
			for j, e := range b.Except {
				ef := idx(f+".ipBlock.except", j)
				ep, err := parsePrefix(ef, e)
				if err != nil {
					return out, err
				}
				if ep.Addr().Is4() != cidr.Addr().Is4() || ep.Bits() < cidr.Bits() || !cidr.Contains(ep.Addr()) {
					return out, fieldErrorf(ef, "%s is not within cidr %s", ep, cidr)
				}
				mb.Except = append(mb.Except, ep)
			}
			mp.IPBlock = mb
		} else if mp.PodSelector == nil && mp.NamespaceSelector == nil {
			return out, fieldErrorf(f, "must specify podSelector, namespaceSelector or ipBlock")
		}
		out.Peers = append(out.Peers, mp)
	}
	for i, p := range ports {
		f := idx(field+".ports", i)
		var mp model.PolicyPort
		var proto corev1.Protocol
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		var err error
		if mp.Protocol, err = protocol(f+".protocol", proto); err != nil {
			return out, err
		}
		if p.Port != nil {
			if mp.Port, err = portRef(f+".port", *p.Port); err != nil {
				return out, err
			}
		}
		if p.EndPort != nil {
			if mp.Port.Number == 0 {
				return out, fieldErrorf(f+".endPort", "requires a numeric port")
			}
			end, err := portNumber(f+".endPort", *p.EndPort)
			if err != nil {
				return out, err
			}
			if end < mp.Port.Number {
				return out, fieldErrorf(f+".endPort", "%d is less than port %d", end, mp.Port.Number)
			}
			mp.EndPort = end
		}
		out.Ports = append(out.Ports, mp)
	}
	return out, nil
}

// Node converts a node.
func Node(in *corev1.Node) (*model.Node, error) {
	if err := checkMeta(&in.ObjectMeta, false); err != nil {
		return nil, err
	}
	out := &model.Node{Name: in.Name, Labels: cloneLabels(in.Labels)}
	for i, a := range in.Status.Addresses {
		f := idx("status.addresses", i)
		if a.Type == "" {
			return nil, required(f + ".type")
		}
		if a.Address == "" {
			return nil, required(f + ".address")
		}
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			if _, err := parseAddr(f+".address", a.Address); err != nil {
				return nil, err
			}
		}
		out.Addresses = append(out.Addresses, model.NodeAddress{Type: model.NodeAddressType(a.Type), Address: a.Address})
	}
	addCIDR := func(field, s string) error {
		if s == "" {
			return nil
		}
		p, err := parsePrefix(field, s)
		if err != nil {
			return err
		}
		if !slices.Contains(out.PodCIDRs, p) {
			out.PodCIDRs = append(out.PodCIDRs, p)
		}
		return nil
	}
	if err := addCIDR("spec.podCIDR", in.Spec.PodCIDR); err != nil {
		return nil, err
	}
	for i, s := range in.Spec.PodCIDRs {
		if err := addCIDR(idx("spec.podCIDRs", i), s); err != nil {
			return nil, err
		}
	}
	return out, nil
}
