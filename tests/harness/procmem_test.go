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
