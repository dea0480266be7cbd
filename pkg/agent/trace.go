package agent

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policytrace"
)

// `sluice policy trace` on the local API: GET traces a connection, POST
// also evaluates the manifest in its body (--what-if).

// traceSettle is how long a trace whose model and maps disagree waits
// before asking again: a policy pass writes the ipcache and the endpoint
// flags after it leaves the engine, so a trace in between sees a
// difference that a moment later is gone. One that persists is reported.
const traceSettle = 300 * time.Millisecond

func (a *Agent) tracer() *policytrace.Tracer {
	return &policytrace.Tracer{NodeName: a.opts.NodeName, Audit: a.opts.PolicyAudit, Policy: a.policy,
		Services: a.lb, Model: a.store, Maps: a.maps}
}

func (a *Agent) handleTrace(w http.ResponseWriter, r *http.Request) {
	qv := r.URL.Query()
	var q *policytrace.Query
	if qv.Get("from") != "" || qv.Get("to") != "" {
		q = &policytrace.Query{From: qv.Get("from"), To: qv.Get("to"), Protocol: model.Protocol(qv.Get("protocol"))}
		if p := qv.Get("port"); p != "" {
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil || n == 0 {
				http.Error(w, fmt.Sprintf("--port %q: want a number from 1 to 65535", p), http.StatusBadRequest)
				return
			}
			q.Port = uint16(n)
		}
	}
	whatIf := r.Method == http.MethodPost
	if q == nil && !whatIf {
		http.Error(w, "give --from and --to (or --what-if FILE)", http.StatusBadRequest)
		return
	}
	t := a.tracer()
	var out api.PolicyTraceAnswer
	if q != nil {
		res, err := t.Trace(*q)
		if err == nil && len(res.Problems) > 0 {
			time.Sleep(traceSettle)
			res, err = t.Trace(*q)
		}
		if err != nil {
			traceError(w, err)
			return
		}
		out.Trace = apiTrace(res)
	}
	if whatIf {
		name := qv.Get("file")
		if name == "" {
			name = "what-if.yaml"
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, a.opts.ManifestMaxBytes+1))
		if err != nil {
			http.Error(w, "read the manifest: "+err.Error(), http.StatusBadRequest)
			return
		}
		if int64(len(body)) > a.opts.ManifestMaxBytes {
			http.Error(w, fmt.Sprintf("--what-if %s is larger than --manifest-max-bytes (%d)", name, a.opts.ManifestMaxBytes), http.StatusRequestEntityTooLarge)
			return
		}
		wi, err := t.WhatIf(name, body, q, a.storedFlows())
		if err != nil {
			traceError(w, err)
			return
		}
		out.WhatIf = apiWhatIf(wi)
	}
	writeJSON(w, out)
}

func traceError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if policytrace.IsBadQuery(err) {
		code = http.StatusBadRequest
	}
	http.Error(w, err.Error(), code)
}

// storedFlows builds every flow of the flow store, oldest first.
func (a *Agent) storedFlows() []*flowpb.Flow {
	if a.flows == nil {
		return nil
	}
	entries, _ := a.flows.store.Snapshot()
	out := make([]*flowpb.Flow, 0, len(entries))
	for i := range entries {
		if entries[i].IsFlow() {
			out = append(out, entries[i].Flow())
		}
	}
	return out
}
