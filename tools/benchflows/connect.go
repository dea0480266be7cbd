package main

// `benchflows connect`: real TCP connections from a pod at a chosen rate.

import (
	"encoding/json"
	"flag"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// connectResult is what connect prints (one JSON line).
type connectResult struct {
	// Conns are the connections completed (connect, 1-byte echo, close
	// with RST); Errors the failed ones, FirstError the first failure.
	Conns      uint64  `json:"conns"`
	Errors     uint64  `json:"errors"`
	FirstError string  `json:"firstError,omitempty"`
	Seconds    float64 `json:"seconds"`
	Rate       float64 `json:"rate"`
	// Late counts connections started more than 10 ms after their slot:
	// the workers could not keep the schedule.
	Late       uint64  `json:"late"`
	CPUSeconds float64 `json:"cpuSeconds"`
}

// runConnect opens connections to -addr on a fixed schedule: connection k
// is due at start + k/rate, taken by whichever of -workers is free, so
// the offered rate does not depend on how fast each one completes (as
// long as enough workers are free; Late counts when they were not).
func runConnect(args []string) error {
	fs := flag.NewFlagSet("connect", flag.ExitOnError)
	addr := fs.String("addr", "", "ip:port of the echo server")
	rate := fs.Float64("rate", 100, "connections per second")
	duration := fs.Duration("duration", 5*time.Second, "how long to connect")
	workers := fs.Int("workers", 16, "connections in flight at most")
	_ = fs.Parse(args)
	if err := waitGo(); err != nil {
		return err
	}
	var (
		next, conns, errs, late atomic.Uint64
		firstErr                error
		errOnce                 sync.Once
		wg                      sync.WaitGroup
	)
	cpu0 := selfCPU()
	start := time.Now()
	end := start.Add(*duration)
	dialer := net.Dialer{Timeout: 2 * time.Second}
	buf := make([][]byte, *workers)
	for w := range *workers {
		buf[w] = make([]byte, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1) - 1
				due := start.Add(time.Duration(float64(k) / *rate * float64(time.Second)))
				if !due.Before(end) {
					return
				}
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				} else if d < -10*time.Millisecond {
					late.Add(1)
				}
				if err := echoOnce(&dialer, *addr, buf[w]); err != nil {
					errs.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				conns.Add(1)
			}
		}()
	}
	wg.Wait()
	r := connectResult{Conns: conns.Load(), Errors: errs.Load(), Late: late.Load(), Seconds: time.Since(start).Seconds()}
	r.Rate = float64(r.Conns) / r.Seconds
	r.CPUSeconds = selfCPU() - cpu0
	if firstErr != nil {
		r.FirstError = firstErr.Error()
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// echoOnce is one connection: connect, send a byte, read the echo, close
// with SO_LINGER 0 (an RST: no TIME_WAIT, so the client's ports last).
func echoOnce(d *net.Dialer, addr string, buf []byte) error {
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	_, err = io.ReadFull(c, buf)
	return err
}
