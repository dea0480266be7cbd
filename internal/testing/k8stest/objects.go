package k8stest

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Pod is a Running pod on node with address ip and one container "web"
// serving port 8080 named "http".
func Pod(ns, name, node, ip string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, ManagedFields: ManagedFields("kubelet")},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Name: "web", Image: "nginx", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

// Service is a ClusterIP service selecting app=name, port 80 to the
// target port named "http".
func Service(ns, name, clusterIP string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			ClusterIP: clusterIP, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
}

// Node is a node with a pod CIDR.
func Node(name, podCIDR string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR},
	}
}

// Slice is the endpoint slice "<svcName>-x1" of the service, with one
// ready endpoint per ip on port 8080 named "http".
func Slice(ns, svcName string, ips ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: svcName + "-x1", Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: Ptr("http"), Port: Ptr(int32(8080))}},
	}
	for _, ip := range ips {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: Ptr(true)}})
	}
	return es
}

// Cluster is a cluster of pods spread over nodes of 100 pods, with one
// service and one endpoint slice per two pods and one policy per service,
// in 100 namespaces, as Fat* objects.
func Cluster(pods int) []runtime.Object {
	var objs []runtime.Object
	for i := range 100 {
		objs = append(objs, Namespace(fmt.Sprintf("ns-%d", i)))
	}
	for i := range (pods + 99) / 100 {
		objs = append(objs, FatNode(i))
	}
	for i := range pods {
		objs = append(objs, FatPod(i))
	}
	for i := range pods / 2 {
		objs = append(objs, FatService(i), FatSlice(i), FatPolicy(i))
	}
	return objs
}
