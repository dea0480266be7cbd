package xds_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/xds"
)

var update = flag.Bool("update", false, "rewrite testdata/*.envoy.json from testdata/*.config.json")

// goldenSocket is the xDS (and ALS) socket the golden bootstraps name: the
// DaemonSet's.
const goldenSocket = "/var/run/sluice/xds.sock"

// TestGolden: each testdata/NAME.config.json (an l7.Config) generates
// exactly the resources in testdata/NAME.envoy.json, written as the
// static bootstrap `envoy --mode validate -c` reads (make test-envoy),
// and they pass validation. go test ./pkg/xds -run TestGolden -update
// rewrites the files; review the diff.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.config.json")
	require.NoError(t, err)
	require.NotEmpty(t, inputs)
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".config.json")
		t.Run(name, func(t *testing.T) {
			cfg := readConfig(t, in)
			res, err := xds.Generate(cfg, xds.ResourceOptions{})
			require.NoError(t, err)
			require.NoError(t, res.Validate())
			boot, err := staticBootstrap(res, goldenSocket)
			require.NoError(t, err)
			require.NoError(t, xds.ValidateMessage(boot))
			got, err := marshalJSON(boot)
			require.NoError(t, err)
			golden := filepath.Join("testdata", name+".envoy.json")
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
				return
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run go test ./pkg/xds -run TestGolden -update")
			require.Equal(t, string(want), string(got), "%s is stale: run go test ./pkg/xds -run TestGolden -update and review the diff", golden)
		})
	}
}

func readConfig(t *testing.T, path string) l7.Config {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var cfg l7.Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&cfg), path)
	return cfg
}
