package identity

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-net/sluice/pkg/model"
)

// Label sources.
const (
	// SourceK8s labels come from Kubernetes objects: the pod's labels and,
	// under the keys LabelNamespace and NamespaceLabelPrefix, its namespace.
	SourceK8s = "k8s"
	// SourceReserved labels name the reserved identities.
	SourceReserved = "reserved"
)

// Keys of the labels derived from the pod's namespace, spelled as Cilium
// spells them so that flows carry the labels Hubble users expect.
const (
	// LabelNamespace carries the pod's namespace name.
	LabelNamespace = "io.kubernetes.pod.namespace"
	// NamespaceLabelPrefix prefixes each label of the pod's namespace.
	NamespaceLabelPrefix = "io.cilium.k8s.namespace.labels."
)

// Label is one security label, printed "source:key=value" (or
// "source:key" for reserved labels, which have no value).
type Label struct {
	Source string
	Key    string
	Value  string
}

// String returns the printed form.
func (l Label) String() string {
	if l.Source == SourceReserved && l.Value == "" {
		return l.Source + ":" + l.Key
	}
	return l.Source + ":" + l.Key + "=" + l.Value
}

func compareLabels(a, b Label) int {
	if c := cmp.Compare(a.Source, b.Source); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return cmp.Compare(a.Value, b.Value)
}

// ParseLabel is the inverse of Label.String: the source ends at the first
// ':' and the key at the first '=' after it (Kubernetes label keys contain
// neither).
func ParseLabel(s string) (Label, error) {
	src, rest, ok := strings.Cut(s, ":")
	if !ok || src == "" || rest == "" {
		return Label{}, fmt.Errorf("invalid label %q: want source:key=value", s)
	}
	k, v, _ := strings.Cut(rest, "=")
	if k == "" {
		return Label{}, fmt.Errorf("invalid label %q: empty key", s)
	}
	return Label{Source: src, Key: k, Value: v}, nil
}

// Labels is a canonical label set: sorted by source, key and value, without
// duplicates. Build one with NewLabels or Subject.Labels; equal sets are equal
// slices. It marshals to JSON as a list of printed labels.
type Labels []Label

// NewLabels returns the canonical set of ls.
func NewLabels(ls ...Label) Labels {
	out := slices.Clone(ls)
	slices.SortFunc(out, compareLabels)
	return slices.Compact(out)
}

// ParseLabels parses printed labels into a canonical set.
func ParseLabels(ss []string) (Labels, error) {
	out := make([]Label, 0, len(ss))
	for _, s := range ss {
		l, err := ParseLabel(s)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return NewLabels(out...), nil
}

// String returns the printed labels joined by commas.
func (ls Labels) String() string { return strings.Join(ls.Strings(), ",") }

// Strings returns the printed labels.
func (ls Labels) Strings() []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.String()
	}
	return out
}

// Equal reports whether two canonical sets are equal.
func (ls Labels) Equal(o Labels) bool { return slices.Equal(ls, o) }

// key is an unambiguous encoding of the set, whatever bytes the labels hold,
// used to index the allocator.
func (ls Labels) key() string {
	var b strings.Builder
	for _, l := range ls {
		for _, f := range [...]string{l.Source, l.Key, l.Value} {
			b.WriteString(strconv.Itoa(len(f)))
			b.WriteByte(':')
			b.WriteString(f)
		}
	}
	return b.String()
}

func (ls Labels) canonical() bool {
	for i := 1; i < len(ls); i++ {
		if compareLabels(ls[i-1], ls[i]) >= 0 {
			return false
		}
	}
	return true
}

// MarshalJSON encodes the set as a list of printed labels.
func (ls Labels) MarshalJSON() ([]byte, error) { return json.Marshal(ls.Strings()) }

// UnmarshalJSON is the inverse of MarshalJSON.
func (ls *Labels) UnmarshalJSON(b []byte) error {
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return err
	}
	l, err := ParseLabels(ss)
	if err != nil {
		return err
	}
	*ls = l
	return nil
}

// Subject is what a pod's identity is made of, and what network-policy
// selectors are evaluated against.
type Subject struct {
	Namespace string
	// PodLabels are the pod's labels without the reserved keys (see SubjectOf).
	PodLabels map[string]string
	// NamespaceLabels are the labels of the pod's namespace; nil when the
	// namespace is unknown.
	NamespaceLabels map[string]string
}

// SubjectOf returns the subject of pod in a namespace with labels nsLabels.
//
// Pod labels whose key is LabelNamespace or starts with NamespaceLabelPrefix
// are dropped: otherwise a pod could label itself as belonging to another
// namespace, or as carrying its namespace's labels, and share an identity
// with pods that a namespace selector admits (Cilium drops them for the same
// reason). A selector on such a key sees it as absent. The maps are shared
// with the model objects and must not be modified.
func SubjectOf(pod *model.Pod, nsLabels map[string]string) Subject {
	labels := pod.Labels
	for k := range pod.Labels {
		if reservedPodLabel(k) {
			labels = maps.Clone(pod.Labels)
			maps.DeleteFunc(labels, func(k, _ string) bool { return reservedPodLabel(k) })
			break
		}
	}
	return Subject{Namespace: pod.Namespace, PodLabels: labels, NamespaceLabels: nsLabels}
}

func reservedPodLabel(k string) bool {
	return k == LabelNamespace || strings.HasPrefix(k, NamespaceLabelPrefix)
}

// Labels returns the subject's canonical security labels, e.g.
// k8s:app=web, k8s:io.cilium.k8s.namespace.labels.team=a,
// k8s:io.kubernetes.pod.namespace=shop.
func (s *Subject) Labels() Labels {
	out := make(Labels, 0, len(s.PodLabels)+len(s.NamespaceLabels)+1)
	for k, v := range s.PodLabels {
		out = append(out, Label{Source: SourceK8s, Key: k, Value: v})
	}
	for k, v := range s.NamespaceLabels {
		out = append(out, Label{Source: SourceK8s, Key: NamespaceLabelPrefix + k, Value: v})
	}
	out = append(out, Label{Source: SourceK8s, Key: LabelNamespace, Value: s.Namespace})
	slices.SortFunc(out, compareLabels)
	return out
}

// HasIdentity reports whether pod gets an identity of its own: it is not
// host-network (those share the node's address and so its identity) and not
// finished (phase Succeeded or Failed: its address may already belong to a
// new pod). A pod without an address yet does get one, so that policy is
// ready when the address arrives and only the ipcache changes then.
func HasIdentity(pod *model.Pod) bool {
	return pod != nil && !pod.HostNetwork && pod.Phase != model.PodSucceeded && pod.Phase != model.PodFailed
}
