package daemonset

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/agent"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/source/k8s"
	"github.com/sluice-net/sluice/pkg/xds"
)

// object is one decoded document of a manifest.
type object struct {
	file string
	doc  int // 1-based, within file
	obj  runtime.Object
}

func (o object) String() string { return fmt.Sprintf("%s: document %d", o.file, o.doc) }

// strictDecoder decodes YAML into the API types client-go knows, failing on
// unknown and duplicate fields, as `kubectl apply --validate=strict` does.
var strictDecoder = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

func decodeStrict(doc []byte) (runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err == nil && tm.APIVersion == "apiextensions.k8s.io/v1" {
		// CustomResourceDefinitions are not in client-go's scheme (their
		// types would bring the API server's modules into go.mod): kept
		// unstructured, and held to the Go types they describe by
		// TestCRDSchemaIsTheGoTypes; tests/apiserver installs them on a
		// real API server.
		u := &unstructured.Unstructured{}
		if err := yaml.UnmarshalStrict(doc, &u.Object); err != nil {
			return nil, err
		}
		return u, nil
	}
	// A strict decoding error comes with a decoded object: the caller
	// must refuse it all the same.
	obj, _, err := strictDecoder.Decode(doc, nil, nil)
	return obj, err
}

// manifestFiles are the YAML files kustomize applies: every one here but
// the kustomization itself.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	require.NoError(t, err)
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	require.NotEmpty(t, files)
	return files
}

// splitDocuments returns the YAML documents of data, without the empty
// ones (a file may start with a comment block and "---").
func splitDocuments(t *testing.T, data []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		require.NoError(t, err)
		var v any
		require.NoError(t, yaml.Unmarshal(doc, &v))
		if v != nil {
			docs = append(docs, doc)
		}
	}
}

// loadManifests decodes every manifest strictly.
func loadManifests(t *testing.T) []object {
	t.Helper()
	var out []object
	for _, f := range manifestFiles(t) {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for i, doc := range splitDocuments(t, data) {
			obj, err := decodeStrict(doc)
			require.NoError(t, err, "%s: document %d", f, i+1)
			out = append(out, object{file: f, doc: i + 1, obj: obj})
		}
	}
	return out
}

// only returns the one object of type T in objs.
func only[T runtime.Object](t *testing.T, objs []object) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			found = append(found, v)
		}
	}
	var zero T
	require.Len(t, found, 1, "objects of type %T", zero)
	return found[0]
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	require.Failf(t, "no container", "the DaemonSet has no container %q", name)
	return nil
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := loadManifests(t)
	kinds := map[string]int{}
	// Every namespaced object lives in the namespace the install creates.
	ns := only[*corev1.Namespace](t, objs).Name
	for _, o := range objs {
		kinds[fmt.Sprintf("%T", o.obj)]++
		if m, ok := o.obj.(interface{ GetNamespace() string }); ok {
			switch o.obj.(type) {
			case *corev1.Namespace, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *unstructured.Unstructured:
				assert.Empty(t, m.GetNamespace(), "%s is cluster-scoped", o)
			default:
				assert.Equal(t, ns, m.GetNamespace(), "%s", o)
			}
		}
	}
	assert.Equal(t, map[string]int{
		"*v1.Namespace": 1, "*v1.ServiceAccount": 1, "*v1.ClusterRole": 1, "*v1.ClusterRoleBinding": 1,
		"*v1.Role": 1, "*v1.RoleBinding": 1, "*v1.ConfigMap": 2, "*v1.DaemonSet": 1,
		"*unstructured.Unstructured": 2, // the SluiceL7Policy and ClusterNetworkPolicy CRDs
	}, kinds)

	// The decoder does refuse what the API server would prune or reject.
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\nautomountServiceAcountToken: true\n",
		"duplicate field": "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  name: y\n",
		"unknown kind":    "apiVersion: v1\nkind: ServiceAcount\nmetadata:\n  name: x\n",
	} {
		_, err := decodeStrict([]byte(doc))
		assert.Error(t, err, name)
	}
}

