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

func TestListenerName(t *testing.T) {
	if got := ListenerName(15001); got != "l7-15001" {
		t.Errorf("ListenerName(15001) = %q", got)
	}
	if p, ok := ListenerPort("l7-15001"); !ok || p != 15001 {
		t.Errorf("ListenerPort(l7-15001) = %d, %v", p, ok)
	}
	for _, bad := range []string{"", "l7-", "l7-0", "l7-015001", "l7-65536", "l7-15001x", "listener-15001", "L7-15001"} {
		if p, ok := ListenerPort(bad); ok {
			t.Errorf("ListenerPort(%q) = %d, want not ok", bad, p)
		}
	}
}
