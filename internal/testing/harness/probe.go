package harness

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// probeStartSlack is what a probe workload may take, beyond its per-target
// timeout, to start and report: process start on a loaded 2-core CI machine.
const probeStartSlack = 10 * time.Second

// Target is one destination of Host.Probe.
type Target struct {
	// Protocol is "TCP" or "UDP" (as in a Kubernetes port).
	Protocol string
	Addr     netip.Addr
	Port     int
}

// String returns e.g. "TCP 10.244.10.2:80".
func (t Target) String() string { return t.Protocol + " " + addrPort(t.Addr, t.Port) }

// ProbeResult is what one Target answered.
type ProbeResult struct {
	Target
	// Reply is the server's answer to "whoami": "namespace/name" for a pod
	// running the harness's echo servers.
	Reply string
	// Err is why there was no reply: refused, timed out (dropped), ...
	Err error
}

// Probe asks every target "whoami" over its protocol at once, from a single
// workload process in the host, and returns the results in target order.
// Each request gets at most timeout, so a dropped connection costs timeout
// and the whole probe about timeout plus one process start, whatever the
// number of targets: the building block of reachability matrices, where
// starting one process per pair of pods would dominate on a small machine.
// The error is only for a probe that could not run at all.
func (h *Host) Probe(ctx context.Context, timeout time.Duration, targets ...Target) ([]ProbeResult, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("probe from %s: timeout must be positive, got %s", h.ident, timeout)
	}
	spec := workloadSpec{Kind: kindProbe, Timeout: timeout}
	for _, tg := range targets {
		p := strings.ToLower(tg.Protocol)
		if p != "tcp" && p != "udp" {
			return nil, fmt.Errorf("probe from %s to %s: protocol must be TCP or UDP", h.ident, tg)
		}
		spec.Targets = append(spec.Targets, probeTarget{Proto: p, Addr: addrPort(tg.Addr, tg.Port)})
	}
	if len(targets) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+probeStartSlack)
	defer cancel()
	ev, err := h.runOnce(ctx, spec)
	if err != nil {
		return nil, err
	}
	if len(ev.Results) != len(targets) {
		return nil, fmt.Errorf("probe from %s: %d results for %d targets", h.ident, len(ev.Results), len(targets))
	}
	out := make([]ProbeResult, len(targets))
	for i, tg := range targets {
		out[i] = ProbeResult{Target: tg, Reply: ev.Results[i].Reply}
		if e := ev.Results[i].Error; e != "" {
			out[i].Err = errors.New(e)
		}
	}
	return out, nil
}