// kustomization is the part of a Kustomization this install uses; decoding
// it strictly makes anything else (a patch, a generator) fail here until
// the test learns about it.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images"`
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	data, err := os.ReadFile("kustomization.yaml")
	require.NoError(t, err)
	var k kustomization
	require.NoError(t, yaml.UnmarshalStrict(data, &k))
	assert.Equal(t, "kustomize.config.k8s.io/v1beta1", k.APIVersion)
	assert.Equal(t, "Kustomization", k.Kind)
	assert.ElementsMatch(t, manifestFiles(t), k.Resources)

	// The image it sets is the agent's.
	ds := only[*appsv1.DaemonSet](t, loadManifests(t))
	agentImage := container(t, &ds.Spec.Template.Spec, "agent").Image
	require.Len(t, k.Images, 1)
	assert.Equal(t, k.Images[0].Name, strings.Split(agentImage, ":")[0])
	assert.NotEmpty(t, k.Images[0].NewTag)
}

// TestImagesArePinned: every image names a tag, and not one that moves.
func TestImagesArePinned(t *testing.T) {
	ds := only[*appsv1.DaemonSet](t, loadManifests(t))
	spec := ds.Spec.Template.Spec
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		i := strings.LastIndex(c.Image, ":")
		require.Greater(t, i, strings.LastIndex(c.Image, "/"), "container %s: image %s has no tag", c.Name, c.Image)
		assert.NotEqual(t, "latest", c.Image[i+1:], "container %s", c.Name)
		assert.Equal(t, corev1.PullIfNotPresent, c.ImagePullPolicy, "container %s", c.Name)
	}
}

// apiCall is one kind of request to the API server, as RBAC names it:
// in one namespace, or cluster-wide (namespace "").
type apiCall struct{ group, resource, verb, namespace string }

func (c apiCall) String() string {
	s := fmt.Sprintf("%s %s.%s", c.verb, c.resource, c.group)
	if c.namespace != "" {
		s += " in namespace " + c.namespace
	}
	return s
}

// agentAPICalls runs the agent's Kubernetes source, as the DaemonSet
// configures it (Secrets of its own namespace: --jwks-secret-namespace
// defaults to $POD_NAMESPACE, see TestCNIInstallAndUninstallAgree),
// against a fake API server until it has synced, and returns every kind of
// request it made.
func agentAPICalls(t *testing.T, objs []object) map[apiCall]bool {
	t.Helper()
	ds := only[*appsv1.DaemonSet](t, objs)
	client := fake.NewClientset()
	dyn := k8stest.NewDynamic()
	src, err := k8s.New(k8s.Options{Client: k8stest.Clientset(client).WithDynamic(dyn), NodeName: "node-1", Resync: -1,
		SecretNamespace: ds.Namespace})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, src.Start(ctx, model.NewStore()))
	cancel()
	<-src.Done()

	calls := map[apiCall]bool{}
	for _, a := range append(client.Actions(), dyn.Actions()...) {
		gvr := a.GetResource()
		calls[apiCall{gvr.Group, gvr.Resource, a.GetVerb(), a.GetNamespace()}] = true
	}
	return calls
}

// TestClusterRoleGrantsExactlyWhatTheAgentCalls derives the agent's
// requests from its informers rather than from a list kept by hand: a new
// informer without its rule, or a rule for something no longer watched,
// fails here.
func TestClusterRoleGrantsExactlyWhatTheAgentCalls(t *testing.T) {
	objs := loadManifests(t)
	role := only[*rbacv1.ClusterRole](t, objs)
	granted := map[apiCall]bool{}
	for _, r := range role.Rules {
		assert.Empty(t, r.NonResourceURLs, "non-resource URLs")
		assert.Empty(t, r.ResourceNames, "rules limited to names")
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					require.NotContains(t, []string{g, res, v}, "*", "wildcards in %v", r)
					granted[apiCall{g, res, v, ""}] = true
				}
			}
		}
	}

	calls := agentAPICalls(t, objs)
	for c := range calls {
		if c.namespace != "" {
			delete(calls, c) // the Role's (cni_test.go)
		}
	}
	require.NotEmpty(t, calls)
	for c := range calls {
		assert.True(t, granted[c], "the agent calls %s, which the ClusterRole does not grant", c)
	}
	for g := range granted {
		assert.True(t, calls[g], "the ClusterRole grants %s, which the agent never calls", g)
	}
	for c := range calls {
		assert.Contains(t, []string{"list", "watch"}, c.verb, "the agent only reads: %s", c)
	}

	// The binding gives the role to the DaemonSet's service account.
	binding := only[*rbacv1.ClusterRoleBinding](t, objs)
	sa := only[*corev1.ServiceAccount](t, objs)
	ds := only[*appsv1.DaemonSet](t, objs)
	assert.Equal(t, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}, binding.RoleRef)
	assert.Equal(t, []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}}, binding.Subjects)
	assert.Equal(t, sa.Name, ds.Spec.Template.Spec.ServiceAccountName)
}

