package l7

import "testing"

func TestParseRuleRef(t *testing.T) {
	for _, want := range []RuleRef{
		{Namespace: "shop", Policy: "api", PortIndex: 0, RuleIndex: 2},
		{Namespace: "kube-system", Policy: "allow.dns-1", PortIndex: 12, RuleIndex: 0},
	} {
		got, err := ParseRuleRef(want.String())
		if err != nil || got != want {
			t.Errorf("ParseRuleRef(%q) = %+v, %v; want %+v", want.String(), got, err, want)
		}
	}
	for _, bad := range []string{
		"", "none", "shop/api", "shop/api/ports[0]", "/api/ports[0]/rules[1]", "shop//ports[0]/rules[1]",
		"shop/api/ports[0]/rules[1]/x", "shop/api/port[0]/rules[1]", "shop/api/ports[-1]/rules[1]",
		"shop/api/ports[01]/rules[1]", "shop/api/ports[0]/rules[]", "shop/api/ports[0]/rules[1",
	} {
		if r, err := ParseRuleRef(bad); err == nil {
			t.Errorf("ParseRuleRef(%q) = %+v, want an error", bad, r)
		}
	}
}
