// Package rungroup runs the long-running parts of a program as one: each
// part is a start/stop pair (a function that runs until its context ends,
// and, for a part that does not watch a context, such as a server or a
// reader blocked in a read, the call that makes it return). The parts
// start in the order they were added; the first to end, failed or not,
// or the caller's context, stops them all, in the reverse order, each one
// stopped and awaited before the next: what was started last, and
// depends on what came before, is gone before what it depends on. Parts
// started beforehand (a server already serving, a resource held open) join
// with just their stop, so one list orders a program's whole shutdown, and
// Close undoes a start that failed halfway.
package rungroup
