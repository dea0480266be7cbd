package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// apt runs apt-get or apt-cache with a private configuration under
// <cache>/apt: its own sources.list, package lists, archive cache and an
// empty dpkg status, so the host's apt setup is neither read nor changed.
type apt struct {
	dir     string
	sources []string
}

func (a apt) args() []string {
	d := a.dir
	return []string{
		"-o", "Dir::Etc=" + filepath.Join(d, "etc"),
		"-o", "Dir::Etc::SourceList=" + filepath.Join(d, "etc", "sources.list"),
		"-o", "Dir::Etc::SourceParts=" + filepath.Join(d, "etc", "sources.list.d"),
		"-o", "Dir::Etc::PreferencesParts=" + filepath.Join(d, "etc", "preferences.d"),
		"-o", "Dir::State::Lists=" + filepath.Join(d, "lists"),
		"-o", "Dir::Cache=" + filepath.Join(d, "cache"),
		"-o", "Dir::State::status=" + filepath.Join(d, "status"),
		"-o", "APT::Architecture=amd64",
		"-o", "APT::Architectures::=amd64", "-o", "APT::Architectures::=arm64",
		// Downloads land in root-owned cache directories.
		"-o", "APT::Sandbox::User=root",
	}
}

// setup writes the private configuration.
func (a apt) setup() error {
	for _, d := range []string{"etc/sources.list.d", "etc/preferences.d", "lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(a.dir, d), 0o755); err != nil {
			return err
		}
	}
	var b strings.Builder
	for _, s := range a.sources {
		fmt.Fprintf(&b, "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s\n", s)
	}
	if err := os.WriteFile(filepath.Join(a.dir, "etc", "sources.list"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	st := filepath.Join(a.dir, "status")
	if _, err := os.Stat(st); errors.Is(err, fs.ErrNotExist) {
		return os.WriteFile(st, nil, 0o644)
	}
	return nil
}

func (a apt) run(dir, tool string, args ...string) ([]byte, error) {
	cmd := exec.Command(tool, append(a.args(), args...)...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w:\n%s", tool, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

func (a apt) update() error {
	if err := a.setup(); err != nil {
		return fmt.Errorf("set up private apt configuration: %w", err)
	}
	_, err := a.run("", "apt-get", "-q", "update")
	return err
}

var fetchMu sync.Mutex

// kernelDir is where the entry's package is unpacked.
func kernelDir(cache string, k Kernel) string {
	return filepath.Join(cache, "kernels", fmt.Sprintf("%s_%s_%s", k.Package, k.Version, k.Arch))
}

// fetchKernel downloads (apt-get download) and unpacks (dpkg-deb -x) the
// entry's pinned package once; later runs reuse the unpacked tree.
func fetchKernel(cache string, m *Matrix, k Kernel, logf func(string, ...any)) (string, error) {
	// One apt at a time: the private configuration has one set of locks.
	fetchMu.Lock()
	defer fetchMu.Unlock()
	dir := kernelDir(cache, k)
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir, nil
	}
	a := apt{dir: filepath.Join(cache, "apt"), sources: m.Apt.Sources}
	debs := filepath.Join(cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", err
	}
	deb := filepath.Join(debs, fmt.Sprintf("%s_%s_%s.deb", k.Package, strings.ReplaceAll(k.Version, ":", "%3a"), k.Arch))
	if _, err := os.Stat(deb); err != nil {
		want := fmt.Sprintf("%s:%s=%s", k.Package, k.Arch, k.Version)
		logf("downloading %s", want)
		if _, err := os.Stat(filepath.Join(a.dir, "lists")); err != nil {
			if err := a.update(); err != nil {
				return "", err
			}
		}
		if _, err := a.run(debs, "apt-get", "-q", "download", want); err != nil {
			// The lists may be stale: refresh once.
			if uerr := a.update(); uerr != nil {
				return "", uerr
			}
			if _, err := a.run(debs, "apt-get", "-q", "download", want); err != nil {
				return "", fmt.Errorf("%w\n(a pinned kernel version leaves the archive at Debian point releases: `go run ./tools/vmtest pins` shows what to pin in vagrant/matrix.yaml)", err)
			}
		}
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	logf("unpacking %s", filepath.Base(deb))
	if out, err := exec.Command("dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", err
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return dir, nil
}

// kernelImage returns the unpacked tree's vmlinuz and modules directory.
func kernelImage(dir string) (vmlinuz, modules string, err error) {
	imgs, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*"))
	more, _ := filepath.Glob(filepath.Join(dir, "usr", "lib", "modules", "*"))
	mods = append(mods, more...)
	if len(imgs) != 1 || len(mods) != 1 {
		return "", "", fmt.Errorf("%s: expected one boot/vmlinuz-* and one modules directory, found %v and %v", dir, imgs, mods)
	}
	return imgs[0], mods[0], nil
}

// module is a kernel module ready to load, decompressed.
type module struct {
	name string
	data []byte
}

func modName(path string) string {
	base := filepath.Base(path)
	base = base[:strings.Index(base, ".ko")]
	return strings.ReplaceAll(base, "-", "_")
}

// resolveModules returns the wanted modules and their dependencies, each
// after what it depends on. Modules built into the kernel are left out;
// a module the kernel has neither built in nor as a file is an error.
func resolveModules(modDir string, want []string) ([]module, error) {
	files := map[string]string{}
	err := filepath.WalkDir(filepath.Join(modDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			files[modName(p)] = p
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(l)] = true
		}
	}
	var out []module
	done := map[string]bool{}
	var visit func(name string, from []string) error
	visit = func(name string, from []string) error {
		name = strings.ReplaceAll(name, "-", "_")
		if done[name] || builtin[name] {
			return nil
		}
		for _, f := range from {
			if f == name {
				return fmt.Errorf("module dependency cycle: %s", strings.Join(append(from, name), " → "))
			}
		}
		p, ok := files[name]
		if !ok {
			return fmt.Errorf("kernel module %s is neither built in nor in %s", name, modDir)
		}
		data, err := readModule(p)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, d := range deps {
			if err := visit(d, append(from, name)); err != nil {
				return err
			}
		}
		done[name] = true
		out = append(out, module{name: name, data: data})
		return nil
	}
	for _, w := range want {
		// "name?": only if this kernel has it (a module that later
		// kernels build into another, as nft_counter into nf_tables).
		if n, optional := strings.CutSuffix(w, "?"); optional {
			if _, ok := files[strings.ReplaceAll(n, "-", "_")]; !ok {
				continue
			}
			w = n
		}
		if err := visit(w, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readModule reads a module, decompressing .ko.xz and .ko.zst with the
// host's xz and zstd.
func readModule(p string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(p, ".xz"):
		tool = "xz"
	case strings.HasSuffix(p, ".zst"):
		tool = "zstd"
	default:
		return os.ReadFile(p)
	}
	out, err := exec.Command(tool, "-dc", p).Output()
	if err != nil {
		return nil, fmt.Errorf("%s -dc %s: %w", tool, p, err)
	}
	return out, nil
}

// moduleDepends reads "depends=" from the module's .modinfo section.
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	b, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, d)
				}
			}
			sort.Strings(deps)
			return deps, nil
		}
	}
	return nil, nil
}