// TestOnlySourceK8sTalksToTheAPIServer backs the test above: it runs only
// pkg/source/k8s's source, so no other package of the agent may hold a
// client (internal/testing/k8stest, which adapts client-go's fake
// clientset for tests, is outside cmd/ and pkg/).
func TestOnlySourceK8sTalksToTheAPIServer(t *testing.T) {
	fset := token.NewFileSet()
	var users []string
	for _, root := range []string{"../cmd", "../pkg"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, imp := range f.Imports {
				if v, _ := strconv.Unquote(imp.Path.Value); strings.HasPrefix(v, "k8s.io/client-go") {
					users = append(users, filepath.Dir(p))
				}
			}
			return nil
		})
		require.NoError(t, err)
	}
	require.NotEmpty(t, users)
	for _, dir := range users {
		assert.Equal(t, filepath.Join("..", "pkg", "source", "k8s"), dir, "only pkg/source/k8s may import client-go (see its doc.go)")
	}
}

// agentFlags is sluice-agent's flag set: agent.Options' flags plus --config,
// which cmd/sluice-agent defines itself.
func agentFlags() (*agent.Options, *pflag.FlagSet) {
	o := agent.Defaults()
	fs := pflag.NewFlagSet("sluice-agent", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.AddFlags(fs)
	fs.String("config", "", "YAML file of settings")
	return &o, fs
}

// configData returns the agent's config.yaml from its ConfigMap, as the
// DaemonSet mounts it, and the path it is mounted at.
func configData(t *testing.T, objs []object, agentC *corev1.Container, spec *corev1.PodSpec, file string) string {
	t.Helper()
	dir, vol := "", ""
	for _, m := range agentC.VolumeMounts {
		if strings.HasPrefix(file, m.MountPath+"/") {
			dir, vol = m.MountPath, m.Name
		}
	}
	require.NotEmpty(t, vol, "--config=%s is not in a volume the agent mounts", file)
	for _, v := range spec.Volumes {
		if v.Name != vol {
			continue
		}
		require.NotNil(t, v.ConfigMap, "volume %s of --config is not a ConfigMap", vol)
		for _, o := range objs {
			cm, ok := o.obj.(*corev1.ConfigMap)
			if !ok || cm.Name != v.ConfigMap.Name {
				continue
			}
			for _, it := range v.ConfigMap.Items {
				if path.Join(dir, it.Path) == file {
					data, ok := cm.Data[it.Key]
					require.True(t, ok, "ConfigMap %s has no key %s", cm.Name, it.Key)
					return data
				}
			}
		}
	}
	require.Failf(t, "no config", "--config=%s: no ConfigMap key mounted there", file)
	return ""
}

// agentSettings parses the agent container's arguments and its ConfigMap's
// config.yaml (returned too) with sluice-agent's own flag set and config
// file reader, in the environment the kubelet gives the pod.
func agentSettings(t *testing.T, objs []object) (*agent.Options, *pflag.FlagSet, string) {
	t.Helper()
	ds := only[*appsv1.DaemonSet](t, objs)
	spec := &ds.Spec.Template.Spec
	agentC := container(t, spec, "agent")
	opts, fs := agentFlags()
	require.NoError(t, fs.Parse(agentC.Args))
	require.Empty(t, fs.Args(), "arguments that are not flags")
	configFile, err := fs.GetString("config")
	require.NoError(t, err)
	require.NotEmpty(t, configFile, "the agent should read its ConfigMap")
	data := configData(t, objs, agentC, spec, configFile)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(data), 0o644))
	require.NoError(t, agent.ApplyConfigFile(fs, cfg))
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	return opts, fs, data
}

