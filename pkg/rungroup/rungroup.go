package rungroup

import (
	"context"
	"errors"
	"fmt"
)

// Group is a set of parts run together. The zero value is an empty group.
type Group struct {
	// Stopping, if set, is called once when the group begins to stop,
	// before any part is stopped, with the error of the part that ended
	// first (nil when the caller's context ended, or the part ended
	// without an error).
	Stopping func(cause error)

	parts []part
}

type part struct {
	name string
	run  func(ctx context.Context) error
	stop func()
}

// Add adds a part. run runs it until ctx is cancelled and returns; an
// error it returns before it was asked to stop is a failure that stops
// the group. stop, if not nil, makes run return for a part that does not
// watch ctx (a server's Shutdown, a reader's Close); it is called once,
// after ctx is cancelled, also when run has already returned, so it is
// where the part releases what it holds.
func (g *Group) Add(name string, run func(ctx context.Context) error, stop func()) {
	g.parts = append(g.parts, part{name: name, run: run, stop: stop})
}

// AddStarted adds a part that was started beforehand and needs no
// goroutine of the group: a server already serving its listener, a
// resource held open (a lock, loaded objects). stop ends or releases it.
func (g *Group) AddStarted(name string, stop func()) {
	g.Add(name, func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	}, stop)
}

// Run starts the parts in the order they were added and returns when
// they have all stopped: after ctx ends or a part returns, the parts are
// stopped in the reverse order. It returns the error of the part that
// ended first, named, joined with any other part's error on the way down.
func (g *Group) Run(ctx context.Context) error {
	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
		err    error
	}
	ended := make(chan int, len(g.parts))
	rs := make([]*running, len(g.parts))
	// The parts' contexts carry ctx's values but not its cancellation:
	// each part is cancelled in its turn.
	base := context.WithoutCancel(ctx)
	for i, p := range g.parts {
		pctx, cancel := context.WithCancel(base)
		r := &running{cancel: cancel, done: make(chan struct{})}
		rs[i] = r
		go func() {
			defer close(r.done)
			r.err = p.run(pctx)
			ended <- i
		}()
	}

	first := -1
	select {
	case <-ctx.Done():
	case first = <-ended:
	}
	var errs []error
	if first >= 0 && rs[first].err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", g.parts[first].name, rs[first].err))
	}
	if g.Stopping != nil {
		g.Stopping(errors.Join(errs...))
	}
	for i := len(rs) - 1; i >= 0; i-- {
		rs[i].cancel()
		if g.parts[i].stop != nil {
			g.parts[i].stop()
		}
		<-rs[i].done
		if i != first && rs[i].err != nil && !errors.Is(rs[i].err, context.Canceled) {
			errs = append(errs, fmt.Errorf("%s: %w", g.parts[i].name, rs[i].err))
		}
	}
	return errors.Join(errs...)
}

// Close stops the parts of a group that is not going to run, in the
// reverse order: for a start that failed halfway, to undo what the parts
// added so far hold. No part's run is called; each stop is.
func (g *Group) Close() {
	for i := len(g.parts) - 1; i >= 0; i-- {
		if g.parts[i].stop != nil {
			g.parts[i].stop()
		}
	}
}
