package model

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestLabelSelectorMatches(t *testing.T) {
	labels := map[string]string{"app": "web", "tier": "front"}
	tests := []struct {
		name string
		sel  *LabelSelector
		in   map[string]string
		want bool
	}{
		{"nil selects nothing", nil, labels, false},
		{"empty selects everything", &LabelSelector{}, labels, true},
		{"empty selects unlabeled", &LabelSelector{}, nil, true},
		{"matchLabels hit", &LabelSelector{MatchLabels: map[string]string{"app": "web"}}, labels, true},
		{"matchLabels wrong value", &LabelSelector{MatchLabels: map[string]string{"app": "db"}}, labels, false},
		{"matchLabels missing key", &LabelSelector{MatchLabels: map[string]string{"zone": "a"}}, labels, false},
		{"In hit", sel("app", SelectorOpIn, "db", "web"), labels, true},
		{"In miss", sel("app", SelectorOpIn, "db"), labels, false},
		{"In missing key", sel("zone", SelectorOpIn, "a"), labels, false},
		{"NotIn hit", sel("app", SelectorOpNotIn, "db"), labels, true},
		{"NotIn miss", sel("app", SelectorOpNotIn, "web"), labels, false},
		{"NotIn missing key matches", sel("zone", SelectorOpNotIn, "a"), labels, true},
		{"Exists", sel("tier", SelectorOpExists), labels, true},
		{"Exists missing", sel("zone", SelectorOpExists), labels, false},
		{"DoesNotExist", sel("zone", SelectorOpDoesNotExist), labels, true},
		{"DoesNotExist present", sel("app", SelectorOpDoesNotExist), labels, false},
		{"unknown operator matches nothing", sel("app", "Like", "web"), labels, false},
		{"all requirements must hold", &LabelSelector{
			MatchLabels:      map[string]string{"app": "web"},
			MatchExpressions: []SelectorRequirement{{Key: "tier", Operator: SelectorOpIn, Values: []string{"back"}}},
		}, labels, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.sel.Matches(tt.in))
		})
	}
}

func sel(key string, op SelectorOperator, values ...string) *LabelSelector {
	return &LabelSelector{MatchExpressions: []SelectorRequirement{{Key: key, Operator: op, Values: values}}}
}