// disabledSetting is a line "#flag-name: value" of config.yaml: a setting
// left at the default it shows (prose comments have a space after the #).
var disabledSetting = regexp.MustCompile(`(?m)^#([a-z0-9][a-z0-9-]*:.*)$`)

// TestAgentSettingsAreItsFlags parses the agent container's arguments and
// its ConfigMap with sluice-agent's own flag set and config file reader,
// then checks the result: a mistyped or removed flag, a bad value, or a
// path the pod does not mount fails here instead of in a crash-looping pod.
func TestAgentSettingsAreItsFlags(t *testing.T) {
	objs := loadManifests(t)
	ds := only[*appsv1.DaemonSet](t, objs)
	spec := &ds.Spec.Template.Spec
	agentC := container(t, spec, "agent")
	require.Empty(t, agentC.Command, "the image's entrypoint is sluice-agent")

	opts, fs, data := agentSettings(t, objs)
	require.NoError(t, opts.Validate())
	assert.Equal(t, "kubernetes", opts.Source)
	assert.Empty(t, opts.Kubeconfig, "in-cluster configuration")

	// The settings left commented out in config.yaml are real flags and
	// their values are accepted: the examples stay true.
	disabled := disabledSetting.FindAllStringSubmatch(data, -1)
	require.NotEmpty(t, disabled)
	for _, m := range disabled {
		_, fs := agentFlags()
		one := filepath.Join(t.TempDir(), "one.yaml")
		require.NoError(t, os.WriteFile(one, []byte(m[1]+"\n"), 0o644))
		assert.NoError(t, agent.ApplyConfigFile(fs, one), "config.yaml: %q", "#"+m[1])
	}

	// NODE_NAME is the node the pod runs on: it picks the local pods.
	var nodeName *corev1.EnvVar
	for i := range agentC.Env {
		if agentC.Env[i].Name == "NODE_NAME" {
			nodeName = &agentC.Env[i]
		}
	}
	require.NotNil(t, nodeName, "NODE_NAME")
	require.NotNil(t, nodeName.ValueFrom)
	require.NotNil(t, nodeName.ValueFrom.FieldRef)
	assert.Equal(t, "spec.nodeName", nodeName.ValueFrom.FieldRef.FieldPath)
	assert.False(t, fs.Changed("node-name"), "--node-name would override NODE_NAME")

	// The directories the agent works in are the host's, mounted where the
	// settings point.
	hostPaths := map[string]string{} // volume name → host path
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	hostDir := func(p string) (host string, mount corev1.VolumeMount) {
		for _, m := range agentC.VolumeMounts {
			if (p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/")) && len(m.MountPath) > len(mount.MountPath) {
				mount = m
			}
		}
		if hp, ok := hostPaths[mount.Name]; ok {
			return path.Join(hp, strings.TrimPrefix(p, mount.MountPath)), mount
		}
		return "", mount
	}
	bpfHost, bpfMount := hostDir(opts.BPFRoot)
	assert.Equal(t, "/sys/fs/bpf/sluice", bpfHost, "--bpf-root %s must be on the host's bpffs", opts.BPFRoot)
	// No propagation: a container runtime refuses HostToContainer
	// (and Bidirectional) unless the host's mount is shared or a slave,
	// and hosts without systemd have it private (found by tests/cluster on
	// a real kubelet: CreateContainerError).
	assert.Nil(t, bpfMount.MountPropagation, "the agent's bpffs mount must not ask for mount propagation")
	stateHost, stateMount := hostDir(opts.StateDir)
	assert.Equal(t, "/var/run/sluice", stateHost, "--state-dir %s must be on the host (identities survive restarts; the CLI and Envoy find the sockets)", opts.StateDir)
	assert.False(t, stateMount.ReadOnly)
	cgroupHost, _ := hostDir(opts.CgroupRoot)
	assert.Equal(t, "/sys/fs/cgroup", cgroupHost, "--cgroup-root %q must be the host's cgroup v2 root", opts.CgroupRoot)

	// --metrics-address serves the port Prometheus scrapes.
	host, port, err := net.SplitHostPort(opts.MetricsAddress)
	require.NoError(t, err)
	assert.Empty(t, host, "Prometheus scrapes the pod's address (the node's: hostNetwork), not loopback")
	metricsPort := -1
	for _, p := range agentC.Ports {
		if p.Name == "metrics" {
			metricsPort = int(p.ContainerPort)
		}
	}
	assert.Equal(t, port, strconv.Itoa(metricsPort), "container port \"metrics\"")
}

