package reconcile

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// passes records the passes a loop ran.
type passes struct {
	mu   sync.Mutex
	runs []bool // full or not, in order
	ran  chan bool
}

func newPasses() *passes { return &passes{ran: make(chan bool, 100)} }

func (p *passes) pass(full bool) error {
	p.mu.Lock()
	p.runs = append(p.runs, full)
	p.mu.Unlock()
	p.ran <- full
	if full {
		return nil
	}
	return errors.New("incremental failed")
}

func (p *passes) next(t *testing.T) bool {
	t.Helper()
	select {
	case full := <-p.ran:
		return full
	case <-time.After(5 * time.Second):
		t.Fatal("no pass")
		return false
	}
}

func (p *passes) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case full := <-p.ran:
		t.Fatalf("unexpected pass (full=%v)", full)
	case <-time.After(d):
	}
}

// A burst of marks within MinInterval costs one incremental pass, after
// the first pass; changes mark work as Trigger does; every pass is
// observed with its error.
func TestLoopCoalescesABurst(t *testing.T) {
	p := newPasses()
	var mu sync.Mutex
	var observed []error
	l := New(Options{MinInterval: 100 * time.Millisecond, Resync: time.Hour, Observe: func(full bool, _ time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		observed = append(observed, err)
	}}, p.pass)
	changes := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, true, changes) }()
	t.Cleanup(func() { cancel(); <-done })

	require.True(t, p.next(t), "the first pass is the full one asked for")
	changes <- struct{}{}
	for range 10 {
		l.Trigger()
	}
	require.False(t, p.next(t), "one incremental pass for the burst")
	p.none(t, 300*time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, observed, 2)
	require.NoError(t, observed[0])
	require.EqualError(t, observed[1], "incremental failed")
}

// The full resync comes every Resync without any mark.
func TestLoopResyncs(t *testing.T) {
	p := newPasses()
	l := New(Options{Resync: 50 * time.Millisecond}, p.pass)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, false, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	require.False(t, p.next(t), "the first pass as asked: incremental")
	require.True(t, p.next(t))
	require.True(t, p.next(t))
}

// A loop waiting out MinInterval stops with its context, without the pass.
func TestLoopStopsDuringTheWait(t *testing.T) {
	p := newPasses()
	l := New(Options{MinInterval: time.Hour, Resync: time.Hour}, p.pass)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, true, nil) }()
	require.True(t, p.next(t))
	l.Trigger()
	time.Sleep(50 * time.Millisecond) // the loop is in its wait
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within the MinInterval wait")
	}
	p.none(t, 10*time.Millisecond)
}
