package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-net/sluice/pkg/api"
)

func (g *globals) proxyCommand() *cobra.Command {
	proxy := &cobra.Command{Use: "proxy", Short: "The node's shared Envoy as the agent's xDS server sees it"}
	proxy.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "The L7 configuration served to Envoy over xDS, its listeners, and Envoy's ACKs and NACKs",
		Long: "The L7 configuration served to Envoy over xDS, its listeners, and Envoy's ACKs and NACKs.\n\n" +
			"The node's Envoy connects to the agent's xDS server (ADS on <state-dir>/xds.sock). This shows the\n" +
			"version served and its listeners, Envoy's open streams, the version Envoy acknowledged per resource\n" +
			"type (in sync when every type acknowledged the version served), the last response Envoy rejected\n" +
			"with its message, and the last L7 configuration that could not be served (the previous one keeps\n" +
			"serving).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.proxyStatus(cmd) },
	})
	return proxy
}

func (g *globals) proxyStatus(cmd *cobra.Command) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	var st api.ProxyStatus
	if err := g.get(cmd.Context(), api.PathProxy, &st); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if g.output == "json" {
		return printJSON(w, st)
	}
	fmt.Fprintf(w, "Socket:      %s\n", st.Socket)
	if st.Version == "" {
		fmt.Fprintln(w, "Version:     none served yet")
	} else {
		fmt.Fprintf(w, "Version:     %s (served %s ago, %d pushes)\n", st.Version, since(st.PushedAt), st.Pushes)
	}
	fmt.Fprintf(w, "In sync:     %s\n", syncText(&st))
	if len(st.Listeners) == 0 {
		fmt.Fprintln(w, "Listeners:   none")
	} else {
		fmt.Fprintln(w, "Listeners:")
		_ = table(w, "  NAME\tPORT\tRULES\tMODE", func(tw io.Writer) {
			for _, l := range st.Listeners {
				mode := "enforce"
				if l.Audit {
					mode = "audit"
				}
				fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\n", l.Name, l.Port, l.Rules, mode)
			}
		})
	}
	if len(st.Streams) == 0 {
		fmt.Fprintln(w, "Streams:     none (Envoy is not connected)")
	} else {
		fmt.Fprintln(w, "Streams:")
		_ = table(w, "  ID\tNODE\tOPEN FOR", func(tw io.Writer) {
			for _, s := range st.Streams {
				fmt.Fprintf(tw, "  %d\t%s\t%s\n", s.ID, dash(s.Node), since(s.Opened))
			}
		})
	}
	if len(st.Acks) > 0 {
		fmt.Fprintln(w, "Acknowledged:")
		_ = table(w, "  TYPE\tVERSION\tNODE\tLATENCY\tAGO", func(tw io.Writer) {
			for _, a := range st.Acks {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", shortType(a.TypeURL), a.Version, dash(a.Node), a.Latency.Round(time.Microsecond), since(a.At))
			}
		})
	}
	if n := st.LastNACK; n == nil {
		fmt.Fprintf(w, "NACKs:       %d\n", st.NACKs)
	} else {
		fmt.Fprintf(w, "NACKs:       %d; the last %s ago, node %s rejected version %s of %s %s:\n  %s\n",
			st.NACKs, since(n.At), dash(n.Node), n.Version, shortType(n.TypeURL), strings.Join(n.Resources, ", "), n.Message)
	}
	if st.LastError != "" {
		fmt.Fprintf(w, "Not served:  %s (%s ago; the previous configuration keeps serving)\n", st.LastError, since(st.LastErrorAt))
	}
	return nil
}

// syncText says whether Envoy runs the version served.
func syncText(st *api.ProxyStatus) string {
	switch {
	case st.InSync():
		return "yes (Envoy acknowledged version " + st.Version + ")"
	case len(st.Streams) == 0:
		return "no (Envoy is not connected)"
	case len(st.Acks) == 0:
		return "no (nothing acknowledged yet)"
	}
	return "no (Envoy has not acknowledged version " + st.Version + " of every type)"
}

// shortType is a type URL's resource kind: "Listener" for
// type.googleapis.com/envoy.config.listener.v3.Listener.
func shortType(typeURL string) string {
	return typeURL[strings.LastIndex(typeURL, ".")+1:]
}

func since(t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return time.Since(t).Round(time.Second)
}
