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

	"github.com/sluice-net/sluice/internal/testing/harness"
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

	// Netns, when set, is the path of a network namespace (a node's) that
	// etcd and kube-apiserver run in (entered with nsenter, as the harness
	// runs agents) and that the control plane's own requests are dialled
	// from. Nothing else listens there, so the ports are the usual ones:
	// etcd on 127.0.0.1:2379 and :2380, kube-apiserver on Address:6443.
	Netns string
	// Cgroup, when set, is the cgroup v2 directory the processes start in.
	Cgroup string
	// Address is the API server's bind and advertise address (default
	// 127.0.0.1). kube-apiserver refuses to publish a loopback address as
	// the "kubernetes" Service's endpoint, so ForNodes needs another one.
	Address string
	// ForNodes configures the control plane for real nodes, as a cluster
	// installer does: kubelets authenticate with node certificates (the
	// Node authorizer and NodeRestriction), the ServiceAccount admission
	// plugin is on (a controller manager creates the accounts), the
	// "kubernetes" Service's endpoint is published, and privileged
	// containers are allowed (the DaemonSet's mount-bpffs). Without it
	// the control plane is the bare API server the integration tests need.
	ForNodes bool
}

// SecurePort is kube-apiserver's port when the control plane runs in a
// network namespace of its own (Options.Netns).
const SecurePort = 6443

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
	etcd *Process

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
	proc *Process
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
	// Clients reach the API server at its address and, in pods, at the
	// "kubernetes" Service's ClusterIP (the range's first address).
	sans := []net.IP{net.ParseIP(cp.address()), net.IPv4(10, 96, 0, 1)}
	if cp.pki, err = newPKI(filepath.Join(opts.Dir, "pki"), sans); err != nil {
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
	ports := []int{2379, 2380}
	if cp.opts.Netns == "" {
		var err error
		if ports, err = freePorts(2); err != nil {
			return err
		}
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
	var err error
	cp.etcd, err = cp.startProcess(cp.opts.Binaries.Etcd, args, filepath.Join(cp.Dir, "etcd.log"))
	if err != nil {
		return err
	}
	cp.opts.Logf("etcd: pid %d, %s, log %s", cp.etcd.Pid(), client, cp.etcd.logPath)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: cp.dial}}
	return cp.etcd.waitHTTP(ctx, client+"/health", hc, func(body string) bool {
		return strings.Contains(body, `"health":"true"`)
	})
}

// AddAPIServer starts one more kube-apiserver on the same etcd, with the
// same certificates and service-account keys, so that clients and tokens
// work with any of them, as behind a cluster's load balancer.
func (cp *ControlPlane) AddAPIServer(ctx context.Context) (*APIServer, error) {
	ports := []int{SecurePort}
	cp.mu.Lock()
	n := len(cp.apiservers) + 1
	cp.mu.Unlock()
	if cp.opts.Netns == "" || n > 1 {
		var err error
		if ports, err = freePorts(1); err != nil {
			return nil, err
		}
	}
	cp.mu.Lock()
	a := &APIServer{cp: cp, n: n, port: ports[0]}
	cp.apiservers = append(cp.apiservers, a)
	cp.mu.Unlock()
	a.URL = "https://" + net.JoinHostPort(cp.address(), strconv.Itoa(a.port))
	a.AdminKubeconfig = filepath.Join(cp.Dir, fmt.Sprintf("admin-%d.kubeconfig", a.n))
	if err := cp.writeKubeconfig(a.AdminKubeconfig, a.URL, AdminUser,
		fmt.Sprintf("client-certificate: %s\n    client-key: %s", cp.pki.AdminCert, cp.pki.AdminKey)); err != nil {
		return nil, err
	}
	return a, a.Start(ctx)
}

// WriteCertKubeconfig writes a kubeconfig for a's URL that authenticates
// with a client certificate the control plane's CA issues for user in
// groups (a kubelet's: system:node:NAME in system:nodes).
func (a *APIServer) WriteCertKubeconfig(path, user string, groups ...string) error {
	certFile, keyFile, err := a.cp.pki.issueClient(user, groups)
	if err != nil {
		return err
	}
	return a.cp.writeKubeconfig(path, a.URL, user, fmt.Sprintf("client-certificate: %s\n    client-key: %s", certFile, keyFile))
}

// ServiceAccountKeyFile is the private key that signs service-account
// tokens (kube-controller-manager's --service-account-private-key-file).
func (cp *ControlPlane) ServiceAccountKeyFile() string { return cp.pki.SAPrivateKeyFile }

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
		"--bind-address=" + a.cp.address(),
		"--advertise-address=" + a.cp.address(),
		"--secure-port=" + strconv.Itoa(a.port),
		"--tls-cert-file=" + p.ServingCert,
		"--tls-private-key-file=" + p.ServingKey,
		"--client-ca-file=" + p.CAFile,
		"--service-account-issuer=" + Issuer,
		"--service-account-key-file=" + p.SAPublicKeyFile,
		"--service-account-signing-key-file=" + p.SAPrivateKeyFile,
		"--service-cluster-ip-range=" + ServiceCIDR,
		// Room for the measurements' concurrent writers.
		"--max-requests-inflight=800",
		"--max-mutating-requests-inflight=400",
		"--profiling=false",
		// On SIGTERM, end the open watches (clients resume elsewhere)
		// instead of leaving them to the HTTP server's shutdown, which
		// waits the request timeout (60s) for them.
		"--shutdown-watch-termination-grace-period=2s",
	}
	if a.cp.opts.ForNodes {
		args = append(args,
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			// The API server's requests to kubelets (exec, logs, the pod
			// proxy): the kubelets' webhook authorizes this identity.
			"--kubelet-client-certificate="+p.AdminCert,
			"--kubelet-client-key="+p.AdminKey,
			"--kubelet-preferred-address-types=InternalIP",
			"--allow-privileged=true",
		)
	} else {
		args = append(args,
			"--authorization-mode=RBAC",
			// The endpoint reconciler publishes the advertise address as
			// the "kubernetes" service's endpoint and refuses a loopback
			// one; the service itself is still created.
			"--endpoint-reconciler-type=none",
			// No controller manager runs, so no namespace gets its
			// "default" service account, which this admission plugin
			// requires of every pod.
			"--disable-admission-plugins=ServiceAccount",
		)
	}
	return append(args, a.cp.opts.APIServerArgs...)
}

