// Package xdstest drives go-control-plane's ADS client against an xDS
// server in tests, standing in for Envoy.
package xdstest

import (
	"slices"
	"testing"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/stretchr/testify/require"
)

// Fetch waits (up to 10 s) for c's next response and returns the sorted
// names of its resources, nil for none.
func Fetch(t testing.TB, c sotw.ADSClient) []string {
	t.Helper()
	type result struct {
		r   *sotw.Response
		err error
	}
	done := make(chan result, 1)
	go func() { r, err := c.Fetch(); done <- result{r, err} }()
	select {
	case res := <-done:
		require.NoError(t, res.err)
		var names []string
		for _, a := range res.r.Resources {
			m, err := a.UnmarshalNew()
			require.NoError(t, err)
			names = append(names, cachev3.GetResourceName(m))
		}
		slices.Sort(names)
		return names
	case <-time.After(10 * time.Second):
		t.Fatal("no xDS response within 10s")
		return nil
	}
}
