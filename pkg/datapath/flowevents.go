package datapath

import (
	"fmt"
	"strings"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// FlowEvents is which events the datapath reports (--flow-events); the
// counters count every packet whatever it is. The levels are the C enum
// sl_flow_events (bpf/include/sluice/types.h), which says what each
// reports.
type FlowEvents string

const (
	// FlowEventsAll reports each connection at every endpoint that sees
	// it, socket-LB translations, ends at each endpoint, and drops.
	FlowEventsAll FlowEvents = "all"
	// FlowEventsConnections reports each connection once per node, where
	// it enters the node's view (a connection between two pods of the node
	// at the client's endpoint, and at the server's too when its policy
	// decided it), with its end there; socket-LB translations; drops.
	FlowEventsConnections FlowEvents = "connections"
	// FlowEventsDropsAndVerdicts reports policy verdicts of new
	// connections and drops.
	FlowEventsDropsAndVerdicts FlowEvents = "drops-and-verdicts"
	// FlowEventsNone reports nothing: counters only.
	FlowEventsNone FlowEvents = "none"
)

var flowEventsLevels = map[FlowEvents]bpfobj.EndpointSlFlowEvents{
	FlowEventsAll:              bpfobj.EndpointSlFlowEventsSL_FLOW_EVENTS_ALL,
	FlowEventsConnections:      bpfobj.EndpointSlFlowEventsSL_FLOW_EVENTS_CONNECTIONS,
	FlowEventsDropsAndVerdicts: bpfobj.EndpointSlFlowEventsSL_FLOW_EVENTS_DROPS_AND_VERDICTS,
	FlowEventsNone:             bpfobj.EndpointSlFlowEventsSL_FLOW_EVENTS_NONE,
}

// level is the datapath's number for f.
func (f FlowEvents) level() (bpfobj.EndpointSlFlowEvents, error) {
	l, ok := flowEventsLevels[f]
	if !ok {
		return 0, fmt.Errorf("flow-events %q is unknown: use %s", f, strings.Join([]string{
			string(FlowEventsAll), string(FlowEventsConnections), string(FlowEventsDropsAndVerdicts), string(FlowEventsNone)}, ", "))
	}
	return l, nil
}

// reportsEnds says whether connection ends (the datapath's closes, the
// CT GC's expiries) are reported at this level.
func (f FlowEvents) reportsEnds() bool { return f == FlowEventsAll || f == FlowEventsConnections }
