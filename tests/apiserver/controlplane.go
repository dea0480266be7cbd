package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// ServiceCIDR is the cluster's service range (--service-cluster-ip-range):
	// every ClusterIP a test assigns must be in it. The API server takes
	// 10.96.0.1 for its own "kubernetes" service.
	ServiceCIDR = "10.96.0.0/16"
	// Issuer is the service-account token issuer.
	Issuer = "https://kubernetes.default.svc.cluster.local"

	readyTimeout = 2 * time.Minute // 2 busy cores: kube-apiserver takes 5-20s
	stopTimeout  = 30 * time.Second
)

// Options configure Start.
type Options struct {
	Binaries Binaries
	// Dir holds certificates, etcd's data, kubeconfigs and logs; it
	// should be empty and is left in place (a test's TempDir).
	Dir string
	// Logf, if set, is told about the processes started and stopped.
	Logf func(format string, args ...any)
	// APIServerArgs are added to kube-apiserver's flags (later ones win).
	APIServerArgs []string
}

// ControlPlane is etcd and one or more kube-apiservers sharing it, on
// loopback. Everything it starts dies with the test process
// (Pdeathsig) if Stop is not reached.
type ControlPlane struct {
	// Dir is Options.Dir.
	Dir string
	// EtcdURL is etcd's client URL.
	EtcdURL string
	// CAFile is the CA of the serving and client certificates.
	CAFile string
	// APIServer is the first kube-apiserver.
	APIServer *APIServer

	opts Options
	pki  *pki
	etcd *process

	mu         sync.Mutex
	apiservers []*APIServer
}

// APIServer is one kube-apiserver process of the control plane; it keeps
// its port across Stop and Start.
type APIServer struct {
	// URL is https://127.0.0.1:<port>.
	URL string
	// AdminKubeconfig is a kubeconfig for URL as AdminUser (system:masters).
	AdminKubeconfig string

	cp   *ControlPlane
	n    int // 1 for the first one
	port int

	mu   sync.Mutex
	proc *process
}

// Start starts etcd and a kube-apiserver and waits until the API server's
// /readyz answers ok. On error, what was started is stopped.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	if opts.Dir == "" {
		return nil, errors.New("apiserver: Options.Dir is required")
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	cp := &ControlPlane{Dir: opts.Dir, opts: opts}
	defer func() {
		if err != nil {
			_ = cp.Stop()
		}
	}()
	if cp.pki, err = newPKI(filepath.Join(opts.Dir, "pki")); err != nil {
		return nil, fmt.Errorf("generating certificates: %w", err)
	}
	cp.CAFile = cp.pki.CAFile
	if err := cp.startEtcd(ctx); err != nil {
		return nil, err
	}
	if cp.APIServer, err = cp.AddAPIServer(ctx); err != nil {
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) startEtcd(ctx context.Context) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	cp.EtcdURL = client
	args := []string{
		"--name=default",
		"--data-dir=" + filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=default=" + peer,
		// A test's data need not survive a power cut; fsync would make
		// every write wait for the disk.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
	cp.etcd, err = startProcess(cp.opts.Binaries.Etcd, args, filepath.Join(cp.Dir, "etcd.log"))
	if err != nil {
		return err
	}
	cp.opts.Logf("etcd: pid %d, %s, log %s", cp.etcd.pid(), client, cp.etcd.logPath)
	return cp.etcd.waitHTTP(ctx, client+"/health", http.DefaultClient, func(body string) bool {
		return strings.Contains(body, `"health":"true"`)
	})
}

// AddAPIServer starts one more kube-apiserver on the same etcd, with the
// same certificates and service-account keys, so that clients and tokens
// work with any of them, as behind a cluster's load balancer.
func (cp *ControlPlane) AddAPIServer(ctx context.Context) (*APIServer, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	cp.mu.Lock()
	a := &APIServer{cp: cp, n: len(cp.apiservers) + 1, port: ports[0]}
	cp.apiservers = append(cp.apiservers, a)
	cp.mu.Unlock()
	a.URL = fmt.Sprintf("https://127.0.0.1:%d", a.port)
	a.AdminKubeconfig = filepath.Join(cp.Dir, fmt.Sprintf("admin-%d.kubeconfig", a.n))
	if err := cp.writeKubeconfig(a.AdminKubeconfig, a.URL, AdminUser,
		fmt.Sprintf("client-certificate: %s\n    client-key: %s", cp.pki.AdminCert, cp.pki.AdminKey)); err != nil {
		return nil, err
	}
	return a, a.Start(ctx)
}

// WriteTokenKubeconfig writes a kubeconfig for a's URL that authenticates
// with a bearer token (a service account's), as the DaemonSet's pods do.
func (a *APIServer) WriteTokenKubeconfig(path, user, token string) error {
	return a.cp.writeKubeconfig(path, a.URL, user, "token: "+token)
}

