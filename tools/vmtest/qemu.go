package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/tools/vmtest/guest"
)

// vm is how one VM is started.
type vm struct {
	arch, accel    string
	cpus, memMiB   int
	kernel, initrd string
	// root9p exports the host's / read-only under this tag.
	root9p string
}

func (v vm) command(ctx context.Context) *exec.Cmd {
	common := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-smp", strconv.Itoa(v.cpus), "-m", strconv.Itoa(v.memMiB),
		"-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
		"-kernel", v.kernel, "-initrd", v.initrd,
	}
	// panic=-1 reboots (ends qemu) at once on a kernel panic; quiet keeps
	// the console for the tests.
	cmdline := "panic=-1 oops=panic quiet loglevel=3 rdinit=/init"
	var bin string
	var args []string
	switch v.arch {
	case "arm64":
		bin = "qemu-system-aarch64"
		cpu := "max,pauth-impdef=on" // the cheapest pointer authentication to emulate
		if v.accel == "kvm" {
			cpu = "host"
		}
		args = append([]string{"-machine", "virt", "-accel", v.accel, "-cpu", cpu}, common...)
		cmdline = "console=ttyAMA0 " + cmdline
	default:
		bin = "qemu-system-x86_64"
		cpu := "max"
		if v.accel == "kvm" {
			cpu = "host"
		}
		args = append([]string{"-machine", "q35", "-accel", v.accel, "-cpu", cpu}, common...)
		cmdline = "console=ttyS0 " + cmdline
	}
	if v.root9p != "" {
		args = append(args,
			"-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
			"-device", "virtio-9p-pci,fsdev=hostroot,mount_tag="+v.root9p)
	}
	args = append(args, "-append", cmdline)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// event is one "@@vmtest " line from the guest, when the host saw it.
type event struct {
	at   time.Duration // since qemu started
	kind string
	args []string
	line int // index of the console line
}

// errNoBoot says the guest's init never ran within the boot deadline.
var errNoBoot = errors.New("the guest did not reach init")

// runVM starts the VM, copies its console to console (and to log), and
// returns the guest's events. It kills the VM after timeout, and, with a
// bootDeadline, when init has not run by then (errNoBoot).
func runVM(v vm, timeout, bootDeadline time.Duration, console, log io.Writer) (events []event, lines []string, hung bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var booted, noBoot atomic.Bool
	if bootDeadline > 0 {
		t := time.AfterFunc(bootDeadline, func() {
			if !booted.Load() {
				noBoot.Store(true)
				cancel()
			}
		})
		defer t.Stop()
	}
	cmd := v.command(ctx)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, false, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, nil, false, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		fmt.Fprintln(log, line)
		lines = append(lines, line)
		if rest, ok := strings.CutPrefix(line, guest.Marker); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				booted.Store(true)
				events = append(events, event{at: time.Since(start), kind: f[0], args: f[1:], line: len(lines) - 1})
			}
			if len(f) > 0 && f[0] != "exit" && f[0] != "start" {
				continue
			}
		}
		fmt.Fprintln(console, line)
	}
	werr := cmd.Wait()
	if bootDeadline > 0 && (noBoot.Load() || !booted.Load()) {
		return events, lines, false, fmt.Errorf("%w within %s: %v %s", errNoBoot, bootDeadline, werr, strings.TrimSpace(stderr.String()))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return events, lines, true, nil
	}
	if werr != nil {
		return events, lines, false, fmt.Errorf("qemu: %w: %s", werr, strings.TrimSpace(stderr.String()))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		fmt.Fprintln(os.Stderr, "qemu:", s)
	}
	return events, lines, false, nil
}
