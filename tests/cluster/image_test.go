package cluster

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDockerArchive reads back what WriteDockerArchive writes as
// `ctr images import` does: manifest.json names each image's config and
// layer, the config's diff_ids are the layers' digests, and the layer holds
// the files (modes kept), their parent directories and the links.
func TestDockerArchive(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tool")
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755))
	var buf bytes.Buffer
	require.NoError(t, WriteDockerArchive(&buf,
		Image{Ref: "example.test/a:1", Entrypoint: []string{"/usr/local/bin/tool"}, Files: []ImageFile{
			{Path: "/usr/local/bin/tool", Source: bin},
			{Path: "/bin/sh", Link: "/usr/local/bin/tool"},
		}},
		Image{Ref: "example.test/b:2", Entrypoint: []string{"/tool"}, Files: []ImageFile{{Path: "/tool", Source: bin}}},
	))
	files := map[string][]byte{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		files[h.Name] = b
	}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	require.NoError(t, json.Unmarshal(files["manifest.json"], &manifest))
	require.Len(t, manifest, 2)
	assert.Equal(t, []string{"example.test/a:1"}, manifest[0].RepoTags)
	assert.Equal(t, []string{"example.test/b:2"}, manifest[1].RepoTags)

	var config struct {
		OS, Architecture string
		Config           struct{ Entrypoint []string }
		RootFS           struct {
			Type    string
			DiffIDs []string `json:"diff_ids"`
		}
	}
	require.NoError(t, json.Unmarshal(files[manifest[0].Config], &config))
	assert.Equal(t, "linux", config.OS)
	assert.Equal(t, []string{"/usr/local/bin/tool"}, config.Config.Entrypoint)
	layer := files[manifest[0].Layers[0]]
	sum := sha256.Sum256(layer)
	assert.Equal(t, []string{"sha256:" + hex.EncodeToString(sum[:])}, config.RootFS.DiffIDs)
	configSum := sha256.Sum256(files[manifest[0].Config])
	assert.Equal(t, hex.EncodeToString(configSum[:])+".json", manifest[0].Config, "the config is named by its digest")

	entries := map[string]*tar.Header{}
	lr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		entries[h.Name] = h
	}
	for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/", "bin/", "tmp/"} {
		require.Contains(t, entries, d)
		assert.Equal(t, byte(tar.TypeDir), entries[d].Typeflag, d)
	}
	require.Contains(t, entries, "usr/local/bin/tool")
	assert.Equal(t, int64(0o755), entries["usr/local/bin/tool"].Mode)
	require.Contains(t, entries, "bin/sh")
	assert.Equal(t, "/usr/local/bin/tool", entries["bin/sh"].Linkname)
	assert.Equal(t, int64(0o1777), entries["tmp/"].Mode&0o7777, "/tmp is world-writable and sticky")
}
