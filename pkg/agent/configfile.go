package agent

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// ApplyConfigFile sets flags from a YAML file of `flag-name: value` pairs,
// the form the DaemonSet's ConfigMap mounts. A flag given on the command
// line wins over the file. A key that names no flag, or a value the flag
// refuses, is an error naming the file and the key: a typo must not be
// silently ignored.
func ApplyConfigFile(fs *pflag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	var settings map[string]any
	if err := yaml.UnmarshalStrict(b, &settings); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil {
			return fmt.Errorf("config file %s: %q is not a setting of sluice-agent (see sluice-agent --help)", path, k)
		}
		if k == "config" {
			return fmt.Errorf("config file %s: %q cannot be set from a config file", path, k)
		}
		if f.Changed {
			continue // the command line wins
		}
		if err := fs.Set(k, configValue(settings[k])); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
	}
	return nil
}

// configValue renders a YAML value as the flag's text form: lists join
// with commas, as list flags take them.
func configValue(v any) string {
	switch x := v.(type) {
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = configValue(e)
		}
		return strings.Join(parts, ",")
	case float64:
		// JSON numbers: print integers without an exponent.
		if x == float64(int64(x)) {
			return fmt.Sprintf("%d", int64(x))
		}
		return fmt.Sprint(x)
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}
