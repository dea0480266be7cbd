package main

// `benchflows emit`: datapath events at a chosen rate, for rates real
// connections between simulated pods cannot reach on a small machine, made
// by internal/testing/eventgen (BPF_PROG_TEST_RUN of the program the agent
// attached to the client pod's veth: a SYN is a trace event, an RST a
// connection-end event). Run in the node's netns.

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/internal/testing/eventgen"
)

// emitResult is what emit prints (one JSON line).
type emitResult struct {
	// Events are the test runs made: one SYN (trace event) or RST
	// (connection-end event) each.
	Events  uint64  `json:"events"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	// BadVerdicts counts runs whose verdict was not "next": the program
	// dropped the packet, so its event is not the one counted on.
	BadVerdicts  uint64 `json:"badVerdicts"`
	FirstVerdict string `json:"firstBadVerdict,omitempty"`
	// CPUSeconds is this process's user+system time while emitting.
	CPUSeconds float64 `json:"cpuSeconds"`
}

func runEmit(args []string) error {
	fs := flag.NewFlagSet("emit", flag.ExitOnError)
	ifindex := fs.Int("ifindex", 0, "host-side veth of the source pod, in this netns")
	src := fs.String("src", "", "source pod address")
	dst := fs.String("dst", "", "destination address")
	dport := fs.Int("dport", 8080, "destination port")
	firstPort := fs.Int("first-port", 10000, "first source port")
	ports := fs.Int("ports", 16384, "source ports used in turn (CT entries)")
	rate := fs.Float64("rate", 1000, "events per second; 0: as fast as possible")
	duration := fs.Duration("duration", 5*time.Second, "how long to emit (unless -count)")
	count := fs.Uint64("count", 0, "emit this many events (even), then stop")
	_ = fs.Parse(args)
	srcIP, err := netip.ParseAddr(*src)
	if err != nil {
		return fmt.Errorf("-src: %w", err)
	}
	dstIP, err := netip.ParseAddr(*dst)
	if err != nil {
		return fmt.Errorf("-dst: %w", err)
	}
	gen, err := eventgen.New(eventgen.Config{Ifindex: *ifindex, Src: srcIP, Dst: dstIP,
		DstPort: uint16(*dport), FirstPort: *firstPort, Ports: *ports})
	if err != nil {
		return err
	}
	defer gen.Close()
	if err := waitGo(); err != nil {
		return err
	}

	var res emitResult
	cpu0 := selfCPU()
	start := time.Now()
	var n uint64
	run := func() error {
		v, err := gen.Run()
		if err != nil {
			return err
		}
		if !eventgen.Passed(v) {
			if res.BadVerdicts == 0 {
				res.FirstVerdict = fmt.Sprintf("run %d: verdict %d", n, int32(v))
			}
			res.BadVerdicts++
		}
		n++
		return nil
	}
	switch {
	case *count > 0:
		for n < *count {
			if err := run(); err != nil {
				return err
			}
		}
	default:
		end := start.Add(*duration)
		for {
			now := time.Now()
			if !now.Before(end) {
				break
			}
			due := uint64(now.Sub(start).Seconds() * *rate)
			if *rate == 0 {
				due = n + 256
			}
			due &^= 1 // whole SYN+RST pairs: every connection ends in the window
			if n >= due {
				// Ahead of the schedule: sleep until the next pair is due.
				next := start.Add(time.Duration(float64(n+2) / *rate * float64(time.Second)))
				time.Sleep(max(time.Until(next), 50*time.Microsecond))
				continue
			}
			for n < due {
				if err := run(); err != nil {
					return err
				}
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	res.CPUSeconds = selfCPU() - cpu0
	res.Events = n
	res.Rate = float64(n) / res.Seconds
	return json.NewEncoder(os.Stdout).Encode(res)
}

// waitGo says "ready" and waits for a line on stdin: the caller samples
// the agent's CPU between the two, so set-up is outside the window.
func waitGo() error {
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("wait for go on stdin: %w", err)
	}
	return nil
}

// selfCPU is this process's user+system CPU time in seconds.
func selfCPU() float64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
