package benchkit

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/internal/testing/harness"
)

// Driver is one benchmark command: its name, which starts its messages,
// and its usage text, printed above its flags' defaults.
type Driver struct {
	Name  string
	Usage string
}

// ParseFlags parses the command line into the flags registered on
// flag.CommandLine. An argument that is not a flag is a usage error that
// names the driver's subcommands.
func (d Driver) ParseFlags(subcommands ...string) {
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), d.Usage)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		d.Fatalf("unexpected argument %q (subcommands: %s)", flag.Arg(0), strings.Join(subcommands, ", "))
	}
}

// Fatalf reports a usage or environment error and exits 2: nothing was
// measured.
func (d Driver) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, d.Name+": "+format+"\n", args...)
	os.Exit(2)
}

// Measure runs run with a context that SIGINT and SIGTERM end (a driver
// then cleans up and reports what it has), and finishes as Finish does.
func Measure[R any](d Driver, jsonPath string, run func(context.Context) (*R, error), print func(io.Writer, *R)) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	rep, err := run(ctx)
	cancel()
	Finish(d.Name, rep, err, jsonPath, print)
}

// Cleanup is the drivers' cleanup subcommand: it removes the leftovers of
// harness runs whose process is gone (a driver killed with SIGKILL cannot
// clean up after itself).
func Cleanup([]string) error {
	removed, err := harness.CleanupStale()
	for _, p := range removed {
		fmt.Println("removed", p)
	}
	return err
}

// OutputFlags are the flags every driver has.
type OutputFlags struct {
	JSONPath string
	Verbose  bool
}

// Register adds -json and -verbose to fs.
func (f *OutputFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.JSONPath, "json", "", "also write the results as JSON to this file")
	fs.BoolVar(&f.Verbose, "verbose", false, "log the harness's steps")
}

// RateFlags are the flags of an interleaved rate measurement (Interleave
// over Loadgen runs).
type RateFlags struct {
	Rounds   int
	Duration time.Duration
	Warmup   time.Duration
	Workers  int
}

// Register adds -rounds, -duration, -warmup and -workers to fs; run names
// one measured run in their help, e.g. "connection-rate run".
func (f *RateFlags) Register(fs *flag.FlagSet, run string) {
	fs.IntVar(&f.Rounds, "rounds", 5, "interleaved rounds (each runs every variant once)")
	fs.DurationVar(&f.Duration, "duration", time.Second, "measured duration of each "+run)
	fs.DurationVar(&f.Warmup, "warmup", 200*time.Millisecond, "unmeasured warm-up before each "+run)
	fs.IntVar(&f.Workers, "workers", 8, "parallel connections of the load generator")
}

// Validate says what is wrong with the flags' values.
func (f *RateFlags) Validate() error {
	if f.Rounds < 1 || f.Workers < 1 {
		return fmt.Errorf("-rounds and -workers must be at least 1")
	}
	return nil
}

// Options are the flags' values for a report's options.
func (f *RateFlags) Options() map[string]string {
	return map[string]string{"rounds": fmt.Sprint(f.Rounds), "duration": f.Duration.String(),
		"warmup": f.Warmup.String(), "workers": fmt.Sprint(f.Workers)}
}

// GoBenchFlags are the flags of a driver's `go test -bench` parts.
type GoBenchFlags struct {
	Run          bool
	BPFBenchtime string
	Repo         string
}

// Register adds -go-bench (help: what), -bpf-benchtime and -repo to fs.
func (f *GoBenchFlags) Register(fs *flag.FlagSet, what string) {
	fs.BoolVar(&f.Run, "go-bench", true, what)
	fs.StringVar(&f.BPFBenchtime, "bpf-benchtime", "20000x", "-benchtime of the BPF_PROG_TEST_RUN benchmark (samples per packet kind)")
	fs.StringVar(&f.Repo, "repo", ".", "module root, for go test")
}

// Header opens every report: when, on what and under what load it was
// measured, and with which options. The drivers' reports embed it, so its
// fields lead their JSON.
type Header struct {
	Started time.Time         `json:"started"`
	Elapsed string            `json:"elapsed"`
	Options map[string]string `json:"options"`
	Kernel  string            `json:"kernel"`
	CPUs    int               `json:"cpus"`
	// LoadAvg and LoadAvgEnd are /proc/loadavg's first three fields at
	// the start and the end: the machines are shared, and timings depend
	// on what else runs.
	LoadAvg    string `json:"loadAverageAtStart"`
	LoadAvgEnd string `json:"loadAverageAtEnd"`
}

// StartHeader records a run's start with its options.
func StartHeader(options map[string]string) Header {
	return Header{Started: time.Now(), Options: options, Kernel: KernelRelease(), CPUs: runtime.NumCPU(), LoadAvg: LoadAverage()}
}

// End records the run's end: how long it took and the load then.
func (h *Header) End() {
	h.Elapsed = time.Since(h.Started).Round(time.Second).String()
	h.LoadAvgEnd = LoadAverage()
}

// Print writes the report's title line.
func (h *Header) Print(w io.Writer, driver string) {
	fmt.Fprintf(w, "\n==== %s report (%s, took %s; Linux %s, %d CPUs; load average %s at start, %s at end) ====\n",
		driver, h.Started.Format(time.RFC3339), h.Elapsed, h.Kernel, h.CPUs, h.LoadAvg, h.LoadAvgEnd)
}

// KernelRelease is the running kernel's release (uname -r).
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
