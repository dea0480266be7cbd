package agent

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/sluice-net/sluice/pkg/api"
)

// eventLog keeps the most recent datapath events for the API. It is a
// small fixed ring: the flow store with Hubble's API replaces it.
type eventLog struct {
	mu   sync.Mutex
	buf  []api.Event
	next int
	full bool
}

func newEventLog(n int) *eventLog { return &eventLog{buf: make([]api.Event, n)} }

func (l *eventLog) add(e api.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf[l.next] = e
	l.next = (l.next + 1) % len(l.buf)
	if l.next == 0 {
		l.full = true
	}
}

// list returns the events oldest first.
func (l *eventLog) list() []api.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.full {
		return append([]api.Event(nil), l.buf[:l.next]...)
	}
	return append(append([]api.Event(nil), l.buf[l.next:]...), l.buf[:l.next]...)
}

// lostInKernel sums the events the datapath could not emit (ring full).
func (l *eventLog) lostInKernel(cs []api.Counter) uint64 {
	var n uint64
	for _, c := range cs {
		if c.Verdict == "events-lost" {
			n += c.Packets
		}
	}
	return n
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
