package k8s

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// keptAnnotationPrefixes are the only annotations the informer caches keep,
// on every kind. k8sconv reads sluice.io/ on namespaces and services and
// service.kubernetes.io/ on services; everything else (kubectl's
// last-applied-configuration, Prometheus and CNI annotations, ...) is
// often the largest part of an object's metadata and Sluice never reads it.
var keptAnnotationPrefixes = []string{"sluice.io/", "service.kubernetes.io/"}

// slim is the informers' transform (cache.TransformFunc). It replaces each
// object by a copy holding only what k8sconv reads, so the caches of a large
// cluster cost a fraction of the full objects. The copy is built from an
// allow-list rather than by clearing known-large fields, so fields that
// future API versions add are dropped too; TestSlimKeepsWhatConversionReads
// proves that converting a slimmed object gives the same model object as
// converting the original.
//
// Kept, per kind (every kind also keeps name, namespace, UID,
// resourceVersion, labels and the annotations of keptAnnotationPrefixes;
// managedFields and all other metadata are dropped):
//
//	Namespace      metadata only
//	Node           spec.podCIDR(s), status.addresses
//	Pod            metadata.ownerReferences, spec.nodeName, spec.hostNetwork,
//	               name, ports and restartPolicy of containers and
//	               initContainers, status.phase, status.podIP(s)
//	Service        spec, status.loadBalancer
//	EndpointSlice  addressType, ports, and per endpoint addresses,
//	               conditions, nodeName, zone, targetRef kind/namespace/name
//	NetworkPolicy  spec
//
// Objects of other types (the informers' deletion tombstones never reach a
// transform) are returned unchanged. The transform is idempotent, as
// client-go requires.
func slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return &corev1.Namespace{TypeMeta: o.TypeMeta, ObjectMeta: slimMeta(&o.ObjectMeta, false)}, nil
	case *corev1.Node:
		return &corev1.Node{
			TypeMeta:   o.TypeMeta,
			ObjectMeta: slimMeta(&o.ObjectMeta, false),
			Spec:       corev1.NodeSpec{PodCIDR: o.Spec.PodCIDR, PodCIDRs: o.Spec.PodCIDRs},
			Status:     corev1.NodeStatus{Addresses: o.Status.Addresses},
		}, nil
	case *corev1.Pod:
		return &corev1.Pod{
			TypeMeta:   o.TypeMeta,
			ObjectMeta: slimMeta(&o.ObjectMeta, true),
			Spec: corev1.PodSpec{
				NodeName:       o.Spec.NodeName,
				HostNetwork:    o.Spec.HostNetwork,
				InitContainers: slimContainers(o.Spec.InitContainers),
				Containers:     slimContainers(o.Spec.Containers),
			},
			Status: corev1.PodStatus{Phase: o.Status.Phase, PodIP: o.Status.PodIP, PodIPs: o.Status.PodIPs},
		}, nil
	case *corev1.Service:
		return &corev1.Service{
			TypeMeta:   o.TypeMeta,
			ObjectMeta: slimMeta(&o.ObjectMeta, false),
			Spec:       o.Spec,
			Status:     corev1.ServiceStatus{LoadBalancer: o.Status.LoadBalancer},
		}, nil
	case *discoveryv1.EndpointSlice:
		out := &discoveryv1.EndpointSlice{
			TypeMeta:    o.TypeMeta,
			ObjectMeta:  slimMeta(&o.ObjectMeta, false),
			AddressType: o.AddressType,
			Ports:       o.Ports,
		}
		if o.Endpoints != nil {
			out.Endpoints = make([]discoveryv1.Endpoint, len(o.Endpoints))
			for i, e := range o.Endpoints {
				out.Endpoints[i] = discoveryv1.Endpoint{
					Addresses: e.Addresses, Conditions: e.Conditions, NodeName: e.NodeName, Zone: e.Zone,
				}
				if r := e.TargetRef; r != nil {
					out.Endpoints[i].TargetRef = &corev1.ObjectReference{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
				}
			}
		}
		return out, nil
	case *networkingv1.NetworkPolicy:
		return &networkingv1.NetworkPolicy{TypeMeta: o.TypeMeta, ObjectMeta: slimMeta(&o.ObjectMeta, false), Spec: o.Spec}, nil
	}
	return obj, nil
}

// slimMeta keeps the metadata fields named on slim. Owner references are
// kept for pods only: they name the pod's workload in flows.
func slimMeta(m *metav1.ObjectMeta, owners bool) metav1.ObjectMeta {
	out := metav1.ObjectMeta{
		Name:            m.Name,
		Namespace:       m.Namespace,
		UID:             m.UID,
		ResourceVersion: m.ResourceVersion,
		Labels:          m.Labels,
	}
	for k, v := range m.Annotations {
		if keptAnnotation(k) {
			if out.Annotations == nil {
				out.Annotations = make(map[string]string)
			}
			out.Annotations[k] = v
		}
	}
	if owners && len(m.OwnerReferences) > 0 {
		out.OwnerReferences = make([]metav1.OwnerReference, len(m.OwnerReferences))
		for i, r := range m.OwnerReferences {
			// APIVersion and UID are dropped: the model names owners by
			// kind and name.
			out.OwnerReferences[i] = metav1.OwnerReference{Kind: r.Kind, Name: r.Name, Controller: r.Controller}
		}
	}
	return out
}

func keptAnnotation(k string) bool {
	for _, p := range keptAnnotationPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// slimContainers keeps name, ports and restartPolicy (which tells a native
// sidecar, whose ports serve, from a run-to-completion init container).
// Images, commands, environment, resources, probes and mounts are most of a
// pod's size.
func slimContainers(in []corev1.Container) []corev1.Container {
	if in == nil {
		return nil
	}
	out := make([]corev1.Container, len(in))
	for i, c := range in {
		out[i] = corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy}
	}
	return out
}
