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
	"github.com/sluice-net/sluice/pkg/model"
)

func (g *globals) serviceCommand() *cobra.Command {
	svc := &cobra.Command{Use: "service", Short: "Services (frontends and their backends) as the agent computed them"}
	var only string
	list := &cobra.Command{
		Use: "list", Short: "List service frontends with their algorithm and backends", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.serviceList(cmd, only) },
	}
	list.Flags().StringVar(&only, "service", "", "show only this service (namespace/name)")
	svc.AddCommand(list)
	return svc
}

func (g *globals) bpfLBCommand() *cobra.Command {
	lb := &cobra.Command{Use: "lb", Short: "The load-balancing maps (sl_lb_svc, sl_lb_backends)"}
	lb.AddCommand(&cobra.Command{
		Use: "list", Short: "List programmed frontends, their backend slots and the backends", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.bpfLBList(cmd) },
	})
	return lb
}

func (g *globals) serviceList(cmd *cobra.Command, only string) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	var svcs api.Services
	if err := g.get(cmd.Context(), api.PathServices, &svcs); err != nil {
		return err
	}
	if only != "" {
		svcs.Frontends = filter(svcs.Frontends, func(f api.Frontend) bool { return f.Service.String() == only })
		svcs.Memory = filter(svcs.Memory, func(m api.ServiceMemory) bool { return m.Service.String() == only })
	}
	w := cmd.OutOrStdout()
	if g.output == "json" {
		svcs.Frontends = listJSON(svcs.Frontends)
		return printJSON(w, svcs)
	}
	err := table(w, "SERVICE\tKIND\tFRONTEND\tALGORITHM\tBACKENDS", func(tw io.Writer) {
		for i := range svcs.Frontends {
			f := &svcs.Frontends[i]
			port := f.PortName
			if port == "" {
				port = strconv.Itoa(int(f.Port))
			}
			alg := dash(f.Algorithm)
			if f.SessionAffinity {
				alg += fmt.Sprintf(" affinity %ds", f.AffinityTimeout)
			}
			fmt.Fprintf(tw, "%s:%s\t%s\t%s\t%s\t%s\n", f.Service, port, f.Kind, f.Key(), alg, frontendBackends(f))
		}
	})
	if err != nil {
		return err
	}
	for _, m := range svcs.Memory {
		fmt.Fprintf(w, "maglev memory: %s %d tables, %d bytes\n", m.Service, m.Tables, m.Bytes)
	}
	return nil
}

// frontendBackends renders the BACKENDS column: "ip:port" per backend, with
// the state of those that take no new connections.
func frontendBackends(f *api.Frontend) string {
	var parts []string
	switch {
	case f.NoLocalEndpoints:
		parts = append(parts, "none local (drops)")
	case f.NoEndpoints:
		parts = append(parts, "none (rejects)")
	}
	for _, b := range f.Backends {
		s := netip.AddrPortFrom(b.Address, b.Port).String()
		if b.State != api.BackendActive {
			s += " (" + b.State + ")"
		}
		parts = append(parts, s)
	}
	out := dash(strings.Join(parts, ", "))
	if f.TrafficPolicyLocal {
		out += " [local]"
	}
	return out
}

func filter[T any](s []T, keep func(T) bool) []T {
	var out []T
	for _, x := range s {
		if keep(x) {
			out = append(out, x)
		}
	}
	return out
}

// lbFrontendJSON and lbBackendJSON are datapath.LBState in a form JSON can
// carry: LBState's maps have struct keys, which encoding/json refuses.
type lbFrontendJSON struct {
	ID              uint32     `json:"id"`
	Address         netip.Addr `json:"address"`
	Port            uint16     `json:"port"`
	Protocol        string     `json:"protocol"`
	Flags           []string   `json:"flags"`
	AffinityTimeout uint32     `json:"affinityTimeout,omitempty"`
	// SourceRanges are the loadBalancerSourceRanges (flag source-ranges).
	SourceRanges []netip.Prefix `json:"sourceRanges,omitempty"`
	// Slots are the backend IDs taking new connections, in slot order.
	Slots []uint32 `json:"slots"`
}

type lbBackendJSON struct {
	ID       uint32     `json:"id"`
	Address  netip.Addr `json:"address"`
	Port     uint16     `json:"port"`
	Protocol string     `json:"protocol"`
	State    string     `json:"state"`
}

type lbStateJSON struct {
	Frontends []lbFrontendJSON `json:"frontends"`
	Backends  []lbBackendJSON  `json:"backends"`
}