func (cp *ControlPlane) writeKubeconfig(path, server, user, credentials string) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    %s
contexts:
- name: test
  context:
    cluster: test
    user: %s
current-context: test
`, server, cp.pki.CAFile, user, credentials, user)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

func (a *APIServer) args() []string {
	p := a.cp.pki
	args := []string{
		"--etcd-servers=" + a.cp.EtcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(a.port),
		"--tls-cert-file=" + p.ServingCert,
		"--tls-private-key-file=" + p.ServingKey,
		"--client-ca-file=" + p.CAFile,
		"--service-account-issuer=" + Issuer,
		"--service-account-key-file=" + p.SAPublicKeyFile,
		"--service-account-signing-key-file=" + p.SAPrivateKeyFile,
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--authorization-mode=RBAC",
		// The endpoint reconciler publishes the advertise address as the
		// "kubernetes" service's endpoint and refuses a loopback one; the
		// service itself is still created.
		"--endpoint-reconciler-type=none",
		// No controller manager runs, so no namespace gets its "default"
		// service account, which this admission plugin requires of every
		// pod.
		"--disable-admission-plugins=ServiceAccount",
		// Room for the measurements' concurrent writers.
		"--max-requests-inflight=800",
		"--max-mutating-requests-inflight=400",
		"--profiling=false",
		// On SIGTERM, end the open watches (clients resume elsewhere)
		// instead of leaving them to the HTTP server's shutdown, which
		// waits the request timeout (60s) for them.
		"--shutdown-watch-termination-grace-period=2s",
	}
	return append(args, a.cp.opts.APIServerArgs...)
}

// Start starts the API server (again, on the same port) and waits for its
// /readyz.
func (a *APIServer) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc != nil && !a.proc.exited() {
		return fmt.Errorf("kube-apiserver %d is running already", a.n)
	}
	logPath := filepath.Join(a.cp.Dir, fmt.Sprintf("kube-apiserver-%d.log", a.n))
	proc, err := startProcess(a.cp.opts.Binaries.APIServer, a.args(), logPath)
	if err != nil {
		return err
	}
	a.proc = proc
	start := time.Now()
	client, err := a.cp.adminHTTPClient()
	if err != nil {
		return err
	}
	if err := proc.waitHTTP(ctx, a.URL+"/readyz", client, func(body string) bool { return body == "ok" }); err != nil {
		return err
	}
	a.cp.opts.Logf("kube-apiserver %d: pid %d, %s, ready after %s, log %s", a.n, proc.pid(), a.URL,
		time.Since(start).Round(time.Millisecond), logPath)
	return nil
}

// Stop stops the API server gracefully (SIGTERM: it closes its watches and
// finishes its requests); etcd keeps the data.
func (a *APIServer) Stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return nil
	}
	err := a.proc.stop()
	a.cp.opts.Logf("kube-apiserver %d stopped", a.n)
	return err
}

// Pid is the running API server's process id (0 if none).
func (a *APIServer) Pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil || a.proc.exited() {
		return 0
	}
	return a.proc.pid()
}

// LogTail is the end of the API server's log, for failure messages.
func (a *APIServer) LogTail(lines int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return ""
	}
	return a.proc.tail(lines)
}

// Stop stops every API server, then etcd.
func (cp *ControlPlane) Stop() error {
	var errs []error
	cp.mu.Lock()
	as := cp.apiservers
	cp.mu.Unlock()
	for _, a := range as {
		errs = append(errs, a.Stop())
	}
	if cp.etcd != nil {
		errs = append(errs, cp.etcd.stop())
	}
	return errors.Join(errs...)
}

func (cp *ControlPlane) adminHTTPClient() (*http.Client, error) {
	caPEM, err := os.ReadFile(cp.pki.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(cp.pki.AdminCert, cp.pki.AdminKey)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}, nil
}

// freePorts returns n loopback TCP ports that were free a moment ago. The
// binaries want port numbers, not listeners, so another process could take
// one in between; on this machine's loopback that does not happen in
// practice, and a clash fails the start with the log saying so.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// process is a child process whose output goes to a log file.
type process struct {
	name, logPath string
	cmd           *exec.Cmd
	done          chan struct{}
	err           error
}

func startProcess(bin string, args []string, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(append([]string{bin}, args...), " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &process{name: filepath.Base(bin), logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s (pid %d) did not exit within %s of SIGTERM; killed", p.name, p.pid(), stopTimeout)
}

// waitHTTP polls url until ok accepts the answer's body, the process exits
// or the time is up.
func (p *process) waitHTTP(ctx context.Context, url string, client *http.Client, ok func(body string) bool) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && ok(strings.TrimSpace(string(b))) {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, b)
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v) before %s answered; log tail:\n%s", p.name, p.err, url, p.tail(30))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s (last answer %s): %w; log tail:\n%s", p.name, url, last, ctx.Err(), p.tail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *process) tail(lines int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
