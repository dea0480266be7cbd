package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sluice-net/sluice/tools/vmtest/guest"
)

// cpioWriter writes an uncompressed "newc" cpio archive, the format the
// kernel unpacks as initramfs.
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

func newCPIO(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriter(w), ino: 1, dirs: map[string]bool{"": true, ".": true, "/": true}}
}

func (c *cpioWriter) header(name string, mode uint32, size int) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check
	_, c.err = fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if c.err == nil {
		_, c.err = c.w.WriteString(name + "\x00")
	}
	c.pad(110 + len(name) + 1)
}

func (c *cpioWriter) pad(n int) {
	if c.err == nil && n%4 != 0 {
		_, c.err = c.w.Write(make([]byte, 4-n%4))
	}
}

// mkdirAll adds name and its parents as directories.
func (c *cpioWriter) mkdirAll(name string) {
	if c.dirs[name] {
		return
	}
	c.mkdirAll(path.Dir(name))
	c.dirs[name] = true
	c.header(name, 0o040755, 0)
}

// file adds a regular file (and its parent directories).
func (c *cpioWriter) file(name string, mode uint32, data []byte) {
	c.mkdirAll(path.Dir(name))
	c.header(name, 0o100000|mode, len(data))
	if c.err == nil {
		_, c.err = c.w.Write(data)
	}
	c.pad(len(data))
}

// symlink adds name pointing at target.
func (c *cpioWriter) symlink(name, target string) {
	c.mkdirAll(path.Dir(name))
	c.header(name, 0o120777, len(target))
	if c.err == nil {
		_, c.err = c.w.WriteString(target)
	}
	c.pad(len(target))
}

func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}

// initramfs is what the runner puts into the VM's initramfs.
type initramfs struct {
	init    []byte            // vminit, as /init
	config  []byte            // /vmtest.json
	modules []module          // as /modules/NN-name.ko
	files   map[string]string // initramfs path → host file (test binaries without a 9p root)
	dirs    []string          // empty directories (the tests' working directories)
}

func (r initramfs) write(out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	c := newCPIO(f)
	c.file("init", 0o755, r.init)
	c.symlink("bin/true", "/init")
	c.file(strings.TrimPrefix(guest.ConfigPath, "/"), 0o644, r.config)
	for i, m := range r.modules {
		c.file(moduleInitramfsPath(i, m), 0o644, m.data)
	}
	names := make([]string, 0, len(r.files))
	for n := range r.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(r.files[n])
		if err != nil {
			f.Close()
			return err
		}
		c.file(n, 0o755, b)
	}
	for _, d := range r.dirs {
		c.mkdirAll(d)
	}
	if err := c.close(); err != nil {
		f.Close()
		return fmt.Errorf("write initramfs: %w", err)
	}
	return f.Close()
}

// addTree adds every regular file under the host directory dir to files,
// at the same path in the initramfs; a missing dir adds nothing.
func addTree(files map[string]string, dir string) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files[strings.TrimPrefix(p, "/")] = p
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func moduleInitramfsPath(i int, m module) string {
	return fmt.Sprintf("modules/%02d-%s.ko", i, m.name)
}
