package cni

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const calicoList = `{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {"type": "calico", "log_level": "info", "ipam": {"type": "calico-ipam"}, "policy": {"type": "k8s"}},
    {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}
  ]
}
`

const flannelConf = `{"cniVersion": "1.0.0", "name": "cbr0", "type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}}`

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

// pluginsOf decodes a .conflist's plugins.
func pluginsOf(t *testing.T, path string) (map[string]any, []map[string]any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var l struct {
		Plugins []map[string]any `json:"plugins"`
	}
	var top map[string]any
	require.NoError(t, json.Unmarshal(b, &l), "%s", b)
	require.NoError(t, json.Unmarshal(b, &top))
	return top, l.Plugins
}

func opts(dir string) InstallOptions {
	return InstallOptions{ConfDir: dir, StateDir: "/var/run/sluice", Timeout: "20s"}
}

func TestInstallChainsIntoConflistOnce(t *testing.T) {
	dir := t.TempDir()
	path := write(t, dir, "10-calico.conflist", calicoList)

	got, err := Install(opts(dir))
	require.NoError(t, err)
	assert.Equal(t, path, got)
	top, plugins := pluginsOf(t, path)
	assert.Equal(t, "k8s-pod-network", top["name"])
	assert.Equal(t, "0.3.1", top["cniVersion"])
	require.Len(t, plugins, 3)
	assert.Equal(t, "calico", plugins[0]["type"])
	assert.Equal(t, map[string]any{"type": "calico-ipam"}, plugins[0]["ipam"], "other plugins are kept whole")
	assert.Equal(t, "portmap", plugins[1]["type"])
	assert.Equal(t, map[string]any{"type": "sluice-cni", "stateDir": "/var/run/sluice", "timeout": "20s"}, plugins[2])

	// Again: nothing changes, not even the file.
	before, _ := os.ReadFile(path)
	st1, _ := os.Stat(path)
	_, err = Install(opts(dir))
	require.NoError(t, err)
	after, _ := os.ReadFile(path)
	st2, _ := os.Stat(path)
	assert.Equal(t, string(before), string(after))
	assert.Equal(t, st1.ModTime(), st2.ModTime())

	// New settings replace the entry, still once and still last.
	o := opts(dir)
	o.Timeout = "45s"
	_, err = Install(o)
	require.NoError(t, err)
	_, plugins = pluginsOf(t, path)
	require.Len(t, plugins, 3)
	assert.Equal(t, "45s", plugins[2]["timeout"])

	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, left, 1, "no temporary file is left")
}

func TestInstallTurnsConfIntoConflist(t *testing.T) {
	for _, ext := range []string{".conf", ".json"} {
		t.Run(ext, func(t *testing.T) {
			dir := t.TempDir()
			orig := write(t, dir, "10-flannel"+ext, flannelConf)
			got, err := Install(opts(dir))
			require.NoError(t, err)
			assert.Equal(t, filepath.Join(dir, "10-flannel.conflist"), got)
			assert.NoFileExists(t, orig, "the single-plugin file would sort first and hide the list")
			top, plugins := pluginsOf(t, got)
			assert.Equal(t, "cbr0", top["name"])
			assert.Equal(t, "1.0.0", top["cniVersion"])
			require.Len(t, plugins, 2)
			var want map[string]any
			require.NoError(t, json.Unmarshal([]byte(flannelConf), &want))
			assert.Equal(t, want, plugins[0], "the main plugin's configuration is kept whole")
			assert.Equal(t, "sluice-cni", plugins[1]["type"])

			_, err = Install(opts(dir))
			require.NoError(t, err)
			_, plugins = pluginsOf(t, got)
			assert.Len(t, plugins, 2, "installing twice adds one entry")
		})
	}
}

func TestInstallPicksTheFileTheRuntimeUses(t *testing.T) {
	dir := t.TempDir()
	second := write(t, dir, "20-other.conflist", calicoList)
	write(t, dir, "README", "not a configuration")
	write(t, dir, "05-cilium.conflist.bak", calicoList)
	first := write(t, dir, "10-calico.conflist", calicoList)
	got, err := Install(opts(dir))
	require.NoError(t, err)
	assert.Equal(t, first, got, "the lexically first .conf/.conflist/.json, as libcni orders them")
	_, plugins := pluginsOf(t, second)
	assert.Len(t, plugins, 2, "other files are left alone")
}

func TestInstallRefuses(t *testing.T) {
	for name, tc := range map[string]struct{ file, content, want string }{
		"cniVersion without chaining": {"10-old.conflist", `{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"bridge"}]}`, `"0.2.0" has no chained plugins`},
		"no main plugin":              {"10-empty.conflist", `{"cniVersion":"1.0.0","name":"n","plugins":[]}`, "no main plugin"},
		"broken JSON":                 {"10-broken.conflist", `{"cniVersion":`, "not a JSON object"},
		"conf without type":           {"10-x.conf", `{"cniVersion":"1.0.0","name":"n"}`, `no "type"`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := write(t, dir, tc.file, tc.content)
			_, err := Install(opts(dir))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), path, "the error names the file")
			b, _ := os.ReadFile(path)
			assert.Equal(t, tc.content, string(b), "left as it was")
		})
	}
	t.Run("no configuration", func(t *testing.T) {
		dir := t.TempDir()
		_, err := Install(opts(dir))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "no network configuration")
		assert.Contains(t, err.Error(), dir)
	})
	t.Run("bad timeout", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "10-calico.conflist", calicoList)
		o := opts(dir)
		o.Timeout = "forever"
		_, err := Install(o)
		require.ErrorContains(t, err, `--timeout "forever"`)
	})
}

func TestInstallAndUninstallBinaryAndEntries(t *testing.T) {
	conf, bin := t.TempDir(), t.TempDir()
	src := write(t, t.TempDir(), "sluice-cni", "#!/bin/true\n")
	a := write(t, conf, "10-calico.conflist", calicoList)
	b := write(t, conf, "99-stale.conflist", calicoList)
	o := opts(conf)
	o.BinDir, o.Binary = bin, src
	_, err := Install(o)
	require.NoError(t, err)
	st, err := os.Stat(filepath.Join(bin, "sluice-cni"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), st.Mode().Perm())

	// An entry another install left in a file that is no longer first
	// goes too.
	require.NoError(t, os.WriteFile(b, []byte(`{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"},{"type":"sluice-cni"}]}`), 0o644))
	changed, err := Uninstall(o)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{a, b}, changed)
	_, plugins := pluginsOf(t, a)
	require.Len(t, plugins, 2)
	assert.Equal(t, "portmap", plugins[1]["type"])
	_, plugins = pluginsOf(t, b)
	require.Len(t, plugins, 1)
	assert.NoFileExists(t, filepath.Join(bin, "sluice-cni"))

	changed, err = Uninstall(o)
	require.NoError(t, err)
	assert.Empty(t, changed, "uninstalling twice changes nothing")
}