// TestProbesAndScrapeAnnotations: the kubelet probes the agent's
// --health-address, on the node's loopback, so that the probes do not need
// the metrics port on every address of the node; Prometheus finds the
// metrics port through the annotations.
func TestProbesAndScrapeAnnotations(t *testing.T) {
	objs := loadManifests(t)
	ds := only[*appsv1.DaemonSet](t, objs)
	spec := &ds.Spec.Template.Spec
	agentC := container(t, spec, "agent")
	opts, _, _ := agentSettings(t, objs)
	var metrics *corev1.ContainerPort
	for i := range agentC.Ports {
		if agentC.Ports[i].Name == "metrics" {
			metrics = &agentC.Ports[i]
		}
	}
	require.NotNil(t, metrics, "port \"metrics\"")
	healthHost, healthPort, err := net.SplitHostPort(opts.HealthAddress)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", healthHost, "--health-address stays on loopback")
	assert.Nil(t, agentC.StartupProbe, "/healthz answers from the agent's start; a startup probe would only delay liveness")
	probes := map[*corev1.Probe]string{agentC.LivenessProbe: "/healthz", agentC.ReadinessProbe: "/readyz"}
	for probe, want := range probes {
		require.NotNil(t, probe, want)
		require.NotNil(t, probe.HTTPGet, want)
		assert.Equal(t, want, probe.HTTPGet.Path)
		assert.Equal(t, healthHost, probe.HTTPGet.Host, "%s: --health-address %s", want, opts.HealthAddress)
		assert.Equal(t, healthPort, probe.HTTPGet.Port.String(), "%s: --health-address %s", want, opts.HealthAddress)
		assert.Equal(t, intstr.Int, probe.HTTPGet.Port.Type, "%s: a port number (no container port is declared for a loopback address)", want)
	}
	for _, p := range agentC.Ports {
		assert.NotEqual(t, healthPort, strconv.Itoa(int(p.ContainerPort)), "the health port is not exposed")
	}
	ann := ds.Spec.Template.Annotations
	assert.Equal(t, "true", ann["prometheus.io/scrape"])
	assert.Equal(t, strconv.Itoa(int(metrics.ContainerPort)), ann["prometheus.io/port"])
	assert.Equal(t, "/metrics", ann["prometheus.io/path"])
}

// addedCapability is a line of daemonset.yaml adding a capability, with
// the comment that says why.
var addedCapability = regexp.MustCompile(`(?m)^\s*- ([A-Z_]+)\s*#\s*(\S.*)$`)

