package statedir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

const (
	// SocketMode lets the owner and the socket's group connect (connecting
	// to a unix socket needs write permission on it) and nobody else.
	SocketMode fs.FileMode = 0o660
	// FileMode is the mode of state files.
	FileMode fs.FileMode = 0o600
	// dirMode is the mode of a state directory this package creates: the
	// sockets' group must be able to reach the sockets in it.
	dirMode fs.FileMode = 0o755
)

// LookupGroup resolves a group given by name (from /etc/group) or as a
// numeric GID. The empty string is -1: leave a socket the group of the
// process that creates it.
func LookupGroup(group string) (int, error) {
	if group == "" {
		return -1, nil
	}
	if gid, err := strconv.ParseUint(group, 10, 32); err == nil {
		if gid == math.MaxUint32 {
			// (gid_t)-1 means "unchanged" to chown(2): not a group.
			return 0, fmt.Errorf("group %s is not a valid GID", group)
		}
		return int(gid), nil
	}
	g, err := user.LookupGroup(group)
	if errors.As(err, new(user.UnknownGroupError)) {
		return 0, fmt.Errorf("no group %q in /etc/group: give a group name from it or a numeric GID", group)
	}
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", group, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %q has GID %q, which is not a number", group, g.Gid)
	}
	return gid, nil
}

// WriteFile replaces path with data atomically, mode FileMode: a temporary
// file in the same directory (created 0600, so never wider), synced, then
// renamed over path, and the directory synced so the rename survives a
// crash. Readers see the old contents or the new, never a mix.
func WriteFile(path string, data []byte) error {
	return WriteFileFunc(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileFunc is WriteFile with the contents written by write, so that
// large contents need not be held in memory whole. An error from write
// leaves path as it was.
func WriteFileFunc(path string, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create directory of %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	// CreateTemp's 0600 is narrowed by the umask, never widened; set it
	// exactly so the mode does not depend on the umask.
	err = f.Chmod(FileMode)
	if err == nil {
		err = write(f)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: the data is written either way
		_ = d.Close()
	}
	return nil
}

// ListenUnix listens on a unix socket at path, mode SocketMode, group gid
// (-1: the process's own group), replacing a socket a previous process left
// there but never another kind of file. Closing the listener removes the
// socket file, unless another socket has replaced it by then.
//
// The socket is bound inside a private directory (mode 0700) next to path,
// given its mode and group there, and then renamed to path: rename(2)
// moves the bound socket's inode, and a client connecting by path can only
// ever find it with its final permissions. (Binding at path and changing the
// mode afterwards would leave a window at the umask's mode, 0755 for most
// processes.) The private directory is reached through /proc/self/fd so
// that the address bound stays short: sun_path holds 107 bytes, and the
// directory's own path may exceed that where path does not.
func ListenUnix(path string, gid int) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket: remove it or choose another path", path)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln, private, err := bindPrivate(filepath.Dir(path), gid)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	defer os.RemoveAll(private)
	err = os.Rename(filepath.Join(private, boundName), path)
	var fi fs.FileInfo
	if err == nil {
		fi, err = os.Lstat(path)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("move socket into place at %s: %w", path, err)
	}
	return &unixListener{UnixListener: ln, path: path, inode: fi}, nil
}

// boundName is the socket's name in its private directory.
const boundName = "s"

// bindPrivate makes a private directory (mode 0700) in dir, binds a socket
// named boundName in it and gives that its final mode and group. Until it
// is renamed out, only the owner can reach it. The caller removes private.
func bindPrivate(dir string, gid int) (ln *net.UnixListener, private string, err error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, "", err
	}
	// In dir, so on the same filesystem: rename cannot cross one.
	if private, err = os.MkdirTemp(dir, ".sock-"); err != nil {
		return nil, "", err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(private)
		}
	}()
	d, err := os.Open(private)
	if err != nil {
		return nil, "", err
	}
	defer d.Close()
	ln, err = net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), boundName)})
	if err != nil {
		return nil, "", err
	}
	// The address it would unlink on Close is the private one: the
	// listener ListenUnix returns removes the socket by its final name.
	ln.SetUnlinkOnClose(false)
	bound := filepath.Join(private, boundName)
	if err = os.Chmod(bound, SocketMode); err != nil {
		err = fmt.Errorf("set the socket's mode to %o: %w", SocketMode, err)
	} else if err = os.Lchown(bound, -1, gid); err != nil {
		err = fmt.Errorf("give the socket group %d: %w (the agent needs CAP_CHOWN, or to be a member of the group)", gid, err)
	}
	if err != nil {
		ln.Close()
		return nil, "", err
	}
	return ln, private, nil
}

// unixListener is a listener on a socket renamed into place: it reports the
// final path as its address and removes that file on Close.
type unixListener struct {
	*net.UnixListener
	path  string
	inode fs.FileInfo // the socket file as created, to recognise it
	once  sync.Once
}

// Addr is the socket's path (the kernel's own idea of the address is the
// private directory's, which is gone).
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Net: "unix", Name: l.path} }

// Close stops listening and removes the socket file if it is still the one
// this listener created: a process that took over the path keeps its own.
// Servers close their listeners themselves and their owners close them
// again; the second Close only reports the first one's closing.
func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.inode) {
			_ = os.Remove(l.path)
		}
	})
	return err
}

// Owner returns the uid and gid of fi (from a Stat or Lstat on Linux).
func Owner(fi fs.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}
