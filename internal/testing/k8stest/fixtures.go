package k8stest

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The Fat* builders make objects shaped like the ones a real API server
// returns for a Deployment's pods and their services: managed fields,
// kubectl and CNI annotations, images, environment, probes, mounts,
// conditions and container statuses. They are what the transforms are
// measured and tested on, and what the real API server's tests load.

// Created is the creation time of every Fat* object.
var Created = metav1.NewTime(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))

// Ptr returns a pointer to a copy of v, for the API's optional fields.
func Ptr[T any](v T) *T { return &v }

// UID is a stable, well-formed UID for object i of a kind.
func UID(kind string, i int) types.UID {
	return types.UID(fmt.Sprintf("%08x-%04x-4000-8000-%012x", i, len(kind), i*7919))
}

// ManagedFields imitates server-side field tracking: one JSON document of
// the fields each manager owns, usually the largest part of the metadata.
func ManagedFields(managers ...string) []metav1.ManagedFieldsEntry {
	var out []metav1.ManagedFieldsEntry
	for _, m := range managers {
		var b strings.Builder
		b.WriteString(`{"f:metadata":{"f:labels":{".":{},"f:app":{},"f:pod-template-hash":{}},"f:ownerReferences":{".":{}}},"f:spec":{`)
		for j := range 12 {
			fmt.Fprintf(&b, `"f:field%d":{".":{},"f:name":{},"f:value":{}},`, j)
		}
		b.WriteString(`"f:end":{}}}`)
		out = append(out, metav1.ManagedFieldsEntry{
			Manager: m, Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
			Time: &Created, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(b.String())},
		})
	}
	return out
}

// Namespace is a namespace with a team label and a Sluice annotation.
func Namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, UID: UID("ns", len(name)), CreationTimestamp: Created,
			Labels:        map[string]string{"kubernetes.io/metadata.name": name, "team": "shop"},
			Annotations:   map[string]string{"sluice.io/policy-audit": "false", "scheduler.alpha.kubernetes.io/node-selector": "pool=apps"},
			ManagedFields: ManagedFields("kubectl-create"),
		},
		Spec:   corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}
}

// FatNode is node-i, of pod CIDR 10.244.(i%256).0/24, listing 40 images.
func FatNode(i int) *corev1.Node {
	name := fmt.Sprintf("node-%d", i)
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, UID: UID("node", i), ResourceVersion: "100", CreationTimestamp: Created,
			Labels: map[string]string{
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", i%3), "node.kubernetes.io/instance-type": "m7i.2xlarge",
			},
			Annotations: map[string]string{
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
				"csi.volume.kubernetes.io/nodeid":                        `{"ebs.csi.aws.com":"i-0123456789abcdef0"}`,
			},
			ManagedFields: ManagedFields("kubelet", "kube-controller-manager", "kubelet-status"),
		},
		Spec: corev1.NodeSpec{
			PodCIDR: fmt.Sprintf("10.244.%d.0/24", i%256), PodCIDRs: []string{fmt.Sprintf("10.244.%d.0/24", i%256)},
			ProviderID: "aws:///eu-west-1a/i-0123456789abcdef0",
		},
		Status: corev1.NodeStatus{
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("7910m"), corev1.ResourceMemory: resource.MustParse("31Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.168.%d.%d", i/256, i%256+1)},
				{Type: corev1.NodeHostName, Address: name},
			},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: "ec2a1b2c3d4e5f60718293a4b5c6d7e8", KernelVersion: "6.12.0-31-cloud-amd64",
				OSImage: "Debian GNU/Linux 13 (trixie)", ContainerRuntimeVersion: "containerd://2.1.4",
				KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64",
			},
		},
	}
	for _, c := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeReady} {
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{
			Type: c, Status: corev1.ConditionFalse, LastHeartbeatTime: Created, LastTransitionTime: Created,
			Reason: "KubeletHasSufficient" + string(c), Message: "kubelet has sufficient resources available",
		})
	}
	// Nodes list every image they hold: often the bulk of a Node object.
	for j := range 40 {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{
			Names: []string{
				fmt.Sprintf("registry.example.com/team-%d/service-%d@sha256:%064x", j%7, j, j*104729),
				fmt.Sprintf("registry.example.com/team-%d/service-%d:v1.%d.0", j%7, j, j),
			},
			SizeBytes: int64(20_000_000 + j*1_000_000),
		})
	}
	return n
}

