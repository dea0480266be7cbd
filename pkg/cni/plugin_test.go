package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/api/cniapi"
)

// The test binary plays the plugin when this is set: the tests below run
// it as a runtime would, with the CNI protocol (environment, stdin,
// stdout, exit status), through containernetworking/cni's skel.
const asPluginEnv = "SLUICE_CNI_TEST_AS_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(asPluginEnv) == "1" {
		Main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeAgent serves the agent's CNI endpoints on a unix socket in a state
// directory, answering with reply and recording requests.
type fakeAgent struct {
	stateDir string
	mu       sync.Mutex
	got      map[string][]cniapi.Request
	reply    func(path string, req cniapi.Request) (int, string)
}

func newFakeAgent(t *testing.T, reply func(path string, req cniapi.Request) (int, string)) *fakeAgent {
	// Short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "slcni")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &fakeAgent{stateDir: dir, got: map[string][]cniapi.Request{}, reply: reply}
	ln, err := net.Listen("unix", filepath.Join(dir, socketName))
	require.NoError(t, err)
	mux := http.NewServeMux()
	for _, p := range []string{cniapi.PathAdd, cniapi.PathDel, cniapi.PathCheck} {
		mux.HandleFunc("POST "+p, func(w http.ResponseWriter, r *http.Request) {
			var req cniapi.Request
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			a.mu.Lock()
			a.got[p] = append(a.got[p], req)
			a.mu.Unlock()
			code, body := a.reply(p, req)
			if code != http.StatusOK {
				http.Error(w, body, code)
				return
			}
			_, _ = w.Write([]byte(body))
		})
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
}

func (a *fakeAgent) requests(path string) []cniapi.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]cniapi.Request(nil), a.got[path]...)
}

func okAgent(path string, req cniapi.Request) (int, string) {
	return http.StatusOK, `{"endpoint":"` + req.Namespace + `/` + req.Pod + ` id 1, ready"}`
}

// ptpResult is what a ptp-like main plugin returns: the host veth, the
// pod's eth0 in its netns, and the pod's address on eth0.
const ptpResult = `{"cniVersion":"1.0.0",
 "interfaces":[{"name":"lxc1234","mac":"aa:bb:cc:dd:ee:01"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:02","sandbox":"/var/run/netns/pod1"}],
 "ips":[{"address":"10.244.0.5/32","interface":1,"gateway":"169.254.1.1"}],
 "routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],
 "dns":{}}`

func netconf(t *testing.T, version, stateDir, extra string, withPrev bool) []byte {
	t.Helper()
	s := `{"cniVersion":"` + version + `","name":"k8s-pod-network","type":"sluice-cni","stateDir":"` + stateDir + `"` + extra
	if withPrev {
		prev := strings.Replace(ptpResult, `"1.0.0"`, `"`+version+`"`, 1)
		s += `,"prevResult":` + prev
	}
	return []byte(s + "}")
}

type run struct {
	stdout, stderr string
	exitCode       int
}

// runPlugin executes the plugin with the CNI protocol.
func runPlugin(t *testing.T, command string, stdin []byte, cniArgs string) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), asPluginEnv+"=1",
		"CNI_COMMAND="+command, "CNI_CONTAINERID=c0ffee", "CNI_NETNS=/var/run/netns/pod1", "CNI_IFNAME=eth0",
		"CNI_PATH=/opt/cni/bin", "CNI_ARGS="+cniArgs,
		// The netns is not a real one here: skip skel's check that it
		// is not the plugin's own (the end-to-end test has real ones).
		"CNI_NETNS_OVERRIDE=1")
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return run{stdout: out.String(), stderr: errb.String(), exitCode: code}
}

// cniError decodes the CNI error a failed command prints on stdout.
func cniError(t *testing.T, r run) (code int, msg string) {
	t.Helper()
	require.NotZero(t, r.exitCode, "the command must fail; stdout %s", r.stdout)
	var e struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &e), "stdout is a CNI error: %q (stderr %q)", r.stdout, r.stderr)
	return e.Code, e.Msg
}

const testArgs = "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=front-1;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=uid-7"

func TestAddAsksAgentThenPassesPrevResultOn(t *testing.T) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			a := newFakeAgent(t, okAgent)
			r := runPlugin(t, "ADD", netconf(t, v, a.stateDir, `,"timeout":"7s"`, true), testArgs)
			require.Zero(t, r.exitCode, "stdout %s stderr %s", r.stdout, r.stderr)

			reqs := a.requests(cniapi.PathAdd)
			require.Len(t, reqs, 1)
			assert.Equal(t, cniapi.Request{
				ContainerID: "c0ffee", Netns: "/var/run/netns/pod1", IfName: "eth0",
				Namespace: "web", Pod: "front-1", PodUID: "uid-7",
				IPs: []string{"10.244.0.5"}, HostInterfaces: []string{"lxc1234"}, Timeout: 7 * time.Second,
			}, reqs[0])

			// The result is the main plugin's, in the configuration's version.
			var got, want map[string]any
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
			require.NoError(t, json.Unmarshal([]byte(strings.Replace(ptpResult, `"1.0.0"`, `"`+v+`"`, 1)), &want))
			assert.Equal(t, v, got["cniVersion"])
			assert.Equal(t, want["interfaces"], got["interfaces"])
			assert.Equal(t, want["routes"], got["routes"])
			ips := got["ips"].([]any)
			require.Len(t, ips, 1)
			assert.Equal(t, "10.244.0.5/32", ips[0].(map[string]any)["address"])
		})
	}
}

