package cli

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
)

func (g *globals) policyCommand() *cobra.Command {
	pol := &cobra.Command{Use: "policy", Short: "Network policy as the agent computed it"}
	pol.AddCommand(&cobra.Command{
		Use: "get NAMESPACE/POD", Short: "The effective policy of a local pod, with identities resolved to labels", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return g.policyGet(cmd, args[0]) },
	})
	pol.AddCommand(g.policyTraceCommand(), g.policySuggestCommand())
	return pol
}

func (g *globals) identityCommand() *cobra.Command {
	id := &cobra.Command{Use: "identity", Short: "Security identities (one per distinct set of pod and namespace labels)"}
	id.AddCommand(&cobra.Command{
		Use: "list", Short: "List reserved and allocated identities with their labels", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.identityList(cmd) },
	})
	return id
}

func (g *globals) bpfPolicyCommands() []*cobra.Command {
	pol := &cobra.Command{Use: "policy", Short: "The per-endpoint policy maps (sl_policy, sl_policy_cidr)"}
	pol.AddCommand(&cobra.Command{
		Use: "list", Short: "List every endpoint's policy entries and CIDR classes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.bpfPolicyList(cmd) },
	})
	ipc := &cobra.Command{Use: "ipcache", Short: "The ipcache (sl_ipcache): addresses to identities"}
	ipc.AddCommand(&cobra.Command{
		Use: "list", Short: "List ipcache prefixes and their identities", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.bpfIPCacheList(cmd) },
	})
	return []*cobra.Command{pol, ipc}
}

func (g *globals) policyGet(cmd *cobra.Command, pod string) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if ns, name, ok := strings.Cut(pod, "/"); !ok || ns == "" || name == "" {
		return fmt.Errorf("%q is not NAMESPACE/POD", pod)
	}
	var x policy.Explanation
	if err := g.get(cmd.Context(), api.PathPolicy+"?pod="+pod, &x); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if g.output == "json" {
		return printJSON(w, x)
	}
	fmt.Fprintf(w, "Pod:       %s\n", x.Pod)
	fmt.Fprintf(w, "Identity:  %d %s\n", x.Identity.ID, strings.Join(x.Identity.Labels, ","))
	fmt.Fprintf(w, "Ingress:   %s\n", enforced(x.IngressEnforced, x.IngressTiered))
	fmt.Fprintf(w, "Egress:    %s\n", enforced(x.EgressEnforced, x.EgressTiered))
	if x.Audit {
		fmt.Fprintln(w, "Audit:     yes (denials are reported, not dropped)")
	}
	if x.Overflow != "" {
		fmt.Fprintf(w, "FAILS CLOSED: %s\n", x.Overflow)
	}
	if len(x.ClusterPolicies) > 0 {
		fmt.Fprintf(w, "Cluster:   %s\n", strings.Join(x.ClusterPolicies, ", "))
	}
	fmt.Fprintf(w, "Policies:  %s\n", dash(strings.Join(x.Policies, ", ")))
	if len(x.L7Policies) > 0 {
		fmt.Fprintf(w, "L7:        %s\n", strings.Join(x.L7Policies, ", "))
	}
	fmt.Fprintln(w)
	if len(x.Rules) > 0 {
		err := table(w, "RULE\tDIRECTION\tPEERS\tPORTS", func(tw io.Writer) {
			for _, r := range x.Rules {
				var peers []string
				for _, p := range r.Peers {
					peers = append(peers, peerText(p))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Rule, r.Direction, dash(strings.Join(peers, "; ")), dash(strings.Join(r.Ports, ",")))
			}
		})
		if err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	err := table(w, "DIRECTION\tPEER\tLABELS\tPORTS\tVERDICT\tRULE", func(tw io.Writer) {
		for _, e := range x.Entries {
			labels := strings.Join(e.PeerLabels, ",")
			if len(e.CIDRs) > 0 {
				labels = strings.Join(e.CIDRs, ",")
			}
			verdict := e.Verdict.String()
			if e.Verdict == policy.Redirect {
				verdict += ":" + strconv.Itoa(int(e.ProxyPort))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Direction, e.Peer, dash(labels), e.Ports, verdict, e.Rule)
		}
	})
	if err != nil || len(x.L7) == 0 {
		return err
	}
	fmt.Fprintln(w)
	return printL7(w, x.L7)
}

// printL7 shows the proxy listeners a pod's peers are redirected to, each
// with the HTTP rules it enforces.
func printL7(w io.Writer, ls []policy.L7Explanation) error {
	return table(w, "PORT\tPROXY PORT\tPEERS\tFROM\tALLOWED REQUESTS", func(tw io.Writer) {
		for _, l := range ls {
			proxy := strconv.Itoa(int(l.ProxyPort))
			switch {
			case l.ProxyPort == 0:
				proxy = "none (fails closed: no free proxy port)"
			case l.Audit:
				proxy += " (audit)"
			}
			rules := l.Rules
			if len(rules) == 0 {
				rules = []string{"none: every request denied (no rule applies to these peers)"}
			}
			for i, r := range rules {
				if i == 0 {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Port, proxy, strings.Join(l.Peers, ","), dash(strings.Join(l.Sources, ",")), r)
				} else {
					fmt.Fprintf(tw, "\t\t\t\t%s\n", r)
				}
			}
		}
	})
}

func enforced(b, tiered bool) string {
	switch {
	case tiered:
		return "enforced (ClusterNetworkPolicy tiers: every peer's decision is an entry below)"
	case b:
		return "enforced (default deny)"
	}
	return "not enforced (no policy selects the pod)"
}

