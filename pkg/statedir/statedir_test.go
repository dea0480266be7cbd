package statedir

import (
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/testutil"
)

// otherGroup is a GID no test process runs as; only root may give a file
// to it.
const otherGroup = 4242

// requireSocket checks path is a socket with mode 0660 of group gid
// (-1: the test process's group) owned by the test process.
func requireSocket(t *testing.T, path string, gid int) {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSocket|SocketMode, fi.Mode(), "%s: %s", path, fi.Mode())
	uid, g := Owner(fi)
	if gid < 0 {
		gid = os.Getegid()
	}
	assert.Equal(t, os.Geteuid(), uid, "%s: owner", path)
	assert.Equal(t, gid, g, "%s: group", path)
}

func dial(t *testing.T, path string) {
	t.Helper()
	c, err := net.Dial("unix", path)
	require.NoError(t, err, "connect to %s", path)
	c.Close()
}

// Before a socket has its name it already has its final mode and group, in
// a directory nobody else may enter: there is no moment at which a client
// could find it with the process's umask mode (0755 for a umask of 022,
// where connecting needs only write permission) or the wrong group.
func TestBindPrivateHasFinalModeBeforeItsName(t *testing.T) {
	old := syscall.Umask(0) // the widest mode bind(2) could give the socket: 0777
	defer syscall.Umask(old)
	dir := t.TempDir()
	ln, private, err := bindPrivate(dir, -1)
	require.NoError(t, err)
	defer ln.Close()
	defer os.RemoveAll(private)

	fi, err := os.Lstat(private)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeDir|0o700, fi.Mode(), "the private directory")
	assert.Equal(t, dir, filepath.Dir(private), "same directory, same filesystem: rename can move the socket")
	requireSocket(t, filepath.Join(private, boundName), -1)
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, des, 1, "only the private directory is in the state directory")
}

func TestListenUnix(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")
	ln, err := ListenUnix(path, -1)
	require.NoError(t, err)
	requireSocket(t, path, -1)
	assert.Equal(t, path, ln.Addr().String())
	dial(t, path)
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, des, 1, "the private directory is gone")

	// Close removes the socket; a second Close is harmless.
	require.NoError(t, ln.Close())
	assert.NoFileExists(t, path)
	_ = ln.Close()

	// A socket a dead process left is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: path})
	require.NoError(t, err)
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err = ListenUnix(path, -1)
	require.NoError(t, err)
	dial(t, path)

	// A process that took the path over keeps its socket when this one
	// closes.
	next, err := ListenUnix(path, -1)
	require.NoError(t, err)
	defer next.Close()
	require.NoError(t, ln.Close())
	dial(t, path)

	// Any other file is left alone.
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, []byte("keep"), 0o600))
	_, err = ListenUnix(file, -1)
	require.ErrorContains(t, err, file+" exists and is not a socket")
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, "keep", string(b))
}

// The private directory's path is longer than the socket's; the bind goes
// through /proc/self/fd, so a path that fits sun_path works wherever it is.
func TestListenUnixLongPath(t *testing.T) {
	dir := t.TempDir()
	dir = filepath.Join(dir, strings.Repeat("d", 99-len(dir)))
	path := filepath.Join(dir, "s.sock")
	require.Len(t, path, 107, "the longest path sun_path holds")
	ln, err := ListenUnix(path, -1)
	require.NoError(t, err)
	defer ln.Close()
	dial(t, path)
}

func TestListenUnixGroup(t *testing.T) {
	testutil.RequireRoot(t) // only root may give a file to a group it is not in
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := ListenUnix(path, otherGroup)
	require.NoError(t, err)
	defer ln.Close()
	requireSocket(t, path, otherGroup)
}

func TestLookupGroup(t *testing.T) {
	for in, want := range map[string]int{"": -1, "0": 0, "4242": 4242, "root": 0} {
		got, err := LookupGroup(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	_, err := LookupGroup("no-such-group-sluice")
	require.EqualError(t, err, `no group "no-such-group-sluice" in /etc/group: give a group name from it or a numeric GID`)
	_, err = LookupGroup("4294967295")
	require.ErrorContains(t, err, "not a valid GID")
}

func TestWriteFile(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "model.json")
	require.NoError(t, WriteFile(path, []byte("one")))
	// An older agent's file at a wider mode is replaced by one at 0600.
	require.NoError(t, os.Chmod(path, 0o644))
	require.NoError(t, WriteFile(path, []byte("two")))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, FileMode, fi.Mode())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "two", string(b))
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, des, 1, "no temporary file left")
}
