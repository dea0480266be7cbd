package flow

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// numbered returns a flow whose source port is n, to tell flows apart.
func numbered(n int) *flowpb.Flow {
	return &flowpb.Flow{
		Time: timestamppb.New(t0.Add(time.Duration(n) * time.Second)),
		L4:   &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: uint32(n)}}},
	}
}

func ports(evs []Entry) []int {
	var out []int
	for _, e := range evs {
		if !e.IsFlow() {
			out = append(out, -1) // a lost-event notice
			continue
		}
		out = append(out, int(e.Flow().GetL4().GetUDP().GetSourcePort()))
	}
	return out
}

// readNext reads a follower's next entries into a new buffer.
func readNext(ctx context.Context, f *Follower) ([]Entry, uint64, error) {
	return f.Next(ctx, make([]Entry, MaxBatch))
}

func TestNewStoreRejectsZeroCapacity(t *testing.T) {
	if _, err := NewStore(0); err == nil {
		t.Fatal("NewStore(0) succeeded")
	}
}

func TestStoreKeepsTheNewestFlows(t *testing.T) {
	tests := []struct {
		added int
		want  []int
	}{
		{0, nil},
		{2, []int{1, 2}},
		{3, []int{1, 2, 3}},
		{7, []int{5, 6, 7}},
	}
	for _, tt := range tests {
		s, err := NewStore(3)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= tt.added; i++ {
			s.Add(numbered(i))
		}
		evs, next := s.Snapshot()
		if got := ports(evs); !slices.Equal(got, tt.want) {
			t.Errorf("after %d flows the store holds %v, want %v", tt.added, got, tt.want)
		}
		st := s.Stats()
		if next != uint64(tt.added) || st.Next != next {
			t.Errorf("after %d flows next = %d (stats %d)", tt.added, next, st.Next)
		}
		if st.Flows != len(tt.want) || st.Capacity != 3 || st.Seen != uint64(tt.added) {
			t.Errorf("after %d flows stats = %+v", tt.added, st)
		}
	}
}

func TestStoreLostEventNotices(t *testing.T) {
	s, _ := NewStore(3)
	s.Add(numbered(1))
	s.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 0) // nothing lost: no notice
	s.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, 5)
	s.Add(numbered(2))
	evs, _ := s.Snapshot()
	if got := ports(evs); !slices.Equal(got, []int{1, -1, 2}) {
		t.Fatalf("store holds %v, want the notice between the flows", got)
	}
	if l := evs[1].Lost(); l.GetNumEventsLost() != 5 || l.GetSource() != flowpb.LostEventSource_PERF_EVENT_RING_BUFFER {
		t.Errorf("notice = %v", l)
	}
	st := s.Stats()
	if st.Flows != 2 || st.LostEvents != 5 || st.Seen != 2 {
		t.Errorf("stats = %+v, want 2 flows, 5 lost, 2 seen", st)
	}
	// The notice ages out like a flow.
	s.Add(numbered(3))
	s.Add(numbered(4))
	if st := s.Stats(); st.Flows != 3 {
		t.Errorf("after the notice was overwritten Flows = %d, want 3", st.Flows)
	}
}

// A follower started from a snapshot sees every later flow exactly once.
func TestFollowContinuesTheSnapshot(t *testing.T) {
	s, _ := NewStore(8)
	s.Add(numbered(1))
	s.Add(numbered(2))
	evs, next := s.Snapshot()
	f := s.Follow(next)
	s.Add(numbered(3))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, lost, err := readNext(ctx, f)
	if err != nil || lost != 0 {
		t.Fatalf("Next: %v, lost %d", err, lost)
	}
	if all := append(ports(evs), ports(got)...); !slices.Equal(all, []int{1, 2, 3}) {
		t.Fatalf("snapshot then follow saw %v, want [1 2 3]", all)
	}

	// Next waits for the writer.
	done := make(chan []Entry)
	go func() {
		evs, _, _ := readNext(ctx, f)
		done <- evs
	}()
	time.Sleep(10 * time.Millisecond)
	s.Add(numbered(4))
	if got := ports(<-done); !slices.Equal(got, []int{4}) {
		t.Fatalf("waiting follower got %v, want [4]", got)
	}

	// And gives up when its context ends.
	short, cancelShort := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancelShort()
	if _, _, err := readNext(short, f); err == nil {
		t.Fatal("Next returned without entries or error")
	}
}

// A follower that does not keep up loses the overwritten flows, is told
// how many, and the writer never waits for it.
func TestSlowFollowerLosesFlows(t *testing.T) {
	s, _ := NewStore(4)
	slow := s.Follow(s.Stats().Next)
	for i := 1; i <= 10; i++ {
		s.Add(numbered(i)) // must not block: nobody reads yet
	}
	got, lost, err := readNext(context.Background(), slow)
	if err != nil {
		t.Fatal(err)
	}
	if lost != 6 || !slices.Equal(ports(got), []int{7, 8, 9, 10}) {
		t.Fatalf("slow follower got %v after losing %d, want [7 8 9 10] after 6", ports(got), lost)
	}
	if st := s.Stats(); st.FollowersLost != 6 {
		t.Errorf("FollowersLost = %d, want 6", st.FollowersLost)
	}
}

// Writers and followers run concurrently (run with -race); a follower
// that never reads does not hold anyone up.
func TestStoreConcurrent(t *testing.T) {
	s, _ := NewStore(64)
	_ = s.Follow(0) // never reads
	const n = 5000
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := s.Follow(0)
			var seen, lost uint64
			last := 0
			for seen+lost < n {
				evs, l, err := readNext(ctx, f)
				if err != nil {
					t.Errorf("follower: %v after %d seen, %d lost", err, seen, lost)
					return
				}
				lost += l
				for _, p := range ports(evs) {
					if p <= last {
						t.Errorf("follower saw %d after %d", p, last)
						return
					}
					last = p
					seen++
				}
			}
		}()
	}
	for i := 1; i <= n; i++ {
		s.Add(numbered(i))
	}
	wg.Wait()
	if st := s.Stats(); st.Seen != n || st.Flows != 64 {
		t.Errorf("stats = %+v", st)
	}
}

func TestFlowsPerSecond(t *testing.T) {
	s, _ := NewStore(1000)
	now := t0
	s.now = func() time.Time { return now }
	s.started = now
	if r := s.Stats().FlowsPerSecond; r != 0 {
		t.Fatalf("empty store rate %v", r)
	}
	// 10 flows a second for 2 minutes: the rate looks at the last one.
	for sec := 0; sec < 120; sec++ {
		for i := 0; i < 10; i++ {
			s.Add(numbered(i))
		}
		now = now.Add(time.Second)
	}
	now = now.Add(-time.Nanosecond) // still within the last second written
	if r := s.Stats().FlowsPerSecond; r != 10 {
		t.Errorf("rate = %v, want 10", r)
	}
	// Nothing for a minute: zero.
	now = now.Add(2 * time.Minute)
	if r := s.Stats().FlowsPerSecond; r != 0 {
		t.Errorf("rate after a quiet minute = %v, want 0", r)
	}
}
