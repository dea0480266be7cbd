// Package cli is the `sluice` command tree. Commands write to the streams
// cobra is given, so tests run them like functions. Agent commands talk to
// the agent's API socket; `sluice bpf ...` reads the pinned maps directly
// and works while the agent is down.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
)

type globals struct {
	stateDir string
	socket   string
	bpfRoot  string
	output   string
}

// NewRootCommand builds the `sluice` command.
func NewRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "sluice",
		Short:         "Inspect and operate a Sluice node agent",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.stateDir, "state-dir", api.DefaultStateDir, "the agent's --state-dir (its API socket lives there)")
	pf.StringVar(&g.socket, "agent", "", "path of the agent API socket (default <state-dir>/"+api.SocketName+")")
	pf.StringVar(&g.bpfRoot, "bpf-root", datapath.DefaultBPFRoot, "the agent's --bpf-root, for the sluice bpf commands")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")

	endpoint := &cobra.Command{Use: "endpoint", Short: "Local endpoints (pods) as the agent sees them"}
	endpoint.AddCommand(&cobra.Command{
		Use: "list", Short: "List local endpoints", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.endpointList(cmd) },
	})
	bpf := &cobra.Command{Use: "bpf", Short: "Read pinned BPF maps directly (works while the agent is down)"}
	ct := &cobra.Command{Use: "ct", Short: "Connection-tracking table"}
	ct.AddCommand(&cobra.Command{
		Use: "list", Short: "List live connection-tracking entries", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.bpfCTList(cmd) },
	})
	bpfEp := &cobra.Command{Use: "endpoint", Short: "The sl_endpoints map"}
	bpfEp.AddCommand(&cobra.Command{
		Use: "list", Short: "List endpoint map entries", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.bpfEndpointList(cmd) },
	})
	bpf.AddCommand(ct, bpfEp, g.bpfLBCommand())
	bpf.AddCommand(g.bpfPolicyCommands()...)
	bpfMetrics := &cobra.Command{Use: "metrics", Short: "The per-CPU counters (sl_metrics)"}
	bpfMetrics.AddCommand(&cobra.Command{
		Use: "list", Short: "List packet and byte counters by metric, direction and reason, summed over CPUs", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.bpfMetricsList(cmd) },
	})
	bpf.AddCommand(bpfMetrics)
	root.AddCommand(
		&cobra.Command{
			Use: "status", Short: "Agent health, kernel features, attach mode, counters and errors", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return g.status(cmd) },
		},
		g.eventsCommand(),
		endpoint, g.serviceCommand(), g.policyCommand(), g.identityCommand(), bpf,
		g.observeCommand(), g.mapCommand(), g.proxyCommand(),
	)
	return root
}

// eventsDeprecated is what `sluice events` says before the flows.
const eventsDeprecated = "sluice events is deprecated: the agent's events are flows; use `sluice observe`, which takes the same flags"

// eventsCommand is `sluice observe` under its old name: the agent keeps
// its events only as flows now (one store, each event enriched once), so
// `sluice events` takes observe's flags and prints flows.
func (g *globals) eventsCommand() *cobra.Command {
	cmd := g.observeCommand()
	cmd.Use = "events"
	cmd.Short = "Deprecated: the old name of observe (recent flows)"
	cmd.Long = cmd.Short + ": use `sluice observe`, which takes the same flags.\n\n" + cmd.Long
	cmd.Example = ""
	// On stderr, so that scripts reading -o json keep working.
	cmd.PreRun = func(cmd *cobra.Command, _ []string) {
		fmt.Fprintln(cmd.ErrOrStderr(), eventsDeprecated)
	}
	return cmd
}

func (g *globals) socketPath() string {
	if g.socket != "" {
		return g.socket
	}
	return filepath.Join(g.stateDir, api.SocketName)
}

func (g *globals) get(ctx context.Context, path string, out any) error {
	return g.request(ctx, http.MethodGet, path, nil, 5*time.Second, out)
}

// request sends a request with body (nil for none) to the agent's API and
// decodes its JSON answer into out.
func (g *globals) request(ctx context.Context, method, path string, body io.Reader, timeout time.Duration, out any) error {
	sock := g.socketPath()
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://sluice"+path, body)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the agent at %s (is it running? set --state-dir or --agent): %w", sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("agent answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode the agent's answer to %s from %s: %w", path, sock, err)
	}
	return nil
}

func (g *globals) checkOutput() error {
	if g.output != "table" && g.output != "json" {
		return fmt.Errorf("-o %q is not a known output format: use table or json", g.output)
	}
	return nil
}

