// Package events decodes what the datapath reports through its ring
// buffer (sl_events): Record is one record exactly as C wrote it (struct
// sl_event, generated), Event the same in readable, typed form, and
// Reader the ring's single consumer. The event kinds, directions, verdicts
// and drop reasons are the C enums' generated types, named for display by
// the one table beside them (pkg/datapath/bpfobj/names.go).
package events
