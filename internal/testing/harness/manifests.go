package harness

import (
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// The manifest types below are the subset of the Kubernetes core/v1 schema
// the harness writes (field names and nesting as in k8s.io/api), declared
// here so the harness does not pull the Kubernetes API modules into every
// test binary. The files source decodes them with the real types.

type objectMeta struct {
	Name            string            `json:"name"`
	Namespace       string            `json:"namespace,omitempty"`
	UID             string            `json:"uid,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	Annotations     map[string]string `json:"annotations,omitempty"`
	OwnerReferences []ownerReference  `json:"ownerReferences,omitempty"`
}

type ownerReference struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	UID        string `json:"uid"`
	Controller bool   `json:"controller"`
}

type namespaceManifest struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
}

type nodeManifest struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		PodCIDR  string   `json:"podCIDR"`
		PodCIDRs []string `json:"podCIDRs"`
	} `json:"spec"`
	Status struct {
		Addresses  []nodeAddress `json:"addresses"`
		Conditions []condition   `json:"conditions"`
	} `json:"status"`
}

type nodeAddress struct {
	Type    string `json:"type"`
	Address string `json:"address"`
}

type condition struct {
	Type   string `json:"type"`
	Status string `json:"status"`
}

type containerPort struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

type container struct {
	Name  string          `json:"name"`
	Image string          `json:"image"`
	Ports []containerPort `json:"ports,omitempty"`
}

type podIP struct {
	IP string `json:"ip"`
}

type podManifest struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		NodeName   string      `json:"nodeName"`
		Containers []container `json:"containers"`
	} `json:"spec"`
	Status struct {
		Phase      string      `json:"phase"`
		HostIP     string      `json:"hostIP,omitempty"`
		PodIP      string      `json:"podIP,omitempty"`
		PodIPs     []podIP     `json:"podIPs,omitempty"`
		Conditions []condition `json:"conditions,omitempty"`
	} `json:"status"`
}

// namespaceNameLabel is the label the API server puts on every namespace,
// with the namespace's name as value (immutable), so that namespaceSelectors
// can pick namespaces by name.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// workloadImage is the nominal image of pod containers: the harness's own
// re-executed binary plays every container.
const workloadImage = "sluice.dev/harness-workload:latest"

// Manifests renders every Namespace, Node and Pod of the cluster as one
// multi-document YAML stream, in a stable order: what an API server would
// list. Namespaces are "default", those of pods and those labelled with
// SetNamespaceLabels, each with its labels and kubernetes.io/metadata.name. Pods are Running and Ready with status.podIP(s) and spec.nodeName
// (Pending, without addresses, after Pod.SetPending); Nodes carry their
// InternalIP and podCIDR.
func (c *Cluster) Manifests() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var docs []any
	nsSet := map[string]bool{"default": true}
	for ns := range c.nsLabels {
		nsSet[ns] = true
	}
	for ns := range c.nsAnnotations {
		nsSet[ns] = true
	}
	var pods []*Pod
	for _, n := range c.nodes {
		for _, p := range n.pods {
			nsSet[p.Namespace] = true
			pods = append(pods, p)
		}
	}
	nss := make([]string, 0, len(nsSet))
	for ns := range nsSet {
		nss = append(nss, ns)
	}
	sort.Strings(nss)
	for _, ns := range nss {
		labels := copyLabels(c.nsLabels[ns])
		labels[namespaceNameLabel] = ns
		docs = append(docs, namespaceManifest{
			APIVersion: "v1", Kind: "Namespace",
			Metadata: objectMeta{Name: ns, Labels: labels, Annotations: c.nsAnnotations[ns]},
		})
	}
	for _, n := range c.nodes {
		m := nodeManifest{APIVersion: "v1", Kind: "Node",
			Metadata: objectMeta{Name: n.Name, Labels: map[string]string{"kubernetes.io/hostname": n.Name}}}
		m.Spec.PodCIDR = n.PodCIDR.String()
		m.Spec.PodCIDRs = []string{n.PodCIDR.String(), n.PodCIDR6.String()}
		m.Status.Addresses = []nodeAddress{{Type: "InternalIP", Address: n.IP.String()}, {Type: "InternalIP", Address: n.IP6.String()},
			{Type: "Hostname", Address: n.Name}}
		m.Status.Conditions = []condition{{Type: "Ready", Status: "True"}}
		docs = append(docs, m)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].String() < pods[j].String() })
	for _, p := range pods {
		m := podManifest{APIVersion: "v1", Kind: "Pod",
			Metadata: objectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, Labels: p.Labels}}
		if o := p.controller; o != nil {
			m.Metadata.OwnerReferences = []ownerReference{*o}
		}
		m.Spec.NodeName = p.Node.Name
		ct := container{Name: "app", Image: workloadImage}
		for _, port := range p.Ports {
			proto := port.Protocol
			if proto == "" {
				proto = "TCP"
			}
			ct.Ports = append(ct.Ports, containerPort{Name: port.Name, ContainerPort: port.Port, Protocol: proto})
		}
		m.Spec.Containers = []container{ct}
		if p.pending {
			m.Status.Phase = "Pending"
			docs = append(docs, m)
			continue
		}
		m.Status.Phase = "Running"
		m.Status.HostIP = p.Node.IP.String()
		m.Status.PodIP = p.IP.String()
		for _, ip := range p.IPs {
			m.Status.PodIPs = append(m.Status.PodIPs, podIP{IP: ip.String()})
		}
		m.Status.Conditions = []condition{{Type: "Ready", Status: "True"}}
		docs = append(docs, m)
	}
	var b strings.Builder
	for i, d := range docs {
		y, err := yaml.Marshal(d)
		if err != nil {
			return "", fmt.Errorf("render manifest %d: %w", i, err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.String(), nil
}
