// Command vmtest runs Sluice's privileged Go tests (datapath unit tests,
// netns integration and end-to-end tests) inside a qemu VM booted with a
// kernel of the matrix in vagrant/matrix.yaml. See tools/README.md.
//
//	vmtest run --kernel 6.1 [--arch arm64] [--suite smoke|datapath|full]
//	vmtest matrix [--ci] [--suite S]  # every VM kernel (CI's with --ci) in turn
//	vmtest list [--ci]    # the matrix, one "name arch" per line
//	vmtest fetch          # download and unpack every kernel of the matrix
//	vmtest pins           # the newest versions of each pinned kernel series
//
// Test binaries are compiled on the host (go test -c) and only executed in
// the VM. amd64 guests boot with the host's / shared read-only over 9p as
// their root (the end-to-end tests run the host's ip, nsenter and ping),
// with tmpfs where the tests write; arm64 guests run the datapath tests
// from the initramfs. qemu uses KVM where it really works and TCG software
// emulation otherwise. Results and exit status come back over the serial
// console; a VM that outlives --timeout is killed and reported as hung.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func defaultCache() string {
	if c := os.Getenv("SLUICE_CACHE"); c != "" {
		return filepath.Join(c, "vm")
	}
	return "/var/cache/sluice/vm"
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("vmtest "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	matrixPath := fs.String("matrix", "vagrant/matrix.yaml", "the kernel matrix")
	cache := fs.String("cache", defaultCache(), "downloads, unpacked kernels and runs ($SLUICE_CACHE/vm)")
	var opts runOptions
	switch cmd {
	case "run", "matrix":
		if cmd == "run" {
			fs.StringVar(&opts.kernel, "kernel", "", "the matrix entry's name (required)")
			fs.StringVar(&opts.arch, "arch", "amd64", "the entry's architecture: amd64 or arm64")
		} else {
			fs.BoolVar(&opts.ciOnly, "ci", false, "only the entries CI runs")
			fs.IntVar(&opts.jobs, "jobs", 1, "VMs run at once (TCG keeps about one host CPU busy per VM)")
		}
		fs.StringVar(&opts.suite, "suite", "", "the suite to run (default: the entry's suite, else full; an entry whose suite is smaller runs its own)")
		fs.StringVar(&opts.run, "run", "", "a -test.run pattern for every package, instead of the suite's; the run fails if it matches no test in any of them")
		fs.StringVar(&opts.accel, "accel", "auto", "qemu accelerator: auto (KVM where it works, else TCG), kvm or tcg")
		fs.DurationVar(&opts.timeout, "timeout", 0, "kill the VM after this long (default 20m; 30m for the smoke suite, 3h for the full one)")
		fs.IntVar(&opts.cpus, "cpus", 2, "virtual CPUs")
		fs.IntVar(&opts.memMiB, "memory", 3072, "guest memory in MiB")
		fs.StringVar(&opts.repo, "repo", ".", "the repository")
		fs.BoolVar(&opts.quiet, "quiet", false, "do not copy the console to stdout (it is in the run directory's console.log)")
	case "list":
		fs.BoolVar(&opts.ciOnly, "ci", false, "only the entries CI runs")
	case "fetch", "pins":
	default:
		fmt.Fprintf(stderr, "vmtest: unknown command %q: use run, list, fetch or pins\n", cmd)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	m, err := loadMatrix(*matrixPath)
	if err != nil {
		fmt.Fprintf(stderr, "vmtest: %v\n", err)
		return 2
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "vmtest: "+format+"\n", a...) }
	switch cmd {
	case "list":
		for _, k := range m.Kernels {
			if (!opts.ciOnly || k.CI) && !k.Host() {
				fmt.Fprintf(stdout, "%s %s\n", k.Name, k.Arch)
			}
		}
		return 0
	case "fetch":
		for _, k := range m.Kernels {
			if k.Host() {
				continue
			}
			if _, err := fetchKernel(*cache, m, k, logf); err != nil {
				logf("%v", err)
				return 1
			}
		}
		return 0
	case "pins":
		if err := pins(*cache, m, stdout); err != nil {
			logf("%v", err)
			return 1
		}
		return 0
	case "matrix":
		opts.cache = *cache
		return runMatrix(m, opts, stdout, logf)
	}
	if opts.kernel == "" {
		fmt.Fprintln(stderr, "vmtest run: --kernel is required (one of the names in the matrix)")
		return 2
	}
	opts.cache = *cache
	res, err := runKernel(m, opts, stdout, logf)
	if err != nil {
		logf("%v", err)
		return 2
	}
	res.print(stdout)
	return res.exitCode()
}