// Start starts the API server (again, on the same port) and waits for its
// /readyz.
func (a *APIServer) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc != nil && !a.proc.Exited() {
		return fmt.Errorf("kube-apiserver %d is running already", a.n)
	}
	logPath := filepath.Join(a.cp.Dir, fmt.Sprintf("kube-apiserver-%d.log", a.n))
	proc, err := a.cp.startProcess(a.cp.opts.Binaries.APIServer, a.args(), logPath)
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
	a.cp.opts.Logf("kube-apiserver %d: pid %d, %s, ready after %s, log %s", a.n, proc.Pid(), a.URL,
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
	err := a.proc.Stop()
	a.cp.opts.Logf("kube-apiserver %d stopped", a.n)
	return err
}

// Pid is the running API server's process id (0 if none).
func (a *APIServer) Pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil || a.proc.Exited() {
		return 0
	}
	return a.proc.Pid()
}

// LogTail is the end of the API server's log, for failure messages.
func (a *APIServer) LogTail(lines int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return ""
	}
	return a.proc.Tail(lines)
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
		errs = append(errs, cp.etcd.Stop())
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
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
			DialContext:     cp.dial,
		},
	}, nil
}

// address is the API server's address, Options.Address or loopback.
func (cp *ControlPlane) address() string {
	if cp.opts.Address != "" {
		return cp.opts.Address
	}
	return "127.0.0.1"
}

// dial connects from the control plane's network namespace
// (Options.Netns), or from the caller's.
func (cp *ControlPlane) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if cp.opts.Netns == "" {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return DialInNetns(ctx, cp.opts.Netns, network, addr)
}

// DialInNetns connects to addr from the network namespace at path: the
// socket is created on a thread that has entered it, and keeps that
// namespace for its life. It is an http.Transport's or client-go's Dial
// for servers that are reachable only inside a namespace.
func DialInNetns(ctx context.Context, path, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := harness.InNetns(path, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// startProcess starts bin in the control plane's network namespace and
// cgroup, when it has them.
func (cp *ControlPlane) startProcess(bin string, args []string, logPath string) (*Process, error) {
	return StartProcess(bin, args, logPath, cp.opts.Netns, cp.opts.Cgroup)
}

// StartProcess starts bin with args, its output appended to logPath, in
// the network namespace at netns (entered with nsenter, which execs bin:
// the process is bin itself) and the cgroup v2 directory cgroup when they
// are set. It is killed if the calling process dies first (Pdeathsig).
func StartProcess(bin string, args []string, logPath, netns, cgroup string) (*Process, error) {
	if netns != "" {
		args = append([]string{"--net=" + netns, "--", bin}, args...)
		bin = "nsenter"
	}
	return startProcess(bin, args, logPath, cgroup)
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

// Process is a child process whose output goes to a log file.
type Process struct {
	name, logPath string
	cmd           *exec.Cmd
	done          chan struct{}
	err           error
}

func startProcess(bin string, args []string, logPath, cgroup string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(append([]string{bin}, args...), " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if cgroup != "" {
		cg, err := os.Open(cgroup)
		if err != nil {
			return nil, fmt.Errorf("opening cgroup %s: %w", cgroup, err)
		}
		defer cg.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	name := filepath.Base(bin)
	if len(args) > 2 && bin == "nsenter" {
		name = filepath.Base(args[2])
	}
	p := &Process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *Process) Pid() int { return p.cmd.Process.Pid }

func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *Process) Stop() error {
	if p.Exited() {
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
	return fmt.Errorf("%s (pid %d) did not exit within %s of SIGTERM; killed", p.name, p.Pid(), stopTimeout)
}

// WaitHTTP polls url with client until it answers 200 with a body that ok
// accepts, the process exits or ctx (bounded to two minutes) ends.
func (p *Process) WaitHTTP(ctx context.Context, url string, client *http.Client, ok func(body string) bool) error {
	return p.waitHTTP(ctx, url, client, ok)
}

// Log is the path of the process's log.
func (p *Process) Log() string { return p.logPath }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// waitHTTP polls url until ok accepts the answer's body, the process exits
// or the time is up.
func (p *Process) waitHTTP(ctx context.Context, url string, client *http.Client, ok func(body string) bool) error {
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
			return fmt.Errorf("%s exited (%v) before %s answered; log tail:\n%s", p.name, p.err, url, p.Tail(30))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s (last answer %s): %w; log tail:\n%s", p.name, url, last, ctx.Err(), p.Tail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *Process) Tail(lines int) string {
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
