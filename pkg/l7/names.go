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

// listenerPrefix starts every listener's name: "l7-" and its port.
const listenerPrefix = "l7-"

// ListenerName is the name of the listener on a proxy port
// (Listener.Name): "l7-15001". Envoy's listener, its route configuration
// and its access log entries carry it.
func ListenerName(port uint16) string { return listenerPrefix + strconv.Itoa(int(port)) }

// ListenerPort reads the proxy port out of a listener's name; ok is false
// for a name ListenerName does not make.
func ListenerPort(name string) (port uint16, ok bool) {
	v, ok := strings.CutPrefix(name, listenerPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != v {
		return 0, false
	}
	return uint16(n), true
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
