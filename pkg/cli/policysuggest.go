package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluice-net/sluice/pkg/observer"
	"github.com/sluice-net/sluice/pkg/policysuggest"
)

type suggestOptions struct {
	flowSource
	fromFile string
	audit    bool
	maxAddrs int
}

func (g *globals) policySuggestCommand() *cobra.Command {
	o := &suggestOptions{flowSource: flowSource{g: g}}
	cmd := &cobra.Command{
		Use:   "suggest",
		Short: "Least-privilege NetworkPolicies from the flows observed, as YAML ready to apply",
		Long: `Least-privilege NetworkPolicies from the flows observed, as YAML ready to apply.

The flows come from the agent's Hubble observer (all it stores, or --since,
--last), or from a file of ` + "`sluice observe -o jsonpb`" + ` or ` + "`hubble observe -o jsonpb`" + `
output (--from-file, - for stdin; collect every node's flows there for a
whole cluster). The filter flags of observe select the flows; --namespace
also limits the policies to the workloads of those namespaces.

Each workload (its controller, else its labels; never pod names) seen in a
connection gets one policy for Ingress and Egress that allows exactly the
peers and ports it was seen with: peers by namespace and the labels their
pods share, addresses outside the cluster as ipBlocks (/32, aggregated into
prefixes beyond --max-addresses). A comment above each rule names the
connections that justify it. What was not seen is denied once the policies
apply: with --audit the output first puts each namespace in audit mode
(annotation sluice.io/policy-audit), so that ` + "`sluice observe --verdict AUDIT`" + `
shows what they would deny while nothing is dropped.`,
		Example: `  sluice policy suggest --namespace shop --since 1h > shop-policies.yaml
  sluice policy suggest --namespace shop --audit | kubectl apply -f -
  sluice observe --since 24h -o jsonpb > flows.jsonpb; sluice policy suggest --from-file flows.jsonpb
  hubble observe --since 1h -o jsonpb | sluice policy suggest --from-file - --namespace shop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	o.addFlags(cmd, "default all the observer stores")
	fs := cmd.Flags()
	fs.StringVar(&o.fromFile, "from-file", "", "read flows from `FILE` (sluice or hubble observe -o jsonpb or -o json; - for stdin) instead of the observer")
	fs.BoolVar(&o.audit, "audit", false, "start with each namespace's audit annotation: the policies report what they would deny instead of dropping it")
	fs.IntVar(&o.maxAddrs, "max-addresses", policysuggest.DefaultMaxAddresses, "aggregate a rule's addresses outside the cluster into prefixes beyond `N`")
	return cmd
}

func (o *suggestOptions) run(cmd *cobra.Command) error {
	if o.maxAddrs < 1 {
		return fmt.Errorf("--max-addresses %d: want at least 1", o.maxAddrs)
	}
	req, err := o.request(time.Now())
	if err != nil {
		return err
	}
	req.Number = o.last
	b := policysuggest.New(policysuggest.Options{Namespaces: o.filters.include.ns, MaxAddresses: o.maxAddrs, Audit: o.audit})
	if o.fromFile != "" {
		if cmd.Flags().Changed("server") {
			return errors.New("--from-file and --server cannot be combined: read flows from one of them")
		}
		err = o.readFile(cmd, req, b.Add)
	} else {
		err = o.getFlows(cmd.Context(), req, func(r *observerpb.GetFlowsResponse) error {
			if f := r.GetFlow(); f != nil {
				b.Add(f)
			}
			return nil
		})
	}
	if err != nil {
		return err
	}
	var out bytes.Buffer
	sum, err := b.WriteYAML(&out)
	if err != nil {
		return err
	}
	if _, err := cmd.OutOrStdout().Write(out.Bytes()); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%d policies with %d rules from %d connections (%d flows)\n", sum.Policies, sum.Rules, sum.Connections, sum.Flows)
	return nil
}

// maxFlowLine bounds one line of a flow file: a flow with many labels is
// a few KiB.
const maxFlowLine = 4 << 20

// readFile reads a file of flows, one JSON object per line (a
// GetFlowsResponse from -o jsonpb, or a flow from -o json), and hands
// those the request selects (filters, --since, --until, --last) to add.
func (o *suggestOptions) readFile(cmd *cobra.Command, req *observerpb.GetFlowsRequest, add func(*flowpb.Flow)) error {
	var r io.Reader = cmd.InOrStdin()
	if o.fromFile != "-" {
		f, err := os.Open(o.fromFile)
		if err != nil {
			return fmt.Errorf("--from-file: %w", err)
		}
		defer f.Close()
		r = f
	}
	filters, err := observer.CompileFilters(req.GetWhitelist(), req.GetBlacklist())
	if err != nil {
		return err
	}
	var since, until time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		until = req.GetUntil().AsTime()
	}
	var kept []*flowpb.Flow
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxFlowLine)
	dec := protojson.UnmarshalOptions{DiscardUnknown: true}
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var resp observerpb.GetFlowsResponse
		if err := dec.Unmarshal(text, &resp); err != nil {
			return fmt.Errorf("--from-file %s: line %d: not a flow of -o jsonpb or -o json: %w", o.fromFile, line, err)
		}
		f := resp.GetFlow()
		if f == nil {
			if resp.GetLostEvents() != nil || resp.GetNodeStatus() != nil {
				continue
			}
			f = &flowpb.Flow{}
			if err := dec.Unmarshal(text, f); err != nil {
				return fmt.Errorf("--from-file %s: line %d: not a flow of -o jsonpb or -o json: %w", o.fromFile, line, err)
			}
		}
		if t := f.GetTime().AsTime(); (!since.IsZero() && t.Before(since)) || (!until.IsZero() && t.After(until)) {
			continue
		}
		if !filters.Match(f) {
			continue
		}
		kept = append(kept, f)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("--from-file %s: %w", o.fromFile, err)
	}
	if n := req.GetNumber(); n > 0 && uint64(len(kept)) > n {
		kept = kept[uint64(len(kept))-n:]
	}
	for _, f := range kept {
		add(f)
	}
	return nil
}