// fatContainer is container name serving port, named portName (each
// container of a pod names its port differently: the API server warns
// about duplicate names).
func fatContainer(name, portName string, port int32, i int) corev1.Container {
	c := corev1.Container{
		Name:    name,
		Image:   fmt.Sprintf("registry.example.com/shop/%s:v2.%d.7", name, i%20),
		Command: []string{"/bin/" + name},
		Args:    []string{"--listen=:" + fmt.Sprint(port), "--log-format=json", "--config=/etc/" + name + "/config.yaml"},
		Ports:   []corev1.ContainerPort{{Name: portName, ContainerPort: port, Protocol: corev1.ProtocolTCP}},
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
			{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Value: "http://otel-collector.observability.svc.cluster.local:4317"},
			{Name: "DATABASE_URL", Value: "postgres://shop@postgres.shop.svc.cluster.local:5432/shop?sslmode=require"},
			{Name: "FEATURE_FLAGS", Value: "checkout-v2,recommendations,fast-cart"},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: "/etc/" + name, ReadOnly: true},
			{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString(portName), Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3,
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString(portName), Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds: 5, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3,
		},
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		ImagePullPolicy:          corev1.PullIfNotPresent,
	}
	return c
}

// FatPod is pod i of service i/2 (two pods per service), on node i/100.
func FatPod(i int) *corev1.Pod {
	app := fmt.Sprintf("app-%d", i/2)
	ns := fmt.Sprintf("ns-%d", i%100)
	ip := fmt.Sprintf("10.%d.%d.%d", 64+i/65536, (i/256)%256, i%256)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("%s-7d4b9c6f8-%05d", app, i), GenerateName: app + "-7d4b9c6f8-", Namespace: ns,
			UID: UID("pod", i), ResourceVersion: fmt.Sprint(1000 + i), CreationTimestamp: Created,
			Labels: map[string]string{"app": app, "pod-template-hash": "7d4b9c6f8", "app.kubernetes.io/part-of": "shop", "version": "v2"},
			Annotations: map[string]string{
				"kubectl.kubernetes.io/restartedAt": "2026-05-01T11:58:00Z",
				"prometheus.io/scrape":              "true",
				"prometheus.io/port":                "9090",
				"cni.projectcalico.org/podIP":       ip + "/32",
				"cni.projectcalico.org/containerID": fmt.Sprintf("%064x", i*2654435761),
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-7d4b9c6f8", UID: UID("rs", i/2),
				Controller: Ptr(true), BlockOwnerDeletion: Ptr(true),
			}},
			ManagedFields: ManagedFields("kube-controller-manager", "kubelet"),
		},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: app + "-config"}}}},
				{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: Ptr(int64(3607))}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
				}, DefaultMode: Ptr(int32(420))}}},
			},
			InitContainers: []corev1.Container{
				func() corev1.Container {
					// A run-to-completion init container: no ports, no probes
					// (the API server refuses them).
					c := fatContainer("migrate", "migrate", 9000, i)
					c.Ports, c.LivenessProbe, c.ReadinessProbe = nil, nil, nil
					return c
				}(),
				func() corev1.Container {
					c := fatContainer("mesh-proxy", "proxy", 15001, i)
					c.RestartPolicy = Ptr(corev1.ContainerRestartPolicyAlways)
					return c
				}(),
			},
			Containers:                    []corev1.Container{fatContainer("web", "http", 8080, i), fatContainer("metrics", "metrics", 9090, i)},
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: Ptr(int64(30)),
			DNSPolicy:                     corev1.DNSClusterFirst,
			ServiceAccountName:            "shop",
			NodeName:                      fmt.Sprintf("node-%d", i/100),
			SecurityContext:               &corev1.PodSecurityContext{RunAsNonRoot: Ptr(true), FSGroup: Ptr(int64(2000))},
			SchedulerName:                 corev1.DefaultSchedulerName,
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: Ptr(int64(300))},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: Ptr(int64(300))},
			},
			Priority:           Ptr(int32(0)),
			EnableServiceLinks: Ptr(true),
			PreemptionPolicy:   Ptr(corev1.PreemptLowerPriority),
		},
		Status: corev1.PodStatus{
			Phase:     corev1.PodRunning,
			HostIP:    fmt.Sprintf("192.168.0.%d", i/100+1),
			HostIPs:   []corev1.HostIP{{IP: fmt.Sprintf("192.168.0.%d", i/100+1)}},
			PodIP:     ip,
			PodIPs:    []corev1.PodIP{{IP: ip}},
			StartTime: &Created,
			QOSClass:  corev1.PodQOSBurstable,
		},
	}
	for _, c := range []corev1.PodConditionType{"PodReadyToStartContainers", corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: c, Status: corev1.ConditionTrue, LastTransitionTime: Created})
	}
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Ready: true, Started: Ptr(true), Image: c.Image,
			ImageID:     fmt.Sprintf("registry.example.com/shop/%s@sha256:%064x", c.Name, i),
			ContainerID: fmt.Sprintf("containerd://%064x", i*31+len(c.Name)),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: Created}},
		})
	}
	return p
}

