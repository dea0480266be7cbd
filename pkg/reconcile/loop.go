package reconcile

import (
	"context"
	"time"
)

// Pass does one pass. full asks for a full one: re-read what the kernel
// holds and plan everything, pruning what does not belong there. It
// returns the error the pass ended with (nil: in step).
type Pass func(full bool) error

// Observer is told of every pass: whether it was full, how long it took
// and the error it ended with (metrics.Collector.ReconcileObserver).
type Observer func(full bool, took time.Duration, err error)

// Loop schedules one reconciler's passes. Build it with New; the zero
// value is not usable.
type Loop struct {
	pass        Pass
	minInterval time.Duration
	resync      time.Duration
	observe     Observer
	trigger     chan struct{}
}

// Options configure a Loop.
type Options struct {
	// MinInterval is how long the loop waits after work is first marked
	// before it runs the pass: the rest of a burst is marked meanwhile
	// and costs nothing more. 0 runs the pass at once.
	MinInterval time.Duration
	// Resync is the period of the full pass; it must be positive.
	Resync time.Duration
	// Observe, if set, is told of every pass.
	Observe Observer
}

// New returns a loop that runs pass as opts say.
func New(opts Options, pass Pass) *Loop {
	return &Loop{pass: pass, minInterval: opts.MinInterval, resync: opts.Resync,
		observe: opts.Observe, trigger: make(chan struct{}, 1)}
}

// Trigger marks work: an incremental pass follows. It never blocks.
func (l *Loop) Trigger() {
	select {
	case l.trigger <- struct{}{}:
	default:
	}
}

// RunPass runs one pass now, observed as the loop's own are (the agent's
// first passes, before the loops start, go through here).
func (l *Loop) RunPass(full bool) error {
	start := time.Now()
	err := l.pass(full)
	if l.observe != nil {
		l.observe(full, time.Since(start), err)
	}
	return err
}

// Run runs a first pass (full or not, as first says), then passes as work
// is marked and every Resync, until ctx is done. A receive on changes
// (the model store's subscription; nil: none) marks work as Trigger does.
func (l *Loop) Run(ctx context.Context, first bool, changes <-chan struct{}) {
	_ = l.RunPass(first)
	resync := time.NewTicker(l.resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
			l.Trigger()
		case <-l.trigger:
			if !sleep(ctx, l.minInterval) {
				return
			}
			_ = l.RunPass(false)
		case <-resync.C:
			_ = l.RunPass(true)
		}
	}
}

// sleep waits d, or less if ctx ends first (false then).
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
