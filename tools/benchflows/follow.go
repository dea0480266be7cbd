package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// follower is a running `sluice observe --follow -o json` reading the
// agent's observer, as a user following flows runs it, with its output
// counted line by line: a flow per line, or a lost-events notice.
type follower struct {
	cmd  *exec.Cmd
	done chan struct{}

	flows atomic.Uint64
	// missed counts the flows the observer told this follower it skipped
	// (HUBBLE_RING_BUFFER: it read too slowly); kernelLost the datapath's
	// lost events it relayed (PERF_EVENT_RING_BUFFER).
	missed, kernelLost atomic.Uint64
	lines              atomic.Uint64

	mu      sync.Mutex
	readErr error
	stderr  bytes.Buffer
}

// startFollower runs the follower; with a profile file, it writes its
// CPU profile there when stopped.
func startFollower(cli, stateDir, profile string) (*follower, error) {
	args := []string{"--state-dir", stateDir, "observe", "--follow", "-o", "json"}
	if profile != "" {
		args = append(args, "--cpu-profile", profile)
	}
	cmd := exec.Command(cli, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	f := &follower{cmd: cmd, done: make(chan struct{})}
	cmd.Stderr = &lockedWriter{mu: &f.mu, w: &f.stderr}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s observe --follow: %w", cli, err)
	}
	go func() {
		defer close(f.done)
		err := f.read(out)
		f.mu.Lock()
		f.readErr = err
		f.mu.Unlock()
	}()
	return f, nil
}

// read counts the follower's output until it ends.
func (f *follower) read(r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A longer line than any flow: keep reading it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
		}
		if len(line) > 0 {
			f.lines.Add(1)
			f.count(line)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// count classifies one line of `-o json`: a flow object, or
// {"lost_events": {...}} for a lost-events notice.
func (f *follower) count(line []byte) {
	kind, n, src := classifyLine(line)
	switch kind {
	case lineFlow:
		f.flows.Add(1)
	case lineLost:
		if src == "HUBBLE_RING_BUFFER" {
			f.missed.Add(n)
		} else {
			f.kernelLost.Add(n)
		}
	}
}

type lineKind int

const (
	lineOther lineKind = iota
	lineFlow
	lineLost
)

// classifyLine tells a flow line from a lost-events line, and for the
// latter returns the count and source. Only lost-event lines are parsed:
// flows are counted by their key, which protojson writes first.
func classifyLine(line []byte) (lineKind, uint64, string) {
	head := line[:min(len(line), 32)]
	switch {
	case bytes.Contains(head, []byte(`"lost_events"`)):
		var m struct {
			LostEvents struct {
				Source        string `json:"source"`
				NumEventsLost string `json:"num_events_lost"` // uint64: a string in protojson
			} `json:"lost_events"`
		}
		if err := json.Unmarshal(line, &m); err != nil {
			return lineOther, 0, ""
		}
		n, _ := strconv.ParseUint(m.LostEvents.NumEventsLost, 10, 64)
		return lineLost, n, m.LostEvents.Source
	case bytes.HasPrefix(bytes.TrimSpace(head), []byte("{")):
		return lineFlow, 0, ""
	}
	return lineOther, 0, ""
}

// counts is a snapshot of the follower's counters.
type followCounts struct{ flows, missed, kernelLost uint64 }

func (f *follower) counts() followCounts {
	return followCounts{f.flows.Load(), f.missed.Load(), f.kernelLost.Load()}
}

func (f *follower) pid() int { return f.cmd.Process.Pid }

// exited returns the follower's error if it has stopped, nil while it
// runs.
func (f *follower) exited() error {
	select {
	case <-f.done:
		f.mu.Lock()
		defer f.mu.Unlock()
		return fmt.Errorf("sluice observe --follow exited (read: %v): %s", f.readErr, bytes.TrimSpace(f.stderr.Bytes()))
	default:
		return nil
	}
}

// waitFor waits until the follower has read at least n flows, failing
// after timeout or when it exits.
func (f *follower) waitFor(ctx context.Context, n uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for f.flows.Load() < n {
		if err := f.exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sluice observe --follow printed %d flows of %d within %s", f.flows.Load(), n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// stop interrupts the follower, as ^C does, and waits for it.
func (f *follower) stop() {
	_ = f.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-f.done:
	case <-time.After(3 * time.Second):
		_ = f.cmd.Process.Kill()
		<-f.done
	}
	_ = f.cmd.Wait()
}

// lockedWriter serialises writes to w under mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
