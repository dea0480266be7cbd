package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/version"
)

// confExtensions are the network configuration files runtimes read
// (libcni, containerd, CRI-O).
var confExtensions = []string{".conf", ".conflist", ".json"}

// InstallOptions say where the node's CNI files are and what the
// plugin's entry holds.
type InstallOptions struct {
	// ConfDir is the node's network configuration directory
	// (/etc/cni/net.d as the installer sees it).
	ConfDir string
	// BinDir is the node's CNI plugin directory (/opt/cni/bin); empty
	// leaves binaries alone.
	BinDir string
	// Binary is the sluice-cni executable Install copies into BinDir.
	Binary string
	// StateDir and Timeout go into the entry (empty: the defaults).
	StateDir string
	Timeout  string
	// Wait is how long Install waits for a network configuration to
	// appear (the cluster's CNI writes it when it starts).
	Wait time.Duration
}

// Install copies the plugin into BinDir and adds its entry at the end of
// the chain of the configuration the runtime uses, the lexically first
// file of ConfDir. A single-plugin .conf or .json file becomes a
// .conflist of that plugin and sluice-cni. Nothing is written when all is
// already in place. It returns the configuration file.
func Install(o InstallOptions) (string, error) {
	if o.BinDir != "" {
		if err := installBinary(o.Binary, filepath.Join(o.BinDir, PluginType)); err != nil {
			return "", err
		}
	}
	entry, err := o.entry()
	if err != nil {
		return "", err
	}
	file, err := waitForConf(o.ConfDir, o.Wait)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read network configuration: %w", err)
	}
	var out []byte
	target := file
	if filepath.Ext(file) == ".conflist" {
		out, err = addToList(data, entry)
	} else {
		out, err = listFromConf(data, entry)
		target = strings.TrimSuffix(file, filepath.Ext(file)) + ".conflist"
	}
	if err != nil {
		return "", fmt.Errorf("network configuration %s: %w", file, err)
	}
	if target == file && bytes.Equal(out, data) {
		return file, nil
	}
	if err := writeAtomic(target, out); err != nil {
		return "", err
	}
	if target != file {
		// The .conflist now holds the plugin: the .conf would sort
		// first and hide it.
		if err := os.Remove(file); err != nil {
			return "", fmt.Errorf("replace %s by %s: %w", file, target, err)
		}
	}
	return target, nil
}

// Uninstall removes the plugin's entry from every network configuration
// in ConfDir, then the plugin from BinDir. It returns the files changed.
func Uninstall(o InstallOptions) ([]string, error) {
	files, err := confFiles(o.ConfDir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", o.ConfDir, err)
	}
	var changed []string
	var errs []error
	for _, f := range files {
		if filepath.Ext(f) != ".conflist" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, found, err := removeFromList(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("network configuration %s: %w", f, err))
			continue
		}
		if !found {
			continue
		}
		if err := writeAtomic(f, out); err != nil {
			errs = append(errs, err)
			continue
		}
		changed = append(changed, f)
	}
	// The entries first: the runtime no longer calls the binary.
	if o.BinDir != "" && len(errs) == 0 {
		if err := os.Remove(filepath.Join(o.BinDir, PluginType)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove plugin binary: %w", err))
		}
	}
	return changed, errors.Join(errs...)
}

// entry is the plugin's element of "plugins".
func (o InstallOptions) entry() (json.RawMessage, error) {
	e := map[string]string{"type": PluginType}
	if o.StateDir != "" {
		if !filepath.IsAbs(o.StateDir) {
			return nil, fmt.Errorf("--state-dir %q must be an absolute path", o.StateDir)
		}
		e["stateDir"] = o.StateDir
	}
	if o.Timeout != "" {
		if d, err := time.ParseDuration(o.Timeout); err != nil || d <= 0 {
			return nil, fmt.Errorf("--timeout %q is not a positive duration such as 30s", o.Timeout)
		}
		e["timeout"] = o.Timeout
	}
	return json.Marshal(e)
}

// waitForConf returns the configuration file the runtime uses, waiting up
// to wait for one to appear.
func waitForConf(dir string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		files, err := confFiles(dir)
		if err != nil {
			return "", fmt.Errorf("list network configurations in %s: %w", dir, err)
		}
		if len(files) > 0 {
			return files[0], nil
		}
		if !time.Now().Before(deadline) {
			return "", fmt.Errorf("no network configuration (*.conf, *.conflist, *.json) in %s after %s: sluice-cni chains after the cluster's CNI, which writes one when it starts", dir, wait)
		}
		time.Sleep(time.Second)
	}
}

