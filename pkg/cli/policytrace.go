package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-net/sluice/pkg/api"
)

// traceTimeout bounds a trace: a --what-if builds the policy of a whole
// cluster once more and judges every stored flow, seconds on a large one.
const traceTimeout = 2 * time.Minute

type traceOptions struct {
	from, to, protocol, whatIf string
	port                       uint16
}

func (g *globals) policyTraceCommand() *cobra.Command {
	o := &traceOptions{}
	cmd := &cobra.Command{
		Use:   "trace --from NS/POD|IP --to NS/POD|NS/SERVICE|IP[:PORT] --port P",
		Short: "What happens to a new connection: service translation, egress and ingress decisions, checked against the maps",
		Long: `What happens to a new connection: service translation, egress and ingress decisions, checked against the maps.

The agent answers from its live state. For a service (by NAMESPACE/NAME or by its address) the trace shows the
frontend and the backends taking new connections, from the agent's service
model and from the LB maps. For each destination it shows the client's
egress decision and the server's ingress decision: allowed by which policy
rule and entry, or denied by default-deny. Pods of this node are also looked
up in the datapath's own maps (endpoint flags, ipcache, the policy trie); pods
of other nodes are decided from the same model, as their agent decides them.
A disagreement between the maps and the model is printed as an ERROR line
and the command exits non-zero.

--what-if FILE evaluates a manifest of NetworkPolicies without applying it:
the connections of the agent's flow store it would deny, grouped, and the
trace's answer under it. Without --from and --to, only the connections.`,
		Example: `  sluice policy trace --from shop/web-7d9f-x2x4q --to shop/api --port 80
  sluice policy trace --from 203.0.113.7 --to shop/web-7d9f-x2x4q:8080
  sluice policy trace --from shop/web-7d9f-x2x4q --to 10.96.0.10:53 --protocol udp -o json
  sluice policy trace --what-if lockdown.yaml
  sluice policy trace --from shop/web-7d9f-x2x4q --to shop/db-0:5432 --what-if lockdown.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.policyTrace(cmd, o) },
	}
	fs := cmd.Flags()
	fs.StringVar(&o.from, "from", "", "the client: `NAMESPACE/POD` or an IP address")
	fs.StringVar(&o.to, "to", "", "the server: NAMESPACE/POD, NAMESPACE/SERVICE or an IP address, optionally :PORT (pod: or svc: in front when a pod and a service share the name)")
	fs.Uint16Var(&o.port, "port", 0, "the destination port (a service's port for a service)")
	fs.StringVar(&o.protocol, "protocol", "tcp", "tcp, udp or sctp")
	fs.StringVar(&o.whatIf, "what-if", "", "evaluate the NetworkPolicies of `FILE` (YAML or JSON, - for stdin) as if applied")
	return cmd
}

func (g *globals) policyTrace(cmd *cobra.Command, o *traceOptions) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	if (o.from == "") != (o.to == "") {
		return errors.New("give both --from and --to")
	}
	if o.from == "" && o.whatIf == "" {
		return errors.New("give --from and --to (or --what-if FILE)")
	}
	q := url.Values{}
	if o.from != "" {
		q.Set("from", o.from)
		q.Set("to", o.to)
		q.Set("protocol", strings.ToUpper(o.protocol))
		if o.port != 0 {
			q.Set("port", strconv.Itoa(int(o.port)))
		}
	}
	method, body := http.MethodGet, io.Reader(nil)
	if o.whatIf != "" {
		data, name, err := readManifest(cmd, o.whatIf)
		if err != nil {
			return err
		}
		q.Set("file", name)
		method, body = http.MethodPost, bytes.NewReader(data)
	}
	var ans api.PolicyTraceAnswer
	if err := g.request(cmd.Context(), method, api.PathPolicyTrace+"?"+q.Encode(), body, traceTimeout, &ans); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if g.output == "json" {
		if err := printJSON(w, ans); err != nil {
			return err
		}
	} else {
		if ans.Trace != nil {
			printTrace(w, ans.Trace)
		}
		if ans.WhatIf != nil {
			if ans.Trace != nil {
				fmt.Fprintln(w)
			}
			printWhatIf(w, ans.WhatIf)
		}
	}
	if ans.Trace != nil && len(ans.Trace.Problems) > 0 {
		if g.output == "json" {
			for _, p := range ans.Trace.Problems {
				fmt.Fprintln(cmd.ErrOrStderr(), "ERROR: "+p)
			}
		}
		return fmt.Errorf("the datapath's maps disagree with the agent's model (%s): the maps are what packets meet", countText(len(ans.Trace.Problems), "problem"))
	}
	return nil
}

// readManifest reads --what-if's file, or stdin for "-".
func readManifest(cmd *cobra.Command, file string) ([]byte, string, error) {
	if file == "-" {
		b, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return nil, "", fmt.Errorf("--what-if -: read stdin: %w", err)
		}
		return b, "stdin.yaml", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, "", fmt.Errorf("--what-if: %w", err)
	}
	return b, filepath.Base(file), nil
}

func printTrace(w io.Writer, t *api.PolicyTrace) {
	fmt.Fprintf(w, "Trace:    %s -> %s %s/%d\n", endText(t.From), endText(t.To), t.Protocol, t.Port)
	if s := t.Service; s != nil {
		fmt.Fprintf(w, "Service:  %s, frontend %s (%s)\n", s.Service, s.Frontend, s.Kind)
		var model []string
		for _, b := range s.Backends {
			x := b.Address.String()
			if b.Pod.Name != "" {
				x += " " + b.Pod.String()
			}
			if b.Node != "" {
				x += " on " + b.Node
			}
			model = append(model, x)
		}
		fmt.Fprintf(w, "  backends (model): %s\n", dash(strings.Join(model, ", ")))
		if s.MapsRead {
			fmt.Fprintf(w, "  backends (maps):  %s\n", dash(strings.Join(s.MapBackends, ", ")))
		}
	}
	if len(t.Paths) == 0 {
		fmt.Fprintln(w, "  no backend takes new connections: the connection is refused")
	}
	for _, p := range t.Paths {
		fmt.Fprintf(w, "\nTo %s, port %d:\n", endText(p.To), p.Port)
		if p.Egress == nil {
			fmt.Fprintln(w, "  egress:  the client is not a pod: no egress policy")
		}
		for _, d := range []*api.TraceDecision{p.Egress, p.Ingress} {
			if d != nil {
				printDecision(w, d)
			}
		}
		if p.Ingress == nil {
			fmt.Fprintln(w, "  ingress: the server is not a pod: no ingress policy")
		}
		fmt.Fprintf(w, "  => %s\n", strings.ToUpper(p.Verdict))
	}
	fmt.Fprintf(w, "\nVerdict:  %s\n", strings.ToUpper(t.Verdict))
	for _, p := range t.Problems {
		fmt.Fprintln(w, "ERROR: "+p)
	}
}

func endText(e api.TraceEnd) string {
	switch e.Kind {
	case "pod":
		s := fmt.Sprintf("%s (pod %s on %s", e.Name, e.Address, e.Node)
		if e.Identity != 0 {
			s += ", identity " + strconv.Itoa(int(e.Identity))
		}
		return s + ")"
	case "service":
		return fmt.Sprintf("%s (service %s)", e.Name, e.Address)
	case "node":
		return fmt.Sprintf("%s (node %s)", e.Address, e.Name)
	}
	if len(e.Labels) > 0 {
		return fmt.Sprintf("%s (%s)", e.Name, strings.Join(e.Labels, ","))
	}
	return e.Name
}

// printDecision prints one endpoint's decision and, under it, the maps'.
func printDecision(w io.Writer, d *api.TraceDecision) {
	where := "model, computed for " + d.Node
	if d.Local {
		where = "this node"
	}
	fmt.Fprintf(w, "  %-8s at %s (%s): %s\n", d.Direction+":", d.Endpoint, where, decisionText(d.Verdict, tierText(d.Tier, d.Rule), d.Entry))
	peer := strconv.Itoa(int(d.Peer))
	if len(d.PeerLabels) > 0 {
		peer += " (" + strings.Join(d.PeerLabels, ",") + ")"
	}
	fmt.Fprintf(w, "            peer identity %s%s\n", peer, auditText(d.Audit))
	if m := d.Maps; m != nil {
		mark := "same as the model"
		if !m.Agrees {
			mark = "DIFFERS from the model"
		}
		fmt.Fprintf(w, "            maps: endpoint %d [%s], peer identity %d: %s; %s\n", m.EndpointID, strings.Join(m.Flags, ","),
			m.Peer, decisionText(m.Verdict, m.Rule, m.Entry), mark)
	}
}

func decisionText(verdict, rule, entry string) string {
	switch {
	case verdict == "not-enforced":
		return "not enforced (no policy selects the pod in this direction)"
	case rule == "":
		return verdict
	case entry == "":
		return verdict + " by " + rule
	}
	return verdict + " by " + rule + ", entry " + entry
}

// tierText puts the deciding tier before the rule where
// ClusterNetworkPolicy rules apply: "Admin tier: cnp/guardrail egress[0]".
func tierText(tier, rule string) string {
	if tier == "" || rule == "" {
		return rule
	}
	return tier + " tier: " + rule
}

func auditText(audit bool) string {
	if audit {
		return "; audit mode: denials are forwarded and reported"
	}
	return ""
}

func printWhatIf(w io.Writer, x *api.PolicyWhatIf) {
	fmt.Fprintf(w, "What if:  %s applied", strings.Join(x.Policies, ", "))
	if len(x.Replaced) > 0 {
		fmt.Fprintf(w, " (replacing the applied %s)", strings.Join(x.Replaced, ", "))
	}
	fmt.Fprintf(w, "\n%d connections in the flow store; the manifest would deny %d of them", x.Connections, deniedCount(x.Denied))
	if len(x.Denied) == 0 {
		fmt.Fprintln(w, ".")
	} else {
		fmt.Fprintln(w, ":")
		_ = table(w, "  COUNT\tFROM\tTO\tPORT\tDENIED AT\tNOW\tFIRST\tLAST\tEXAMPLE", func(tw io.Writer) {
			for _, d := range x.Denied {
				fmt.Fprintf(tw, "  %d\t%s\t%s\t%s/%d\t%s\t%s\t%s\t%s\t%s\n", d.Count, d.From, d.To, d.Protocol, d.Port, d.At, dash(d.Now),
					d.First.UTC().Format(timeLayout), d.Last.UTC().Format(timeLayout), d.Example)
			}
		})
	}
	if x.Trace != nil {
		fmt.Fprintln(w, "\nThe trace under the manifest (the model only):")
		printTrace(w, x.Trace)
	}
}

func deniedCount(ds []api.WhatIfDenied) int {
	n := 0
	for _, d := range ds {
		n += d.Count
	}
	return n
}

// countText is "1 problem", "2 problems".
func countText(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
