// Command vminit is the init (PID 1) of tools/vmtest's test VMs. It runs
// from the initramfs the runner builds: it loads the kernel modules listed
// in /vmtest.json, mounts either the host's root filesystem (shared
// read-only over 9p, with tmpfs where the tests write) or stays on the
// initramfs, mounts proc, sys, bpffs and cgroup v2, runs each test binary
// and powers the VM off. Everything the runner needs comes back over the
// serial console as lines starting with "@@vmtest ".
//
// Named "true" (a link in the initramfs) it exits 0: the tests run `true`
// to get the namespace of a process that has exited.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/tools/vmtest/guest"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "true":
		os.Exit(0)
	}
	if len(os.Args) > 1 && os.Args[1] == "run-tests" {
		os.Exit(runTests())
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "vminit is the init of tools/vmtest's VMs; it runs as PID 1 only")
		os.Exit(2)
	}
	initVM()
}

func say(format string, args ...any) {
	fmt.Printf(guest.Marker+format+"\n", args...)
}

func uptime() string {
	b, _ := os.ReadFile("/proc/uptime")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// initVM sets the VM up, runs the tests in a child process (so that PID 1
// is free to reap the orphans they leave) and powers off. It never returns.
func initVM() {
	defer poweroff()
	cfg, err := setup()
	if err != nil {
		say("error %v", err)
		return
	}
	say("ready %s", uptime())
	b, _ := json.Marshal(cfg)
	// The initramfs is out of reach once the root moved; the magic link
	// still reaches this binary.
	cmd := exec.Command("/proc/self/exe", "run-tests")
	cmd.Env = []string{"VMTEST_CONFIG=" + string(b)}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		say("error start tests: %v", err)
		return
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid == cmd.Process.Pid {
			break
		}
	}
	say("done %s", uptime())
}

func poweroff() {
	unix.Sync()
	// The runner starts qemu with -no-reboot: a reboot ends it, on every
	// machine type, without ACPI or PSCI power-off support.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}

func readConfig() (guest.Config, error) {
	var c guest.Config
	b, err := os.ReadFile(guest.ConfigPath)
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(b, &c)
}

type mnt struct {
	src, target, fstype string
	flags               uintptr
	data                string
}

func mount(ms ...mnt) error {
	for _, m := range ms {
		if err := os.MkdirAll(m.target, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("mkdir %s: %w", m.target, err)
		}
		if err := unix.Mount(m.src, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

func setup() (guest.Config, error) {
	var cfg guest.Config
	if err := mount(
		mnt{"devtmpfs", "/dev", "devtmpfs", 0, ""},
		mnt{"proc", "/proc", "proc", 0, ""},
		mnt{"sysfs", "/sys", "sysfs", 0, ""},
	); err != nil {
		return cfg, err
	}
	say("boot %s", uptime())
	cfg, err := readConfig()
	if err != nil {
		return cfg, fmt.Errorf("read /vmtest.json: %w", err)
	}
	for _, m := range cfg.Modules {
		if err := loadModule(m); err != nil {
			return cfg, err
		}
	}
	if cfg.Root9P != "" {
		if err := switchTo9P(cfg.Root9P, cfg.Keep); err != nil {
			return cfg, err
		}
	} else if err := mount(mnt{"tmpfs", "/tmp", "tmpfs", 0, ""}, mnt{"tmpfs", "/run", "tmpfs", 0, ""}); err != nil {
		return cfg, err
	}
	if err := mount(
		mnt{"bpffs", "/sys/fs/bpf", "bpf", 0, "mode=700"},
		mnt{"cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""},
		mnt{"devpts", "/dev/pts", "devpts", 0, ""},
		mnt{"tmpfs", "/dev/shm", "tmpfs", 0, ""},
	); err != nil {
		return cfg, err
	}
	_ = os.Symlink("/proc/self/fd", "/dev/fd")
	_ = unix.Sethostname([]byte("vmtest"))
	return cfg, loUp()
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		return fmt.Errorf("load module %s: %w", filepath.Base(path), err)
	}
	return nil
}

// switchTo9P mounts the host's root read-only over 9p, tmpfs where tests
// write, and makes it the root, as switch_root does. Each of keep under a
// tmpfs directory is bind-mounted aside first and moved back on top.
func switchTo9P(tag string, keep []string) error {
	const nr = "/newroot"
	opts := "trans=virtio,version=9p2000.L,msize=512000,cache=loose"
	var err error
	// The virtio device may still be probing: retry for a while.
	for i := 0; i < 50; i++ {
		if err = mount(mnt{tag, nr, "9p", unix.MS_RDONLY, opts}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	tmpfsDirs := []string{"/tmp", "/run", "/var/tmp", "/root"}
	var aside []string // aside[i] holds keep[i], or "" when not covered
	for i, p := range keep {
		aside = append(aside, "")
		if !slices.ContainsFunc(tmpfsDirs, func(d string) bool { return under(p, d) }) {
			continue
		}
		a := fmt.Sprintf("/keep/%d", i)
		if err := os.MkdirAll(a, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(nr+p, a, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("keep %s: %w", p, err)
		}
		aside[i] = a
	}
	for _, d := range tmpfsDirs {
		if err := mount(mnt{"tmpfs", nr + d, "tmpfs", 0, "mode=1777"}); err != nil {
			return err
		}
	}
	for i, a := range aside {
		if a == "" {
			continue
		}
		if err := os.MkdirAll(nr+keep[i], 0o755); err != nil {
			return err
		}
		if err := unix.Mount(a, nr+keep[i], "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("keep %s: %w", keep[i], err)
		}
	}
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		if err := unix.Mount(d, nr+d, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s: %w", d, err)
		}
	}
	if err := os.Chdir(nr); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return os.Chdir("/")
}

// under reports whether path p is dir or below it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// loUp sets the loopback interface up, as every booted system has it.
func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// runTests runs each test binary in turn, with markers around its output.
func runTests() int {
	var cfg guest.Config
	if err := json.Unmarshal([]byte(os.Getenv("VMTEST_CONFIG")), &cfg); err != nil {
		say("error %v", err)
		return 1
	}
	for _, t := range cfg.Tests {
		say("start %s %s", t.Name, uptime())
		start := time.Now()
		cmd := exec.Command(t.Path, t.Args...)
		cmd.Dir, cmd.Env = t.Dir, cfg.Env
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		code := 0
		if err := cmd.Run(); err != nil {
			code = -1
			if ee, ok := err.(*exec.ExitError); ok {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					code = 128 + int(ws.Signal())
				} else {
					code = ee.ExitCode()
				}
			} else {
				fmt.Printf("vminit: run %s: %v\n", t.Path, err)
			}
		}
		say("exit %s %d %.1f", t.Name, code, time.Since(start).Seconds())
	}
	return 0
}
