package benchkit

// Subcommands that run inside the simulated pods and node (started with
// Host.Exec, i.e. nsenter into the netns and cloned into the pod's cgroup,
// so the node's socket-level programs see them as the pod's): a TCP echo
// server, the load generator and a connectivity probe. One long-lived
// process per measurement, so process start-up never counts.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// LoadResult is what the loadgen subcommand prints (one JSON line).
type LoadResult struct {
	Mode string `json:"mode"`
	// Ops are the connections (conn) or round trips (rr) completed in
	// Seconds, the measured duration; Rate is Ops per second.
	Ops     uint64  `json:"ops"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	// Errors are failed operations, FirstError the first one's error.
	Errors     uint64 `json:"errors"`
	FirstError string `json:"firstError,omitempty"`
}

// Serve (`serve -port P [-ipv6]`) echoes whatever it reads on every
// connection until the peer closes or resets it. It listens on IPv4 and,
// with -ipv6, on IPv6 too, on a socket of its own (IPV6_V6ONLY, which Go
// sets for "tcp6"): IPv4 clients keep reaching an IPv4 socket, as before
// IPv6 was measured.
func Serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	port := fs.Int("port", 8080, "listen port")
	ipv6 := fs.Bool("ipv6", false, "listen on IPv6 as well")
	_ = fs.Parse(args)
	networks := []string{"tcp4"}
	if *ipv6 {
		networks = append(networks, "tcp6")
	}
	errs := make(chan error, len(networks))
	for _, network := range networks {
		ln, err := net.Listen(network, fmt.Sprintf(":%d", *port))
		if err != nil {
			return err
		}
		go func() { errs <- echoAll(ln) }()
	}
	return <-errs
}

// echoAll accepts connections on ln and echoes each until it ends.
func echoAll(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 512)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// Loadgen (`loadgen -addr ip:port ...`) drives one of two loads against
// addr for warmup+duration with workers goroutines and prints the rate
// over the duration alone as a LoadResult:
//
//	conn: connect, write 1 byte, read the echo, close with SO_LINGER 0 (an
//	      RST: no TIME_WAIT, so neither end runs out of ports and the rate
//	      is the datapath's, not the TIME_WAIT table's), repeat
//	rr:   one persistent connection per worker, 1-byte ping-pong
func Loadgen(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ExitOnError)
	addr := fs.String("addr", "", "ip:port to load")
	mode := fs.String("mode", "conn", "conn or rr")
	workers := fs.Int("workers", 8, "parallel connections")
	duration := fs.Duration("duration", time.Second, "measured duration")
	warmup := fs.Duration("warmup", 200*time.Millisecond, "unmeasured warm-up before the measured duration")
	_ = fs.Parse(args)
	if *mode != "conn" && *mode != "rr" {
		return fmt.Errorf("-mode %q: use conn or rr", *mode)
	}

	var (
		ops, errs atomic.Uint64
		stop      atomic.Bool
		firstErr  error
		errOnce   sync.Once
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		errs.Add(1)
		errOnce.Do(func() { firstErr = err })
	}
	dialer := net.Dialer{Timeout: 2 * time.Second}
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1)
			msg := []byte{'x'}
			switch *mode {
			case "conn":
				for !stop.Load() {
					if err := oneConn(&dialer, *addr, msg, buf); err != nil {
						fail(err)
						time.Sleep(time.Millisecond)
						continue
					}
					ops.Add(1)
				}
			case "rr":
				for !stop.Load() {
					c, err := dialer.Dial("tcp", *addr)
					if err != nil {
						fail(err)
						time.Sleep(10 * time.Millisecond)
						continue
					}
					for !stop.Load() {
						_ = c.SetDeadline(time.Now().Add(2 * time.Second))
						if _, err = c.Write(msg); err == nil {
							_, err = io.ReadFull(c, buf)
						}
						if err != nil {
							fail(err)
							break
						}
						ops.Add(1)
					}
					c.Close()
				}
			}
		}()
	}
	time.Sleep(*warmup)
	o0, t0 := ops.Load(), time.Now()
	time.Sleep(*duration)
	o1, t1 := ops.Load(), time.Now()
	stop.Store(true)
	wg.Wait()
	r := LoadResult{Mode: *mode, Ops: o1 - o0, Seconds: t1.Sub(t0).Seconds(), Errors: errs.Load()}
	r.Rate = float64(r.Ops) / r.Seconds
	if firstErr != nil {
		r.FirstError = firstErr.Error()
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// oneConn is one connection of the conn load: connect, 1-byte echo, close
// with an RST. The socket is of addr's family ("tcp" with an address
// literal: an IPv4 socket for an IPv4 address, as "tcp4" was).
func oneConn(d *net.Dialer, addr string, msg, buf []byte) error {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err = io.ReadFull(c, buf)
	return err
}

// Probe (`probe -addr ip:port`) waits until one connection to addr is
// echoed; with -expect-deny it instead makes one attempt and fails if it
// is echoed (a policy that should drop the SYN lets it through).
func Probe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	addr := fs.String("addr", "", "ip:port")
	timeout := fs.Duration("timeout", 15*time.Second, "give up after (with -expect-deny: the connect timeout)")
	expectDeny := fs.Bool("expect-deny", false, "succeed only if the connection does not get through")
	_ = fs.Parse(args)
	buf := make([]byte, 1)
	if *expectDeny {
		d := net.Dialer{Timeout: *timeout}
		if err := oneConn(&d, *addr, []byte{'p'}, buf); err != nil {
			fmt.Printf("denied: %v\n", err)
			return nil
		}
		return fmt.Errorf("connection to %s got through: the policy should drop it", *addr)
	}
	d := net.Dialer{Timeout: time.Second}
	deadline := time.Now().Add(*timeout)
	for {
		err := oneConn(&d, *addr, []byte{'p'}, buf)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no echo from %s within %s: %w", *addr, *timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