// printJSON writes v indented. Lists go through listJSON first so that an
// empty list prints as [] and scripts can iterate it (`jq '.[]'` fails on null).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func listJSON[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func table(w io.Writer, header string, rows func(tw io.Writer)) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	rows(tw)
	return tw.Flush()
}

func (g *globals) status(cmd *cobra.Command) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	var st api.Status
	if err := g.get(cmd.Context(), api.PathStatus, &st); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if g.output == "json" {
		return printJSON(w, st)
	}
	ready := "not ready"
	if st.Ready {
		ready = "ready"
	}
	fmt.Fprintf(w, "Node:          %s (%s, up %s)\n", st.NodeName, ready, time.Since(st.StartedAt).Round(time.Second))
	fmt.Fprintf(w, "Source:        %s\n", st.Source)
	fmt.Fprintf(w, "Kernel:        %s (tcx: %s, ring buffer: %s)\n", st.Kernel.Release, yes(st.Kernel.TCX), yes(st.Kernel.RingBuf))
	fmt.Fprintf(w, "Attach mode:   %s\n", st.AttachMode)
	fmt.Fprintf(w, "BPF root:      %s (adopted pinned state: %s)\n", st.BPFRoot, yes(st.Adopted))
	fmt.Fprintf(w, "Endpoints:     %d\n", st.Endpoints)
	fmt.Fprintf(w, "Conntrack:     %d/%d entries\n", st.CTEntries, st.CTMax)
	switch {
	case st.SocketLB == "" || st.SocketLB == "off":
		fmt.Fprintf(w, "Socket LB:     %s\n", dash(st.SocketLB))
	case st.Kernel.SockDestroy == "":
		fmt.Fprintf(w, "Socket LB:     %s (connected UDP sockets of removed backends are NOT destroyed)\n", st.SocketLB)
	default:
		fmt.Fprintf(w, "Socket LB:     %s (UDP sockets of removed backends destroyed by %s)\n", st.SocketLB, st.Kernel.SockDestroy)
	}
	if st.SocketLB != "" && st.SocketLB != "off" && !st.Kernel.SetRetval {
		fmt.Fprintln(w, "               connect() to a service without endpoints fails with EPERM, not ECONNREFUSED (no bpf_set_retval: Linux 5.18+)")
	}
	fmt.Fprintf(w, "Services:      %d frontends, %d backends (applied %d times, %d connections cleaned)\n",
		st.Services.Frontends, st.Services.Backends, st.Services.Applied, st.Services.ConnectionsCleaned)
	fmt.Fprintf(w, "Policy:        %d endpoints enforced, %d identities, revision %d\n",
		st.Policy.EnforcedEndpoints, st.Policy.Identities, st.Policy.Revision)
	if st.Policy.L7Listeners > 0 {
		fmt.Fprintf(w, "L7 policy:     %d endpoints redirect to %d proxy listeners\n", st.Policy.L7Redirecting, st.Policy.L7Listeners)
	}
	fmt.Fprintf(w, "Flows:         %d/%d stored, %d seen, %.1f/s\n", st.Flows.Stored, st.Flows.Capacity, st.Flows.Seen, st.Flows.PerSec)
	fmt.Fprintf(w, "Events lost:   %d\n", st.EventsLost)
	if p := st.Proxy; p == nil {
		fmt.Fprintln(w, "Proxy (xDS):   off")
	} else {
		fmt.Fprintf(w, "Proxy (xDS):   version %s, %d listeners, %d Envoy streams, in sync: %s, %d NACKs\n",
			dash(p.Version), len(p.Listeners), len(p.Streams), syncText(p), p.NACKs)
	}
	if len(st.Maps) > 0 {
		fmt.Fprintln(w, "Maps:")
		_ = table(w, "  MAP\tENTRIES\tMAX\tUSED", func(tw io.Writer) {
			for _, m := range st.Maps {
				fmt.Fprintf(tw, "  %s\t%d\t%d\t%.1f%%\n", m.Map, m.Entries, m.Max, 100*float64(m.Entries)/float64(max(m.Max, 1)))
			}
		})
	}
	if len(st.NAT) == 0 {
		fmt.Fprintln(w, "SNAT ports:    none in use")
	} else {
		fmt.Fprintln(w, "SNAT ports:")
		_ = table(w, "  ADDRESS\tPROTO\tIN USE\tRANGE\tUSED", func(tw io.Writer) {
			for _, u := range st.NAT {
				fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%.1f%%\n", u.Address, u.Proto, u.PortsInUse, u.PortsTotal, 100*float64(u.PortsInUse)/float64(max(u.PortsTotal, 1)))
			}
		})
	}
	if len(st.Counters) > 0 {
		fmt.Fprintln(w, "Counters:")
		_ = table(w, "  VERDICT\tDIRECTION\tREASON\tPACKETS\tBYTES", func(tw io.Writer) {
			for _, c := range st.Counters {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\n", c.Verdict, c.Direction, dash(c.Reason), c.Packets, c.Bytes)
			}
		})
	}
	if len(st.Errors) == 0 {
		fmt.Fprintln(w, "Errors:        none")
		return nil
	}
	fmt.Fprintln(w, "Errors:")
	for _, e := range st.Errors {
		fmt.Fprintf(w, "  [%s] %s\n", e.Component, e.Message)
	}
	return nil
}

