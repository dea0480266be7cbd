package model

import "slices"

// SelectorOperator is a label selector requirement operator.
type SelectorOperator string

// Label selector operators, as in Kubernetes.
const (
	SelectorOpIn           SelectorOperator = "In"
	SelectorOpNotIn        SelectorOperator = "NotIn"
	SelectorOpExists       SelectorOperator = "Exists"
	SelectorOpDoesNotExist SelectorOperator = "DoesNotExist"
)

// SelectorRequirement is one match expression.
type SelectorRequirement struct {
	Key      string           `json:"key"`
	Operator SelectorOperator `json:"operator"`
	Values   []string         `json:"values,omitempty"`
}

// LabelSelector selects objects by labels; all of MatchLabels and all of
// MatchExpressions must hold.
type LabelSelector struct {
	MatchLabels      map[string]string     `json:"matchLabels,omitempty"`
	MatchExpressions []SelectorRequirement `json:"matchExpressions,omitempty"`
}

// Empty reports whether the selector has no requirements, i.e. selects everything.
func (s *LabelSelector) Empty() bool {
	return s != nil && len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

// Matches reports whether labels satisfy the selector, with Kubernetes
// semantics: an empty selector matches everything, a nil selector matches
// nothing (metav1.LabelSelectorAsSelector(nil) is labels.Nothing()), NotIn and
// DoesNotExist match objects that lack the key. Callers for whom a missing
// selector has another meaning (a network policy peer without a namespace
// selector means "the policy's namespace") must handle nil themselves.
// An unknown operator matches nothing, so a bad selector never widens a
// policy; conversion rejects such selectors anyway.
func (s *LabelSelector) Matches(labels map[string]string) bool {
	if s == nil {
		return false
	}
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		if !r.Matches(labels) {
			return false
		}
	}
	return true
}

// Matches reports whether labels satisfy this one requirement.
func (r SelectorRequirement) Matches(labels map[string]string) bool {
	v, ok := labels[r.Key]
	switch r.Operator {
	case SelectorOpIn:
		return ok && slices.Contains(r.Values, v)
	case SelectorOpNotIn:
		return !ok || !slices.Contains(r.Values, v)
	case SelectorOpExists:
		return ok
	case SelectorOpDoesNotExist:
		return !ok
	default:
		return false
	}
}