// pins prints, for each pinned package, the versions of its series that the
// archive has now (candidates to pin in vagrant/matrix.yaml).
func pins(cache string, m *Matrix, w io.Writer) error {
	a := apt{dir: filepath.Join(cache, "apt"), sources: m.Apt.Sources}
	if err := a.update(); err != nil {
		return err
	}
	abi := regexp.MustCompile(`^linux-image-(\d+\.\d+)\.[0-9a-z.+~-]*?-((?:cloud-|rt-)?(?:amd64|arm64)(?:-unsigned)?)$`)
	for _, k := range m.Kernels {
		if k.Host() {
			continue
		}
		sm := abi.FindStringSubmatch(k.Package)
		if sm == nil {
			fmt.Fprintf(w, "%s: %s %s (not a linux-image-X.Y.*-FLAVOUR package: update by hand)\n", k.ID(), k.Package, k.Version)
			continue
		}
		pattern := fmt.Sprintf(`^linux-image-%s\.[0-9a-z.+~-]*-%s$`, regexp.QuoteMeta(sm[1]), regexp.QuoteMeta(sm[2]))
		out, err := a.run("", "apt-cache", "search", "--names-only", pattern)
		if err != nil {
			return err
		}
		var names []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if n, _, ok := strings.Cut(l, " "); ok {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		fmt.Fprintf(w, "%s: pinned %s=%s; available:\n", k.ID(), k.Package, k.Version)
		for _, n := range names {
			out, err := a.run("", "apt-cache", "madison", n+":"+k.Arch)
			if err != nil {
				return err
			}
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if l != "" {
					fmt.Fprintf(w, "  %s\n", l)
				}
			}
		}
	}
	return nil
}

func need(tools ...string) error {
	var errs []error
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			errs = append(errs, fmt.Errorf("needs %s in PATH", t))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w (apt-get install qemu-system-x86 qemu-system-arm xz-utils zstd)", errors.Join(errs...))
	}
	return nil
}

// runMatrix runs every VM entry (CI's only with --ci), --jobs at a time,
// with each console in its run's directory; a failing package's output is
// printed whole.
func runMatrix(m *Matrix, o runOptions, stdout io.Writer, logf func(string, ...any)) int {
	start := time.Now()
	var kernels []Kernel
	for _, k := range m.Kernels {
		if !k.Host() && (!o.ciOnly || k.CI) {
			kernels = append(kernels, k)
		}
	}
	results := make([]*result, len(kernels))
	errs := make([]error, len(kernels))
	sem := make(chan struct{}, max(o.jobs, 1))
	var wg sync.WaitGroup
	for i, k := range kernels {
		ko := o
		ko.kernel, ko.arch, ko.quiet = k.Name, k.Arch, true
		if k.Suite != "" && o.suite != "" && o.suite != "datapath" {
			ko.suite = k.Suite
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			klogf := func(format string, a ...any) { logf(k.ID()+": "+format, a...) }
			results[i], errs[i] = runKernel(m, ko, io.Discard, klogf)
		}()
	}
	wg.Wait()
	code := 0
	for i, res := range results {
		if errs[i] != nil {
			logf("%s: %v", kernels[i].ID(), errs[i])
			code = max(code, 2)
			continue
		}
		res.printFailedOutput(stdout)
		res.print(stdout)
		code = max(code, res.exitCode())
	}
	fmt.Fprintf(stdout, "\n== vmtest matrix: %d kernels, %d at a time, in %.0fs\n", len(kernels), max(o.jobs, 1), time.Since(start).Seconds())
	for i, r := range results {
		if r == nil {
			fmt.Fprintf(stdout, "   ERROR %s: %v\n", kernels[i].ID(), errs[i])
			continue
		}
		fmt.Fprintf(stdout, "   %s\n", r.oneLine())
	}
	return code
}
