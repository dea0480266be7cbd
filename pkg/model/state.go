package model

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// State is a complete set of objects: a snapshot of the model at one revision,
// or the objects one source contributes. Maps are keyed by name (cluster-scoped
// kinds) or namespace and name. The zero value is an empty state that can be
// read; use Upsert and Delete to build one.
//
// A State obtained from Store.Snapshot is shared and must not be modified.
type State struct {
	// Revision is the Store revision the snapshot was taken at; 0 otherwise.
	Revision uint64

	Namespaces      map[string]*Namespace
	Nodes           map[string]*Node
	Pods            map[NamespacedName]*Pod
	Services        map[NamespacedName]*Service
	EndpointSlices  map[NamespacedName]*EndpointSlice
	NetworkPolicies map[NamespacedName]*NetworkPolicy
	L7Policies      map[NamespacedName]*L7Policy
	// ClusterPolicies are keyed by name.
	ClusterPolicies map[string]*ClusterNetworkPolicy
}

// Get returns the object with key k.
func (s *State) Get(k Key) (Object, bool) {
	if s == nil {
		return nil, false
	}
	nn := k.NamespacedName()
	var o Object
	switch k.Kind {
	case KindNamespace:
		if v, ok := s.Namespaces[k.Name]; ok {
			o = v
		}
	case KindNode:
		if v, ok := s.Nodes[k.Name]; ok {
			o = v
		}
	case KindPod:
		if v, ok := s.Pods[nn]; ok {
			o = v
		}
	case KindService:
		if v, ok := s.Services[nn]; ok {
			o = v
		}
	case KindEndpointSlice:
		if v, ok := s.EndpointSlices[nn]; ok {
			o = v
		}
	case KindNetworkPolicy:
		if v, ok := s.NetworkPolicies[nn]; ok {
			o = v
		}
	case KindL7Policy:
		if v, ok := s.L7Policies[nn]; ok {
			o = v
		}
	case KindClusterNetworkPolicy:
		if v, ok := s.ClusterPolicies[k.Name]; ok {
			o = v
		}
	}
	return o, o != nil
}

// Upsert adds or replaces obj. It panics on a nil object or a type outside
// the model, which are programming errors.
func (s *State) Upsert(obj Object) {
	switch o := obj.(type) {
	case *Namespace:
		s.Namespaces = put(s.Namespaces, o.Name, o)
	case *Node:
		s.Nodes = put(s.Nodes, o.Name, o)
	case *Pod:
		s.Pods = put(s.Pods, NamespacedName{o.Namespace, o.Name}, o)
	case *Service:
		s.Services = put(s.Services, NamespacedName{o.Namespace, o.Name}, o)
	case *EndpointSlice:
		s.EndpointSlices = put(s.EndpointSlices, NamespacedName{o.Namespace, o.Name}, o)
	case *NetworkPolicy:
		s.NetworkPolicies = put(s.NetworkPolicies, NamespacedName{o.Namespace, o.Name}, o)
	case *L7Policy:
		s.L7Policies = put(s.L7Policies, NamespacedName{o.Namespace, o.Name}, o)
	case *ClusterNetworkPolicy:
		s.ClusterPolicies = put(s.ClusterPolicies, o.Name, o)
	default:
		panic(fmt.Sprintf("model: cannot store %T", obj))
	}
}

func put[K comparable, V any](m map[K]V, k K, v V) map[K]V {
	if m == nil {
		m = make(map[K]V)
	}
	m[k] = v
	return m
}

// Delete removes the object with key k if present.
func (s *State) Delete(k Key) {
	nn := k.NamespacedName()
	switch k.Kind {
	case KindNamespace:
		delete(s.Namespaces, k.Name)
	case KindNode:
		delete(s.Nodes, k.Name)
	case KindPod:
		delete(s.Pods, nn)
	case KindService:
		delete(s.Services, nn)
	case KindEndpointSlice:
		delete(s.EndpointSlices, nn)
	case KindNetworkPolicy:
		delete(s.NetworkPolicies, nn)
	case KindL7Policy:
		delete(s.L7Policies, nn)
	case KindClusterNetworkPolicy:
		delete(s.ClusterPolicies, k.Name)
	}
}

// Len returns the number of objects.
func (s *State) Len() int {
	if s == nil {
		return 0
	}
	return len(s.Namespaces) + len(s.Nodes) + len(s.Pods) + len(s.Services) +
		len(s.EndpointSlices) + len(s.NetworkPolicies) + len(s.L7Policies) + len(s.ClusterPolicies)
}

// Objects returns all objects sorted by key.
func (s *State) Objects() []Object {
	if s == nil {
		return nil
	}
	out := make([]Object, 0, s.Len())
	for _, v := range s.Namespaces {
		out = append(out, v)
	}
	for _, v := range s.Nodes {
		out = append(out, v)
	}
	for _, v := range s.Pods {
		out = append(out, v)
	}
	for _, v := range s.Services {
		out = append(out, v)
	}
	for _, v := range s.EndpointSlices {
		out = append(out, v)
	}
	for _, v := range s.NetworkPolicies {
		out = append(out, v)
	}
	for _, v := range s.L7Policies {
		out = append(out, v)
	}
	for _, v := range s.ClusterPolicies {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b Object) int { return compareKeys(a.Key(), b.Key()) })
	return out
}

