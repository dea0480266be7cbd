package harness

import (
	"os"
	"strings"
	"testing"
)

func TestParseProcStatus(t *testing.T) {
	m, err := parseProcStatus(strings.NewReader("Name:\tsluice-agent\nVmHWM:\t  250000 kB\nVmRSS:\t  200000 kB\nRssAnon:\t  180000 kB\nRssFile:\t   20000 kB\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (ProcMem{VmRSS: 200000, VmHWM: 250000, RssAnon: 180000, RssFile: 20000}); m != want {
		t.Fatalf("got %+v, want %+v", m, want)
	}
	if _, err := parseProcStatus(strings.NewReader("Name:\tkthreadd\n")); err == nil {
		t.Fatal("a kernel thread has no VmRSS: want an error")
	}
	self, err := ReadProcMem(os.Getpid())
	if err != nil || self.VmRSS <= 0 || self.VmHWM < self.VmRSS {
		t.Fatalf("own memory: %+v, %v", self, err)
	}
}

func TestParseGCTrace(t *testing.T) {
	logs := "time=... level=INFO msg=start\n" +
		"gc 1 @0.012s 2%: 0.01+1.2+0.01 ms clock, 0.02+0.5/1.0/0+0.02 ms cpu, 4->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P\n" +
		"gc 2 @1.5s 3%: 0.02+30+0.01 ms clock, 0.04+1/20/0+0.02 ms cpu, 96->101->52 MB, 105 MB goal, 0 MB stacks, 0 MB globals, 2 P\n" +
		"gc 3 @120s 1%: 0.02+10+0.01 ms clock, 0.04+1/5/0+0.02 ms cpu, 60->61->40 MB, 104 MB goal, 0 MB stacks, 0 MB globals, 2 P (forced)\n"
	if got, want := ParseGCTrace(logs), (GCStats{GCs: 3, LiveMB: 40, GoalMB: 104, PeakMB: 101}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
