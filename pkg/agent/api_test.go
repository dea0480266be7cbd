package agent

import (
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/testutil"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/statedir"
)

// The local API's socket answers to root and --socket-group only, from the
// moment it exists: `sluice status` shows every pod, service and policy of
// the node. (statedir's tests show that no wider mode is ever visible.)
func TestAPISocketIsRootAndSocketGroupOnly(t *testing.T) {
	testutil.RequireRoot(t)     // giving the socket a group root is not in
	old := syscall.Umask(0o022) // a process's usual umask: bind(2) alone would make the socket 0755
	defer syscall.Umask(old)
	dir := t.TempDir()
	a := &Agent{opts: Options{StateDir: dir, SocketGroup: strconv.Itoa(4242)}, log: slog.New(slog.DiscardHandler)}
	srv, err := a.listenAPI()
	require.NoError(t, err)
	defer srv.shutdown()

	path := filepath.Join(dir, api.SocketName)
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSocket|0o660, fi.Mode())
	uid, gid := statedir.Owner(fi)
	assert.Equal(t, 0, uid)
	assert.Equal(t, 4242, gid)
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	c.Close()
}
