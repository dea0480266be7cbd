package l7

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseRuleRef reads a rule's name as RuleRef.String writes it
// ("ns/policy/ports[0]/rules[2]"): how Envoy's RBAC filter names the
// policy that decided a request (RBAC policy names, response_code_details,
// dynamic metadata) when access logs come back to the agent. Kubernetes
// names contain no '/', so the name splits without ambiguity.
func ParseRuleRef(s string) (RuleRef, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" {
		return RuleRef{}, fmt.Errorf("rule name %q: want namespace/policy/ports[N]/rules[M]", s)
	}
	port, err := index(parts[2], "ports")
	if err != nil {
		return RuleRef{}, fmt.Errorf("rule name %q: %w", s, err)
	}
	rule, err := index(parts[3], "rules")
	if err != nil {
		return RuleRef{}, fmt.Errorf("rule name %q: %w", s, err)
	}
	return RuleRef{Namespace: parts[0], Policy: parts[1], PortIndex: port, RuleIndex: rule}, nil
}

// index reads "field[N]".
func index(s, field string) (int, error) {
	v, ok := strings.CutPrefix(s, field+"[")
	if ok {
		v, ok = strings.CutSuffix(v, "]")
	}
	if !ok {
		return 0, fmt.Errorf("%q: want %s[N]", s, field)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || strconv.Itoa(n) != v {
		return 0, fmt.Errorf("%q: want %s[N] with N a non-negative integer", s, field)
	}
	return n, nil
}