func compareKeys(a, b Key) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// Clone returns a copy whose maps can be modified without affecting s. The
// objects themselves are shared, which is safe because they are immutable.
func (s *State) Clone() *State {
	if s == nil {
		return &State{}
	}
	return &State{
		Revision:        s.Revision,
		Namespaces:      maps.Clone(s.Namespaces),
		Nodes:           maps.Clone(s.Nodes),
		Pods:            maps.Clone(s.Pods),
		Services:        maps.Clone(s.Services),
		EndpointSlices:  maps.Clone(s.EndpointSlices),
		NetworkPolicies: maps.Clone(s.NetworkPolicies),
		L7Policies:      maps.Clone(s.L7Policies),
		ClusterPolicies: maps.Clone(s.ClusterPolicies),
	}
}

// LocalPods returns the pods that are endpoints on node nodeName, sorted by
// namespace and name: scheduled there, not host-network (those share the
// node's identity and interfaces), and holding at least one IP.
//
// Pods in phase Succeeded or Failed are excluded even if their status still
// lists IPs: their sandbox is gone, the CNI has released the address, and it
// may already belong to a new pod; treating the old pod as the owner would
// apply the wrong identity and policy to the new one.
func (s *State) LocalPods(nodeName string) []*Pod {
	if s == nil {
		return nil
	}
	var out []*Pod
	for _, p := range s.Pods {
		if p.NodeName != nodeName || p.HostNetwork || len(p.IPs) == 0 {
			continue
		}
		if p.Phase == PodSucceeded || p.Phase == PodFailed {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *Pod) int { return compareKeys(a.Key(), b.Key()) })
	return out
}

// NamespaceLabels returns the labels of namespace ns, or nil if it is unknown.
// The returned map must not be modified.
func (s *State) NamespaceLabels(ns string) map[string]string {
	if s == nil {
		return nil
	}
	if n, ok := s.Namespaces[ns]; ok {
		return n.Labels
	}
	return nil
}

// stateJSON is the saved form: lists rather than maps, because map keys with
// a namespace are structs that JSON cannot key on, and sorted lists diff well.
type stateJSON struct {
	Revision        uint64                  `json:"revision,omitempty"`
	Namespaces      []*Namespace            `json:"namespaces,omitempty"`
	Nodes           []*Node                 `json:"nodes,omitempty"`
	Pods            []*Pod                  `json:"pods,omitempty"`
	Services        []*Service              `json:"services,omitempty"`
	EndpointSlices  []*EndpointSlice        `json:"endpointSlices,omitempty"`
	NetworkPolicies []*NetworkPolicy        `json:"networkPolicies,omitempty"`
	L7Policies      []*L7Policy             `json:"l7Policies,omitempty"`
	ClusterPolicies []*ClusterNetworkPolicy `json:"clusterNetworkPolicies,omitempty"`
}

// MarshalJSON encodes the state as sorted lists per kind.
func (s State) MarshalJSON() ([]byte, error) {
	j := stateJSON{Revision: s.Revision}
	for _, o := range s.Objects() {
		switch o := o.(type) {
		case *Namespace:
			j.Namespaces = append(j.Namespaces, o)
		case *Node:
			j.Nodes = append(j.Nodes, o)
		case *Pod:
			j.Pods = append(j.Pods, o)
		case *Service:
			j.Services = append(j.Services, o)
		case *EndpointSlice:
			j.EndpointSlices = append(j.EndpointSlices, o)
		case *NetworkPolicy:
			j.NetworkPolicies = append(j.NetworkPolicies, o)
		case *L7Policy:
			j.L7Policies = append(j.L7Policies, o)
		case *ClusterNetworkPolicy:
			j.ClusterPolicies = append(j.ClusterPolicies, o)
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON is the inverse of MarshalJSON.
func (s *State) UnmarshalJSON(b []byte) error {
	var j stateJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = State{Revision: j.Revision}
	var err error
	add := func(o Object, nilObj bool) {
		if nilObj {
			err = fmt.Errorf("null object in saved state")
			return
		}
		if _, dup := s.Get(o.Key()); dup {
			err = fmt.Errorf("duplicate %s in saved state", o.Key())
		}
		s.Upsert(o)
	}
	for _, o := range j.Namespaces {
		add(o, o == nil)
	}
	for _, o := range j.Nodes {
		add(o, o == nil)
	}
	for _, o := range j.Pods {
		add(o, o == nil)
	}
	for _, o := range j.Services {
		add(o, o == nil)
	}
	for _, o := range j.EndpointSlices {
		add(o, o == nil)
	}
	for _, o := range j.NetworkPolicies {
		add(o, o == nil)
	}
	for _, o := range j.L7Policies {
		add(o, o == nil)
	}
	for _, o := range j.ClusterPolicies {
		add(o, o == nil)
	}
	return err
}