func (g *globals) endpointList(cmd *cobra.Command) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	var eps []api.Endpoint
	if err := g.get(cmd.Context(), api.PathEndpoints, &eps); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if g.output == "json" {
		return printJSON(w, listJSON(eps))
	}
	return table(w, "ID\tPOD\tIPS\tINTERFACE\tSTATE", func(tw io.Writer) {
		for _, e := range eps {
			state := e.State
			if e.Error != "" {
				state += ": " + e.Error
			}
			iface := dash(e.Interface)
			if e.IfIndex != 0 {
				iface = fmt.Sprintf("%s (%d)", iface, e.IfIndex)
			}
			fmt.Fprintf(tw, "%d\t%s/%s\t%s\t%s\t%s\n", e.ID, e.Namespace, e.Pod, dash(strings.Join(e.IPs, ",")), iface, state)
		}
	})
}

func (g *globals) openMaps() (*datapath.Maps, error) {
	return datapath.OpenPinned(g.bpfRoot)
}

// fromPins runs read on the pinned maps (no agent needed) and prints its
// result as JSON or with render.
func fromPins[T any](g *globals, cmd *cobra.Command, read func(*datapath.Maps) (T, error), asJSON func(T) any, render func(io.Writer, T) error) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	m, err := g.openMaps()
	if err != nil {
		return err
	}
	defer m.Close()
	v, err := read(m)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if g.output == "json" {
		return printJSON(w, asJSON(v))
	}
	return render(w, v)
}

func (g *globals) bpfCTList(cmd *cobra.Command) error {
	return fromPins(g, cmd, (*datapath.Maps).ListCT, func(e []datapath.CTEntry) any { return listJSON(e) }, func(w io.Writer, entries []datapath.CTEntry) error {
		return table(w, "ENDPOINT\tSCOPE\tPROTO\tSOURCE\tDESTINATION\tSTATE\tORIGIN\tAGE\tEXPIRES\tPKTS (ORIG/REPLY)\tBYTES (ORIG/REPLY)", func(tw io.Writer) {
			for _, e := range entries {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d/%d\n", e.EndpointID, e.Scope, e.Proto, e.Src, e.Dst, e.State, e.Origin,
					e.Age.Round(time.Second), e.ExpiresIn.Round(time.Second), e.PacketsOrig, e.PacketsReply, e.BytesOrig, e.BytesReply)
			}
		})
	})
}

func (g *globals) bpfMetricsList(cmd *cobra.Command) error {
	return fromPins(g, cmd, (*datapath.Maps).Counters, func(c []datapath.Counter) any { return listJSON(c) }, func(w io.Writer, cs []datapath.Counter) error {
		return table(w, "METRIC\tDIRECTION\tREASON\tPACKETS\tBYTES", func(tw io.Writer) {
			for _, c := range cs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", c.Metric, c.Dir, dash(c.Reason), c.Packets, c.Bytes)
			}
		})
	})
}

func (g *globals) bpfEndpointList(cmd *cobra.Command) error {
	return fromPins(g, cmd, (*datapath.Maps).ListEndpoints, func(e []datapath.EndpointEntry) any { return listJSON(e) }, func(w io.Writer, entries []datapath.EndpointEntry) error {
		return table(w, "ID\tIFINDEX\tIPV4\tIPV6\tIDENTITY\tPOLICY", func(tw io.Writer) {
			for _, e := range entries {
				v4, v6 := "-", "-"
				if e.IPv4.IsValid() {
					v4 = e.IPv4.String()
				}
				if e.IPv6.IsValid() {
					v6 = e.IPv6.String()
				}
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%d\t%s\n", e.ID, e.IfIndex, v4, v6, e.Identity, epPolicyText(e.PolicyFlags))
			}
		})
	})
}

// epPolicyText names an endpoint's policy flags.
func epPolicyText(f uint32) string { return dash(strings.Join(datapath.PolicyFlagNames(f), ",")) }

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