// FatService is service i, selecting the pods FatPod(2i) and FatPod(2i+1).
func FatService(i int) *corev1.Service {
	app := fmt.Sprintf("app-%d", i)
	ip := fmt.Sprintf("10.96.%d.%d", i/256, i%256)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: app, Namespace: fmt.Sprintf("ns-%d", (2*i)%100), UID: UID("svc", i), ResourceVersion: fmt.Sprint(50000 + i),
			CreationTimestamp: Created,
			Labels:            map[string]string{"app": app, "app.kubernetes.io/part-of": "shop"},
			Annotations: map[string]string{
				"kubectl.kubernetes.io/last-applied-configuration": fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"annotations":{},"labels":{"app":%q},"name":%q,"namespace":"shop"},"spec":{"ports":[{"name":"http","port":80,"targetPort":"http"},{"name":"metrics","port":9090}],"selector":{"app":%q}}}`, app, app, app),
				"sluice.io/lb-algorithm":                           "maglev",
				"service.kubernetes.io/topology-mode":              "Auto",
			},
			ManagedFields: ManagedFields("kubectl-client-side-apply"),
		},
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeClusterIP,
			ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http")},
				{Name: "metrics", Protocol: corev1.ProtocolTCP, Port: 9090, TargetPort: intstr.FromInt32(9090)},
			},
			Selector:              map[string]string{"app": app},
			SessionAffinity:       corev1.ServiceAffinityNone,
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			IPFamilyPolicy:        Ptr(corev1.IPFamilyPolicySingleStack),
			InternalTrafficPolicy: Ptr(corev1.ServiceInternalTrafficPolicyCluster),
		},
	}
}

// FatSlice is the endpoint slice of FatService(i).
func FatSlice(i int) *discoveryv1.EndpointSlice {
	svc := FatService(i)
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc.Name + "-x8f2k", Namespace: svc.Namespace, UID: UID("eps", i), ResourceVersion: fmt.Sprint(80000 + i),
			GenerateName: svc.Name + "-", CreationTimestamp: Created,
			Labels: map[string]string{
				"kubernetes.io/service-name": svc.Name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
				"app": svc.Name, "app.kubernetes.io/part-of": "shop",
			},
			Annotations: map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2026-05-01T12:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: Ptr(true), BlockOwnerDeletion: Ptr(true),
			}},
			ManagedFields: ManagedFields("endpointslice-controller.k8s.io"),
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: Ptr("http"), Protocol: Ptr(corev1.ProtocolTCP), Port: Ptr(int32(8080))},
			{Name: Ptr("metrics"), Protocol: Ptr(corev1.ProtocolTCP), Port: Ptr(int32(9090))},
		},
	}
	for _, pi := range []int{2 * i, 2*i + 1} {
		p := FatPod(pi)
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: Ptr(true), Serving: Ptr(true), Terminating: Ptr(false)},
			Hostname:   Ptr(p.Name),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID, ResourceVersion: p.ResourceVersion},
			NodeName:   Ptr(p.Spec.NodeName),
			Zone:       Ptr("zone-a"),
			Hints:      &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-a"}}},
		})
	}
	return s
}

// FatPolicy is an ingress policy for the pods of FatService(i).
func FatPolicy(i int) *networkingv1.NetworkPolicy {
	app := fmt.Sprintf("app-%d", i)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{
			Name: app + "-ingress", Namespace: fmt.Sprintf("ns-%d", (2*i)%100), UID: UID("np", i), CreationTimestamp: Created,
			Labels:        map[string]string{"app.kubernetes.io/part-of": "shop"},
			Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"kind":"NetworkPolicy"}`},
			ManagedFields: ManagedFields("kubectl-client-side-apply"),
		},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"shop"}}}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.255.0/24"}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: Ptr(corev1.ProtocolTCP), Port: Ptr(intstr.FromString("http"))}},
			}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
}