// TestAgentPrivileges: the agent gets an explicit list of capabilities, each
// with its reason next to it, never privileged; the only privileged
// container is the init container that mounts bpffs.
func TestAgentPrivileges(t *testing.T) {
	ds := only[*appsv1.DaemonSet](t, loadManifests(t))
	spec := &ds.Spec.Template.Spec
	assert.True(t, spec.HostNetwork, "hostNetwork: the agent attaches in the node's network namespace")
	assert.True(t, spec.HostPID, "hostPID: the agent finds pods' network namespaces through /proc/<pid>")

	agentC := container(t, spec, "agent")
	sc := agentC.SecurityContext
	require.NotNil(t, sc)
	require.NotNil(t, sc.Privileged, "privileged: false, explicitly")
	assert.False(t, *sc.Privileged)
	require.NotNil(t, sc.Capabilities)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	want := []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"}
	assert.ElementsMatch(t, want, sc.Capabilities.Add)

	raw, err := os.ReadFile("daemonset.yaml")
	require.NoError(t, err)
	reasons := map[string]string{}
	for _, m := range addedCapability.FindAllStringSubmatch(string(raw), -1) {
		reasons[m[1]] = m[2]
	}
	for _, c := range sc.Capabilities.Add {
		assert.NotEmpty(t, reasons[string(c)], "capability %s needs a comment on its line saying why", c)
	}

	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		privileged := c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
		for _, m := range c.VolumeMounts {
			assert.Nil(t, m.MountPropagation, "container %s, mount %s: no mount propagation (the runtime refuses it where the host's mount is private)", c.Name, m.MountPath)
		}
		if c.Name == "mount-bpffs" {
			// It mounts bpffs in the host's mount namespace, which
			// needs privileges and the host's PID namespace.
			assert.True(t, privileged, "mount-bpffs enters the host's mount namespace")
			assert.True(t, spec.HostPID, "mount-bpffs finds the host's mount namespace as PID 1's")
			assert.Contains(t, strings.Join(c.Command, " "), "nsenter --mount=/proc/1/ns/mnt -- mount -t bpf bpf /sys/fs/bpf")
			continue
		}
		assert.False(t, privileged, "container %s must not be privileged", c.Name)
	}
	require.Len(t, spec.InitContainers, 2)
}

func TestDaemonSetRunsOnEveryNode(t *testing.T) {
	ds := only[*appsv1.DaemonSet](t, loadManifests(t))
	spec := &ds.Spec.Template.Spec
	assert.Contains(t, spec.Tolerations, corev1.Toleration{Operator: corev1.TolerationOpExists},
		"a toleration without key tolerates every taint")
	assert.Equal(t, "system-node-critical", spec.PriorityClassName)
	assert.Equal(t, ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels)

	u := ds.Spec.UpdateStrategy
	assert.Equal(t, appsv1.RollingUpdateDaemonSetStrategyType, u.Type)
	require.NotNil(t, u.RollingUpdate)
	assert.Equal(t, intstr.FromInt32(1), *u.RollingUpdate.MaxUnavailable)
	assert.Equal(t, intstr.FromInt32(0), *u.RollingUpdate.MaxSurge, "two agents cannot share a node's bpf root")

	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		assert.False(t, c.Resources.Requests.Cpu().IsZero(), "container %s requests CPU", c.Name)
		assert.False(t, c.Resources.Requests.Memory().IsZero(), "container %s requests memory", c.Name)
	}
}

