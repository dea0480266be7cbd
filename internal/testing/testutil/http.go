package testutil

import (
	"io"
	"net/http"
	"testing"
)

// HTTPGet gets url and returns the status code and the body; a request
// that gets no response fails the test.
func HTTPGet(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: read the body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}