// confFiles lists dir's network configurations in name order, as
// libcni's ConfFiles does (os.ReadDir sorts); a missing dir has none.
func confFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() && slices.Contains(confExtensions, filepath.Ext(e.Name())) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// isPlugin reports whether a "plugins" element is sluice-cni's.
func isPlugin(raw json.RawMessage) bool {
	var p struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(raw, &p) == nil && p.Type == PluginType
}

// addToList puts entry at the end of a .conflist's plugins, replacing an
// older sluice-cni entry. Other plugins' JSON is kept as it was.
func addToList(data []byte, entry json.RawMessage) ([]byte, error) {
	top, plugins, err := decodeList(data)
	if err != nil {
		return nil, err
	}
	if err := chainable(top); err != nil {
		return nil, err
	}
	kept := slices.DeleteFunc(plugins, isPlugin)
	if len(kept) == 0 {
		return nil, errors.New("\"plugins\" holds no main plugin to chain after")
	}
	return encodeList(top, append(kept, entry))
}

// removeFromList drops sluice-cni's entries from a .conflist.
func removeFromList(data []byte) ([]byte, bool, error) {
	top, plugins, err := decodeList(data)
	if err != nil {
		return nil, false, err
	}
	kept := slices.DeleteFunc(slices.Clone(plugins), isPlugin)
	if len(kept) == len(plugins) {
		return data, false, nil
	}
	out, err := encodeList(top, kept)
	return out, true, err
}

// listFromConf turns a single plugin's configuration into a list of it
// and entry, as libcni's ConfListFromConf reads it.
func listFromConf(data []byte, entry json.RawMessage) ([]byte, error) {
	var conf map[string]json.RawMessage
	if err := json.Unmarshal(data, &conf); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if _, ok := conf["type"]; !ok {
		return nil, errors.New("no \"type\": not a plugin configuration")
	}
	top := map[string]json.RawMessage{}
	for _, k := range []string{"cniVersion", "name"} {
		if v, ok := conf[k]; ok {
			top[k] = v
		}
	}
	if err := chainable(top); err != nil {
		return nil, err
	}
	main, err := json.Marshal(conf)
	if err != nil {
		return nil, err
	}
	return encodeList(top, []json.RawMessage{main, entry})
}

func decodeList(data []byte) (map[string]json.RawMessage, []json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, nil, fmt.Errorf("not a JSON object: %w", err)
	}
	var plugins []json.RawMessage
	if raw, ok := top["plugins"]; ok {
		if err := json.Unmarshal(raw, &plugins); err != nil {
			return nil, nil, fmt.Errorf("\"plugins\" is not a list: %w", err)
		}
	}
	return top, plugins, nil
}

func encodeList(top map[string]json.RawMessage, plugins []json.RawMessage) ([]byte, error) {
	raw, err := json.Marshal(plugins)
	if err != nil {
		return nil, err
	}
	top["plugins"] = raw
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(top); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// chainable checks the list's cniVersion allows chained plugins with
// prevResult.
func chainable(top map[string]json.RawMessage) error {
	var v string
	if raw, ok := top["cniVersion"]; ok {
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("\"cniVersion\" is not a string: %w", err)
		}
	}
	if v == "" {
		return errors.New("no \"cniVersion\": sluice-cni needs 0.3.0 or later")
	}
	ok, err := version.GreaterThanOrEqualTo(v, "0.3.0")
	if err != nil {
		return fmt.Errorf("\"cniVersion\" %q: %w", v, err)
	}
	if !ok {
		return fmt.Errorf("\"cniVersion\" %q has no chained plugins: sluice-cni needs 0.3.0 or later", v)
	}
	return nil
}

// writeAtomic replaces path through a temporary file in its directory
// whose name no runtime reads, so a runtime never sees half a file.
func writeAtomic(path string, data []byte) error {
	mode := os.FileMode(0o644)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".sluice-tmp")
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// installBinary copies src to dst unless dst already has its content; a
// runtime executing dst meanwhile runs the old or the new file, whole.
func installBinary(src, dst string) error {
	want, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read plugin binary: %w", err)
	}
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
		return nil
	}
	tmp := dst + ".sluice-tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("install plugin binary: %w", err)
	}
	_, err = io.Copy(f, bytes.NewReader(want))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("install plugin binary %s: %w", dst, err)
	}
	return nil
}