// TestEnvoyTalksToTheAgent: the shared Envoy's bootstrap is one Envoy
// accepts, takes its configuration over ADS from the agent's state
// directory (which the Envoy container mounts from the same host
// directory) and streams its access logs there; its probes reach its
// admin interface; it has exactly the capability its listeners and
// upstream connections need.
func TestEnvoyTalksToTheAgent(t *testing.T) {
	objs := loadManifests(t)
	ds := only[*appsv1.DaemonSet](t, objs)
	spec := &ds.Spec.Template.Spec
	envoy := container(t, spec, "envoy")
	opts, fs := agentFlags()
	require.NoError(t, fs.Parse(container(t, spec, "agent").Args))

	// The bootstrap file Envoy is started with, from its ConfigMap.
	i := slices.Index(envoy.Args, "--config-path")
	require.GreaterOrEqual(t, i, 0, "envoy --config-path")
	require.Less(t, i+1, len(envoy.Args))
	var bootstrap map[string]any
	bootYAML := configData(t, objs, envoy, spec, envoy.Args[i+1])
	require.NoError(t, yaml.UnmarshalStrict([]byte(bootYAML), &bootstrap))

	// It is an Envoy bootstrap as Envoy reads it: every field known, every
	// message valid, typed configs (Anys) included.
	bootJSON, err := yaml.YAMLToJSON([]byte(bootYAML))
	require.NoError(t, err)
	var boot bootstrapv3.Bootstrap
	require.NoError(t, protojson.Unmarshal(bootJSON, &boot), "the bootstrap as an envoy.config.bootstrap.v3.Bootstrap")
	require.NoError(t, xds.ValidateMessage(&boot))

	get := func(v any, keys ...any) any {
		for _, k := range keys {
			switch k := k.(type) {
			case string:
				m, ok := v.(map[string]any)
				require.True(t, ok, "bootstrap: %v is not a map", keys)
				v = m[k]
			case int:
				l, ok := v.([]any)
				require.True(t, ok && k < len(l), "bootstrap: %v is not a list", keys)
				v = l[k]
			}
		}
		return v
	}
	ads := get(bootstrap, "dynamic_resources", "ads_config", "grpc_services", 0, "envoy_grpc", "cluster_name")
	require.NotNil(t, ads)
	var xdsCluster any
	for _, c := range get(bootstrap, "static_resources", "clusters").([]any) {
		if get(c, "name") == ads {
			xdsCluster = c
		}
	}
	require.NotNil(t, xdsCluster, "the ADS cluster %v", ads)
	pipe := get(xdsCluster, "load_assignment", "endpoints", 0, "lb_endpoints", 0, "endpoint", "address", "pipe", "path")
	assert.Equal(t, path.Join(opts.StateDir, xds.DefaultSocketName), pipe, "the agent's xDS socket")
	assert.Equal(t, xds.ClusterXDS, ads)

	// The access logs the listeners stream name a static cluster on the
	// same socket (the agent serves ALS beside xDS).
	var als *clusterv3.Cluster
	for _, c := range boot.GetStaticResources().GetClusters() {
		if c.GetName() == xds.ClusterALS {
			als = c
		}
	}
	require.NotNil(t, als, "the access log cluster %s", xds.ClusterALS)
	assert.Equal(t, pipe, als.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe().GetPath())
	assert.NotNil(t, als.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"], "gRPC needs HTTP/2")

	// Exactly the capability a transparent listener and marked upstream
	// connections need, with its reason beside it.
	sc := envoy.SecurityContext
	require.NotNil(t, sc)
	require.NotNil(t, sc.Capabilities)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	assert.Equal(t, []corev1.Capability{"NET_ADMIN"}, sc.Capabilities.Add)
	raw, err := os.ReadFile("daemonset.yaml")
	require.NoError(t, err)
	assert.Regexp(t, `- NET_ADMIN # IP_TRANSPARENT .*SO_MARK`, string(raw))
	for _, kind := range []string{"cds_config", "lds_config"} {
		assert.NotNil(t, get(bootstrap, "dynamic_resources", kind, "ads"), "%s over ADS", kind)
	}

	// Envoy mounts the agent's state directory from the same host path.
	volumeOf := func(c *corev1.Container, p string) string {
		for _, m := range c.VolumeMounts {
			if m.MountPath == p {
				return m.Name
			}
		}
		return ""
	}
	agentVol := volumeOf(container(t, spec, "agent"), opts.StateDir)
	require.NotEmpty(t, agentVol)
	assert.Equal(t, agentVol, volumeOf(envoy, path.Dir(pipe.(string))))

	// Its probes reach the admin interface on loopback.
	addr := get(bootstrap, "admin", "address", "socket_address")
	assert.Equal(t, "127.0.0.1", get(addr, "address"))
	adminPort := get(addr, "port_value")
	for probe, want := range map[*corev1.Probe]string{envoy.ReadinessProbe: "/ready", envoy.LivenessProbe: ""} {
		require.NotNil(t, probe)
		require.NotNil(t, probe.HTTPGet)
		if want != "" {
			assert.Equal(t, want, probe.HTTPGet.Path)
		}
		assert.Equal(t, "127.0.0.1", probe.HTTPGet.Host)
		assert.EqualValues(t, adminPort, probe.HTTPGet.Port.IntValue())
	}
}
