// Command workload is the one program of the test images tests/cluster
// loads into its node's containerd: the pod sandbox's pause process and
// the workloads (a TCP echo server, clients) of the pods the tests run.
// It is built static (CGO_ENABLED=0), so an image is this file alone.
//
//	workload pause                       sleep until SIGTERM (the sandbox image)
//	workload serve PORT                  TCP: answer each line with "<hostname> <line>"
//	workload request ADDR LINE           one connection, one line; print the answer
//	workload stream ADDR DURATION        hold one connection and open new ones; print counts as JSON
//	workload kubeapi                     ask the API server who this pod's service account is
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-net/sluice/tests/cluster/workload/stream"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: workload pause|serve|request|stream|kubeapi ...")
		os.Exit(2)
	}
	var err error
	switch args := os.Args[2:]; os.Args[1] {
	case "pause":
		pause()
	case "serve":
		err = need(args, 1, func() error { return serve(args[0]) })
	case "request":
		err = need(args, 2, func() error { return request(args[0], args[1]) })
	case "stream":
		err = need(args, 2, func() error { return streamTo(args[0], args[1]) })
	case "kubeapi":
		err = kubeAPI()
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(1)
	}
}

func need(args []string, n int, f func() error) error {
	if len(args) != n {
		return fmt.Errorf("%s takes %d arguments, got %d", os.Args[1], n, len(args))
	}
	return f()
}

// pause is the sandbox's process: it holds the pod's namespaces and reaps
// nothing (the pods do not share their PID namespace).
func pause() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

func serve(port string) error {
	host, _ := os.Hostname()
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			s := bufio.NewScanner(c)
			for s.Scan() {
				if _, err := fmt.Fprintf(c, "%s %s\n", host, s.Text()); err != nil {
					return
				}
			}
		}()
	}
}

// roundTrip sends line on c and reads one answer line within timeout.
func roundTrip(c net.Conn, r *bufio.Reader, line string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintln(c, line); err != nil {
		return "", err
	}
	ans, err := r.ReadString('\n')
	return strings.TrimSpace(ans), err
}

func request(addr, line string) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	ans, err := roundTrip(c, bufio.NewReader(c), line, 3*time.Second)
	if err != nil {
		return err
	}
	fmt.Println(ans)
	return nil
}

// streamTo holds one connection to addr, with a round trip every 100ms, and
// opens a new connection (one round trip, closed) every 50ms, for
// duration; then it prints the counts as JSON.
func streamTo(addr, duration string) error {
	d, err := time.ParseDuration(duration)
	if err != nil {
		return err
	}
	var res stream.Result
	var mu sync.Mutex
	backends := map[string]bool{}
	seen := func(ans string) {
		mu.Lock()
		defer mu.Unlock()
		if f := strings.Fields(ans); len(f) > 0 && !backends[f[0]] {
			backends[f[0]] = true
			res.Backends = append(res.Backends, f[0])
		}
	}
	held, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return fmt.Errorf("the held connection: %w", err)
	}
	defer held.Close()
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := bufio.NewReader(held)
		for time.Now().Before(end) {
			ans, err := roundTrip(held, r, "held", 5*time.Second)
			if err != nil {
				mu.Lock()
				res.HeldError = err.Error()
				mu.Unlock()
				return
			}
			seen(ans)
			mu.Lock()
			res.HeldRoundTrips++
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	for time.Now().Before(end) {
		err := func() error {
			c, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			ans, err := roundTrip(c, bufio.NewReader(c), "new", 3*time.Second)
			if err == nil {
				seen(ans)
			}
			return err
		}()
		mu.Lock()
		if err != nil {
			res.NewFailed++
			if len(res.NewErrors) < 10 {
				res.NewErrors = append(res.NewErrors, time.Now().Format("15:04:05.000")+" "+err.Error())
			}
		} else {
			res.NewOK++
		}
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(res)
}

// kubeAPI does what an in-cluster client does: the service account's token
// and CA from the projected volume, the API server at
// $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (the "kubernetes"
// Service's ClusterIP), and asks it who the token belongs to.
func kubeAPI() error {
	const sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
	token, err := os.ReadFile(sa + "token")
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(sa + "ca.crt")
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("no certificate in %sca.crt", sa)
	}
	host := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	body := `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`
	req, err := http.NewRequest(http.MethodPost, "https://"+host+"/apis/authentication.k8s.io/v1/selfsubjectreviews", bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s from %s: %s", resp.Status, host, b)
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string `json:"username"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b, &review); err != nil {
		return err
	}
	fmt.Printf("%s via %s\n", review.Status.UserInfo.Username, host)
	return nil
}