func TestAddFailsWhenAgentIsDown(t *testing.T) {
	dir := t.TempDir() // no socket: no agent
	r := runPlugin(t, "ADD", netconf(t, "1.0.0", dir, "", true), testArgs)
	code, msg := cniError(t, r)
	assert.Equal(t, 11, code, "try again later: the kubelet retries")
	assert.Contains(t, msg, "sluice agent is not running")
	assert.Contains(t, msg, filepath.Join(dir, "sluice.sock"))
}

func TestAddFailsWhenAgentDoesNotAnswerInTime(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	a := newFakeAgent(t, func(string, cniapi.Request) (int, string) {
		<-release
		return http.StatusOK, "{}"
	})
	start := time.Now()
	r := runPlugin(t, "ADD", netconf(t, "1.0.0", a.stateDir, `,"timeout":"300ms"`, true), testArgs)
	code, msg := cniError(t, r)
	assert.Equal(t, 11, code)
	assert.Contains(t, msg, "did not answer within 300ms")
	assert.Contains(t, msg, a.stateDir)
	assert.Less(t, time.Since(start), 10*time.Second)
}

func TestAddFailsWithAgentsReason(t *testing.T) {
	a := newFakeAgent(t, func(string, cniapi.Request) (int, string) {
		return http.StatusGatewayTimeout, "endpoint of pod web/front-1 ([10.244.0.5]) is waiting-for-interface, not ready"
	})
	code, msg := cniError(t, runPlugin(t, "ADD", netconf(t, "1.0.0", a.stateDir, "", true), testArgs))
	assert.Equal(t, 11, code)
	assert.Contains(t, msg, "waiting-for-interface")
	assert.Contains(t, msg, "web/front-1")
}

func TestAddRefusesBadConfiguration(t *testing.T) {
	a := newFakeAgent(t, okAgent)
	for name, tc := range map[string]struct {
		conf []byte
		code int
		msg  string
	}{
		"no prevResult":    {netconf(t, "1.0.0", a.stateDir, "", false), 7, "chained plugin"},
		"bad timeout":      {netconf(t, "1.0.0", a.stateDir, `,"timeout":"soon"`, true), 7, `"timeout" "soon"`},
		"relative dir":     {netconf(t, "1.0.0", "run/sluice", "", true), 7, `"stateDir" "run/sluice"`},
		"not JSON":         {[]byte(`{"cniVersion":`), 0, ""},
		"too old for CNI0": {netconf(t, "0.2.0", a.stateDir, "", true), 1, "incompatible"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runPlugin(t, "ADD", tc.conf, testArgs)
			require.NotZero(t, r.exitCode)
			if tc.msg != "" {
				code, msg := cniError(t, r)
				assert.Equal(t, tc.code, code)
				assert.Contains(t, strings.ToLower(msg), strings.ToLower(tc.msg))
			}
		})
	}
	assert.Empty(t, a.requests(cniapi.PathAdd), "nothing reaches the agent")
}

func TestAddPassesNonKubernetesSandboxesThrough(t *testing.T) {
	a := newFakeAgent(t, okAgent)
	r := runPlugin(t, "ADD", netconf(t, "1.0.0", a.stateDir, "", true), "IgnoreUnknown=1")
	require.Zero(t, r.exitCode, r.stdout)
	assert.Contains(t, r.stdout, "10.244.0.5/32")
	assert.Contains(t, r.stderr, "no Kubernetes pod")
	assert.Empty(t, a.requests(cniapi.PathAdd))
}

func TestDel(t *testing.T) {
	t.Run("tells the agent", func(t *testing.T) {
		a := newFakeAgent(t, okAgent)
		r := runPlugin(t, "DEL", netconf(t, "1.0.0", a.stateDir, "", false), testArgs)
		require.Zero(t, r.exitCode, r.stdout)
		assert.Empty(t, r.stdout)
		reqs := a.requests(cniapi.PathDel)
		require.Len(t, reqs, 1)
		assert.Equal(t, "c0ffee", reqs[0].ContainerID)
		assert.Equal(t, "front-1", reqs[0].Pod)
	})
	t.Run("succeeds with the agent down", func(t *testing.T) {
		r := runPlugin(t, "DEL", netconf(t, "1.0.0", t.TempDir(), "", false), testArgs)
		require.Zero(t, r.exitCode, r.stdout)
		assert.Contains(t, r.stderr, "sluice agent is not running")
	})
}

func TestCheck(t *testing.T) {
	ready := true
	a := newFakeAgent(t, func(path string, req cniapi.Request) (int, string) {
		if !ready {
			return http.StatusServiceUnavailable, "endpoint of pod web/front-1 is waiting-for-interface, not ready"
		}
		return okAgent(path, req)
	})
	r := runPlugin(t, "CHECK", netconf(t, "1.0.0", a.stateDir, "", true), testArgs)
	require.Zero(t, r.exitCode, r.stdout)
	require.Len(t, a.requests(cniapi.PathCheck), 1)
	assert.Equal(t, []string{"10.244.0.5"}, a.requests(cniapi.PathCheck)[0].IPs)

	ready = false
	code, msg := cniError(t, runPlugin(t, "CHECK", netconf(t, "1.0.0", a.stateDir, "", true), testArgs))
	assert.Equal(t, 11, code)
	assert.Contains(t, msg, "not ready")

	code, msg = cniError(t, runPlugin(t, "CHECK", netconf(t, "1.0.0", t.TempDir(), "", true), testArgs))
	assert.Equal(t, 11, code)
	assert.Contains(t, msg, "not running")
}
