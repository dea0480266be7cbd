package cluster

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Images without a registry or a container engine: each Image is one
// layer built from files on this machine, written with its configuration
// into a docker-archive tarball (what `docker save` writes), which
// `ctr images import` loads into containerd's image store.

// ImageFile is one file of an image.
type ImageFile struct {
	// Path in the image, absolute ("/usr/local/bin/sluice-agent").
	Path string
	// Source is the file on this machine whose content it gets, or, when
	// Link is set, nothing.
	Source string
	// Link makes the file a symbolic link to Link.
	Link string
}

// Image is a one-layer image.
type Image struct {
	// Ref is the name it is imported under ("ghcr.io/sluice-net/sluice:dev").
	Ref        string
	Entrypoint []string
	Files      []ImageFile
}

// WriteDockerArchive writes images as one docker-archive tarball.
func WriteDockerArchive(w io.Writer, images ...Image) error {
	out := tar.NewWriter(w)
	type manifestEntry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var manifest []manifestEntry
	for _, img := range images {
		layer, err := imageLayer(img.Files)
		if err != nil {
			return fmt.Errorf("image %s: %w", img.Ref, err)
		}
		layerSum := sha256.Sum256(layer)
		diffID := "sha256:" + hex.EncodeToString(layerSum[:])
		config, err := json.Marshal(map[string]any{
			"architecture": runtime.GOARCH,
			"os":           "linux",
			"created":      time.Unix(0, 0).UTC(),
			"config": map[string]any{
				"Entrypoint": img.Entrypoint,
				"Env":        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
			},
			"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		})
		if err != nil {
			return err
		}
		configSum := sha256.Sum256(config)
		configName := hex.EncodeToString(configSum[:]) + ".json"
		layerName := hex.EncodeToString(layerSum[:]) + "/layer.tar"
		if err := addTarFile(out, configName, config); err != nil {
			return err
		}
		if err := addTarFile(out, layerName, layer); err != nil {
			return err
		}
		manifest = append(manifest, manifestEntry{Config: configName, RepoTags: []string{img.Ref}, Layers: []string{layerName}})
	}
	m, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	if err := addTarFile(out, "manifest.json", m); err != nil {
		return err
	}
	return out.Close()
}

// imageLayer is the layer tarball of files, with their parent directories.
func imageLayer(files []ImageFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var dirList []string
	for _, f := range files {
		for d := path.Dir(f.Path); d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			dirList = append(dirList, d)
		}
	}
	sort.Strings(dirList) // parents first
	for _, d := range dirList {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}); err != nil {
			return nil, err
		}
	}
	// /tmp as every image has it: world-writable and sticky.
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777}); err != nil {
		return nil, err
	}
	for _, f := range files {
		name := strings.TrimPrefix(f.Path, "/")
		if f.Link != "" {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: f.Link, Mode: 0o777}); err != nil {
				return nil, err
			}
			continue
		}
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(f.Source)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(st.Mode().Perm()), Size: int64(len(data))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func addTarFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}