func peerText(p policy.PeerExplanation) string {
	if p.IPBlock != "" {
		return "ipBlock " + p.IPBlock
	}
	ids := make([]string, 0, len(p.Identities))
	for _, id := range p.Identities {
		ids = append(ids, fmt.Sprintf("%d(%s)", id.ID, strings.Join(id.Labels, ",")))
	}
	return p.Selector + " → " + dash(strings.Join(ids, " "))
}

func (g *globals) identityList(cmd *cobra.Command) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	var ids []identity.Allocation
	if err := g.get(cmd.Context(), api.PathIdentities, &ids); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if g.output == "json" {
		return printJSON(w, listJSON(ids))
	}
	return table(w, "ID\tPODS\tLABELS", func(tw io.Writer) {
		for _, a := range ids {
			fmt.Fprintf(tw, "%d\t%d\t%s\n", a.ID, a.Refs, a.Labels)
		}
	})
}

type endpointPolicyJSON struct {
	EndpointID uint32 `json:"endpointID"`
	datapath.EndpointPolicy
}

func readAllPolicy(m *datapath.Maps) ([]endpointPolicyJSON, error) {
	ids, err := m.PolicyEndpoints()
	if err != nil {
		return nil, err
	}
	out := make([]endpointPolicyJSON, 0, len(ids))
	for _, id := range ids {
		p, err := m.DumpEndpointPolicy(id)
		if err != nil {
			return nil, err
		}
		out = append(out, endpointPolicyJSON{EndpointID: id, EndpointPolicy: p})
	}
	return out, nil
}

func (g *globals) bpfPolicyList(cmd *cobra.Command) error {
	return fromPins(g, cmd, readAllPolicy, func(p []endpointPolicyJSON) any { return listJSON(p) }, func(w io.Writer, eps []endpointPolicyJSON) error {
		err := table(w, "ENDPOINT\tDIRECTION\tIDENTITY\tPROTO\tPORTS\tVERDICT\tRULE", func(tw io.Writer) {
			for _, ep := range eps {
				for _, e := range ep.Entries {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\n", ep.EndpointID, events.Direction(e.Dir), identityText(e.Identity),
						protoText(e.Proto), portsText(e), verdictText(e), e.Rule)
				}
			}
		})
		if err != nil {
			return err
		}
		var cidrs bool
		for _, ep := range eps {
			cidrs = cidrs || len(ep.CIDRs) > 0
		}
		if !cidrs {
			return nil
		}
		fmt.Fprintln(w)
		return table(w, "ENDPOINT\tDIRECTION\tPREFIX\tCLASS", func(tw io.Writer) {
			for _, ep := range eps {
				for _, c := range ep.CIDRs {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", ep.EndpointID, events.Direction(c.Dir), c.Prefix, identityText(c.Class))
				}
			}
		})
	})
}

func identityText(id uint32) string {
	switch {
	case id == datapath.IdentityAny:
		return "any"
	case id == datapath.IdentityHost:
		return "1 (host)"
	case id == datapath.IdentityWorld:
		return "2 (world)"
	case id == datapath.IdentityRemoteNode:
		return "6 (remote-node)"
	case id >= uint32(identity.LocalCIDRBase):
		return "cidr-class " + strconv.Itoa(int(id-uint32(identity.LocalCIDRBase)))
	}
	return strconv.Itoa(int(id))
}

func protoText(p uint8) string {
	if p == 0 {
		return "any"
	}
	return string(model.ProtocolOf(p))
}

// portsText shows a port prefix as the range it covers.
func portsText(e datapath.PolicyEntry) string {
	if e.Proto == 0 || e.PortPrefixLen == 0 {
		return "any"
	}
	if e.PortPrefixLen >= 16 {
		return strconv.Itoa(int(e.Port))
	}
	last := uint32(e.Port) | (1<<(16-uint32(e.PortPrefixLen)) - 1)
	return fmt.Sprintf("%d-%d", e.Port, last)
}

func verdictText(e datapath.PolicyEntry) string {
	if e.Verdict == datapath.VerdictRedirect {
		return fmt.Sprintf("redirect:%d", e.ProxyPort)
	}
	return events.Verdict(e.Verdict).String()
}

type ipcacheJSON struct {
	Prefix netip.Prefix `json:"prefix"`
	datapath.IPCacheEntry
}

func readIPCache(m *datapath.Maps) ([]ipcacheJSON, error) {
	ipc, err := m.DumpIPCache()
	if err != nil {
		return nil, err
	}
	out := make([]ipcacheJSON, 0, len(ipc))
	for p, e := range ipc {
		out = append(out, ipcacheJSON{Prefix: p, IPCacheEntry: e})
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Prefix.Addr().Compare(out[j].Prefix.Addr()); c != 0 {
			return c < 0
		}
		return out[i].Prefix.Bits() < out[j].Prefix.Bits()
	})
	return out, nil
}

func (g *globals) bpfIPCacheList(cmd *cobra.Command) error {
	return fromPins(g, cmd, readIPCache, func(e []ipcacheJSON) any { return listJSON(e) }, func(w io.Writer, entries []ipcacheJSON) error {
		return table(w, "PREFIX\tIDENTITY\tLOCAL ENDPOINT", func(tw io.Writer) {
			for _, e := range entries {
				ep := "-"
				if e.EndpointID != 0 {
					ep = strconv.Itoa(int(e.EndpointID))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Prefix, identityText(e.Identity), ep)
			}
		})
	})
}
