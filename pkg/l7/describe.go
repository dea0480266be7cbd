package l7

import (
	"strconv"
	"strings"
)

// String describes the path match: "any", "= /x", "prefix /api/" or
// "~ /items/[0-9]+".
func (p PathMatch) String() string {
	switch p.Kind {
	case PathExact:
		return "= " + p.Value
	case PathPrefix:
		return "prefix " + p.Value
	case PathRegex:
		return "~ " + p.Value
	}
	return "any"
}

// String describes the limit: "10/1s burst 20 per client".
func (r RateLimit) String() string {
	s := strconv.FormatUint(uint64(r.Requests), 10) + "/" + r.Per.String()
	if r.Burst != r.Requests {
		s += " burst " + strconv.FormatUint(uint64(r.Burst), 10)
	}
	if r.PerClient {
		s += " per client"
	}
	return s
}

// Describe is the rule for people, as `sluice policy get` prints it:
// "GET path prefix /api/ rate 10/1s jwt https://issuer [groups=admins]";
// "any request" for an empty rule.
func (r *Rule) Describe() string {
	var parts []string
	if r.Method != "" {
		parts = append(parts, r.Method)
	}
	if r.Path.Kind != PathAny {
		parts = append(parts, "path "+r.Path.String())
	}
	if r.Host != "" {
		parts = append(parts, "host ~ "+r.Host)
	}
	for _, h := range r.Headers {
		switch {
		case h.Value == "":
			parts = append(parts, "header "+h.Name)
		case h.Regex:
			parts = append(parts, "header "+h.Name+" ~ "+h.Value)
		default:
			parts = append(parts, "header "+h.Name+": "+h.Value)
		}
	}
	if r.RateLimit != nil {
		parts = append(parts, "rate "+r.RateLimit.String())
	}
	if r.JWT != nil {
		s := "jwt " + r.JWT.Issuer
		var cs []string
		for _, c := range r.JWT.Claims {
			cs = append(cs, c.Claim+"="+strings.Join(c.Values, "|"))
		}
		if len(cs) > 0 {
			s += " [" + strings.Join(cs, " ") + "]"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "any request"
	}
	return strings.Join(parts, " ")
}
