package rungroup

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// journal records what the parts did, in order.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, s)
}

func (j *journal) get() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.entries...)
}

// waiter is a part that runs until its context ends, taking a moment to
// wind down, so a part stopped too early would show in the journal.
func waiter(j *journal, name string) func(context.Context) error {
	return func(ctx context.Context) error {
		<-ctx.Done()
		time.Sleep(5 * time.Millisecond)
		j.add(name + " stopped")
		return ctx.Err()
	}
}

// The caller's context ends: every part stops, the last added first, each
// one done before the next is asked; the context's end is no error.
func TestStopsInReverseOrder(t *testing.T) {
	var j journal
	var g Group
	g.Stopping = func(cause error) { j.add("stopping"); require.NoError(t, cause) }
	for _, name := range []string{"datapath", "reconcilers", "api"} {
		g.Add(name, waiter(&j, name), nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	require.NoError(t, g.Run(ctx))
	require.Equal(t, []string{"stopping", "api stopped", "reconcilers stopped", "datapath stopped"}, j.get())
}

// The first part to fail stops the others, and Run says which failed.
func TestFirstFailureStopsAll(t *testing.T) {
	var j journal
	var g Group
	var cause error
	g.Stopping = func(err error) { cause = err }
	g.Add("reconcilers", waiter(&j, "reconcilers"), nil)
	g.Add("endpoint manager", func(context.Context) error { return errors.New("subscribe to link updates: permission denied") }, nil)
	g.Add("api", waiter(&j, "api"), nil)
	err := g.Run(context.Background())
	require.EqualError(t, err, "endpoint manager: subscribe to link updates: permission denied")
	require.Equal(t, err, cause)
	require.Equal(t, []string{"api stopped", "reconcilers stopped"}, j.get())
}

// A part that ends without an error also stops the group, without one.
func TestPartEndingStopsAll(t *testing.T) {
	var j journal
	var g Group
	g.Add("reader", waiter(&j, "reader"), nil)
	g.Add("done at once", func(context.Context) error { return nil }, nil)
	require.NoError(t, g.Run(context.Background()))
	require.Equal(t, []string{"reader stopped"}, j.get())
}

// A part that does not watch its context (a server, a blocked reader)
// returns when its stop is called, in its turn; stop is also called for a
// part whose run already returned, to release what it holds.
func TestStopEndsPartsThatIgnoreTheirContext(t *testing.T) {
	var j journal
	var g Group
	closed := make(chan struct{})
	g.Add("reader", func(context.Context) error {
		<-closed // a read that only Close ends
		j.add("reader returned")
		return nil
	}, func() { j.add("reader closed"); close(closed) })
	g.AddStarted("observer", func() { j.add("observer closed") })
	g.Add("failed", func(context.Context) error { return errors.New("boom") }, func() { j.add("failed released") })
	require.EqualError(t, g.Run(context.Background()), "failed: boom")
	require.Equal(t, []string{"failed released", "observer closed", "reader closed", "reader returned"}, j.get())
}

// Errors parts return on the way down are reported beside the cause;
// a part that returns its context's cancellation reports nothing.
func TestErrorsWhileStoppingAreJoined(t *testing.T) {
	var g Group
	g.Add("api", func(ctx context.Context) error {
		<-ctx.Done()
		return errors.New("shutdown: context deadline exceeded")
	}, nil)
	g.Add("gc", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, nil)
	g.Add("failed", func(context.Context) error { return errors.New("boom") }, nil)
	err := g.Run(context.Background())
	require.EqualError(t, err, "failed: boom\napi: shutdown: context deadline exceeded")
}

// The parts' contexts keep the caller's values.
func TestPartsSeeTheCallersValues(t *testing.T) {
	type key struct{}
	var g Group
	var got any
	g.Add("part", func(ctx context.Context) error { got = ctx.Value(key{}); return nil }, nil)
	require.NoError(t, g.Run(context.WithValue(context.Background(), key{}, "node-1")))
	require.Equal(t, "node-1", got)
}

// A start that fails halfway undoes what its parts hold, last first,
// without running any of them.
func TestCloseUndoesAHalfwayStart(t *testing.T) {
	var j journal
	var g Group
	g.AddStarted("lock", func() { j.add("lock released") })
	g.AddStarted("datapath", func() { j.add("datapath closed") })
	g.Add("gc", func(context.Context) error { j.add("gc ran"); return nil }, nil)
	g.Close()
	require.Equal(t, []string{"datapath closed", "lock released"}, j.get())
}
