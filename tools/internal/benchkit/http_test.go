package benchkit

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, x := range n {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	assert.Zero(t, Percentile(nil, 0.5), "no samples")
	assert.Equal(t, 7000.0, Percentile(ms(7), 0.99), "one sample is every percentile")
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[99-i] = i + 1 // 100..1, unsorted
	}
	assert.Equal(t, 50000.0, Percentile(ms(hundred...), 0.50), "nearest rank: the 50th of 100")
	assert.Equal(t, 99000.0, Percentile(ms(hundred...), 0.99))
	assert.Equal(t, 100000.0, Percentile(ms(hundred...), 1))
	assert.Equal(t, 2000.0, Percentile(ms(3, 1, 2), 0.5))
}

// countingServer is an HTTP server on loopback that counts the
// connections it accepted and the requests by path, answering status.
type countingServer struct {
	*httptest.Server
	conns atomic.Int64
	mu    sync.Mutex
	paths map[string]int
}

func newCountingServer(t *testing.T, status int) *countingServer {
	s := &countingServer{paths: map[string]int{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.paths[r.Method+" "+r.URL.Path]++
		s.mu.Unlock()
		w.WriteHeader(status)
		_, _ = w.Write([]byte("ok\n"))
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *countingServer) requests(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paths[key]
}

// TestRunHTTPLoad: req mode sends its GETs over one connection per worker,
// conn mode opens a connection per GET, and both time what they measured.
func TestRunHTTPLoad(t *testing.T) {
	for _, mode := range []string{"req", "conn"} {
		t.Run(mode, func(t *testing.T) {
			s := newCountingServer(t, http.StatusOK)
			r, err := RunHTTPLoad(HTTPLoadConfig{URL: s.URL + "/api/items", Mode: mode, Workers: 2,
				Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond})
			require.NoError(t, err)
			assert.Zero(t, r.Errors, r.FirstError)
			require.Positive(t, r.Ops)
			assert.InDelta(t, float64(r.Ops)/0.3, r.Rate, 1e-6)
			assert.Positive(t, r.P50)
			assert.LessOrEqual(t, r.P50, r.P99)
			got := s.requests("GET /api/items")
			assert.GreaterOrEqual(t, got, int(r.Ops), "every measured operation was a GET the server answered (warm-up's too)")
			if mode == "req" {
				assert.EqualValues(t, 2, s.conns.Load(), "one persistent connection per worker")
			} else {
				assert.EqualValues(t, got, s.conns.Load(), "one connection per request")
			}
		})
	}
}

// A response other than 200 is an error, not a measured request.
func TestRunHTTPLoadCountsDeniedRequestsAsErrors(t *testing.T) {
	s := newCountingServer(t, http.StatusForbidden)
	r, err := RunHTTPLoad(HTTPLoadConfig{URL: s.URL + "/admin", Mode: "req", Workers: 1, Duration: 100 * time.Millisecond})
	require.NoError(t, err)
	assert.Zero(t, r.Ops)
	assert.Positive(t, r.Errors)
	assert.Contains(t, r.FirstError, "403 Forbidden")
}

func TestRunHTTPLoadRejectsBadConfig(t *testing.T) {
	_, err := RunHTTPLoad(HTTPLoadConfig{URL: "http://127.0.0.1:1/", Mode: "rr", Workers: 1})
	assert.EqualError(t, err, `-mode "rr": use req or conn`)
	_, err = RunHTTPLoad(HTTPLoadConfig{URL: "http://127.0.0.1:1/", Mode: "req"})
	assert.EqualError(t, err, "-workers 0: must be at least 1")
}