// lbFlagNames names slot 0's flags, in the order they are printed.
var lbFlagNames = []struct {
	flag uint16
	name string
}{
	{datapath.LBFlagAffinity, "affinity"},
	{datapath.LBFlagMaglev, "maglev"},
	{datapath.LBFlagExternal, "external"},
	{datapath.LBFlagLocal, "etp-local"},
	{datapath.LBFlagNoLocal, "no-local-backend"},
	{datapath.LBFlagSrcRange, "source-ranges"},
}

func lbFlags(f uint16) []string {
	out := []string{}
	for _, n := range lbFlagNames {
		if f&n.flag != 0 {
			out = append(out, n.name)
			f &^= n.flag
		}
	}
	if f != 0 {
		out = append(out, fmt.Sprintf("0x%x", f))
	}
	return out
}

// lbFlagsText is the FLAGS column: flag names, and the source ranges.
func lbFlagsText(f datapath.LBFrontend) string {
	s := strings.Join(lbFlags(f.Flags), ",")
	if f.Flags&datapath.LBFlagSrcRange != 0 {
		rs := make([]string, len(f.SourceRanges))
		for i, r := range f.SourceRanges {
			rs[i] = r.String()
		}
		s += "=" + dash(strings.Join(rs, ","))
	}
	return dash(s)
}

func lbBackendState(b datapath.LBBackend) string {
	if b.Terminating {
		return "terminating"
	}
	return "active"
}

func sortedLBBackends(st datapath.LBState) []datapath.LBBackend {
	out := make([]datapath.LBBackend, 0, len(st.Backends))
	for _, b := range st.Backends {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (g *globals) bpfLBList(cmd *cobra.Command) error {
	return fromPins(g, cmd, (*datapath.Maps).LBDump, lbJSON, func(w io.Writer, st datapath.LBState) error {
		frontends, backends := st.LBFrontendsSorted(), sortedLBBackends(st)
		err := table(w, "ID\tFRONTEND\tFLAGS\tSLOTS\tBACKENDS", func(tw io.Writer) {
			for _, f := range frontends {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", f.ID, f.Key, lbFlagsText(f), len(f.Slots), lbSlots(f, st.Backends))
			}
		})
		if err != nil {
			return err
		}
		fmt.Fprintln(w)
		return table(w, "ID\tADDRESS\tSTATE", func(tw io.Writer) {
			for _, b := range backends {
				fmt.Fprintf(tw, "%d\t%s/%s\t%s\n", b.ID, netip.AddrPortFrom(b.Addr, b.Port), model.ProtocolOf(b.Proto), lbBackendState(b))
			}
		})
	})
}

func lbJSON(st datapath.LBState) any {
	frontends, backends := st.LBFrontendsSorted(), sortedLBBackends(st)
	out := lbStateJSON{Frontends: []lbFrontendJSON{}, Backends: []lbBackendJSON{}}
	for _, f := range frontends {
		out.Frontends = append(out.Frontends, lbFrontendJSON{
			ID: f.ID, Address: f.Key.Addr, Port: f.Key.Port, Protocol: string(model.ProtocolOf(f.Key.Proto)),
			Flags: lbFlags(f.Flags), AffinityTimeout: f.AffinityTimeout, SourceRanges: f.SourceRanges, Slots: listJSON(f.Slots),
		})
	}
	for _, b := range backends {
		out.Backends = append(out.Backends, lbBackendJSON{
			ID: b.ID, Address: b.Addr, Port: b.Port, Protocol: string(model.ProtocolOf(b.Proto)), State: lbBackendState(b),
		})
	}
	return out
}

// lbSlots renders a frontend's slots as "id=ip:port" in slot order. A
// Maglev table has thousands of slots, so for Maglev frontends each backend
// is listed once, in order of first appearance, with its slot count.
func lbSlots(f datapath.LBFrontend, backends map[uint32]datapath.LBBackend) string {
	name := func(id uint32) string {
		b, ok := backends[id]
		if !ok {
			return fmt.Sprintf("%d=(missing)", id)
		}
		return fmt.Sprintf("%d=%s", id, netip.AddrPortFrom(b.Addr, b.Port))
	}
	var parts []string
	if f.Flags&datapath.LBFlagMaglev != 0 {
		count := map[uint32]int{}
		var order []uint32
		for _, id := range f.Slots {
			if count[id] == 0 {
				order = append(order, id)
			}
			count[id]++
		}
		for _, id := range order {
			parts = append(parts, fmt.Sprintf("%s (%d slots)", name(id), count[id]))
		}
	} else {
		for _, id := range f.Slots {
			parts = append(parts, name(id))
		}
	}
	return dash(strings.Join(parts, ","))
}
