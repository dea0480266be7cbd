package daemonset

import (
	"context"
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluice-net/sluice/internal/testing/k8stest"
	"github.com/sluice-net/sluice/pkg/source/k8s"
)

// TestRoleGrantsExactlyTheUninstallCheck runs the agent's check of its
// DaemonSet (when it stops) against a fake API server and compares its
// requests, with the source's requests in the agent's namespace (Secrets,
// see agentAPICalls), with the namespaced Role: get on that one
// DaemonSet, list and watch of Secrets.
func TestRoleGrantsExactlyTheUninstallCheck(t *testing.T) {
	objs := loadManifests(t)
	ds := only[*appsv1.DaemonSet](t, objs)
	role := only[*rbacv1.Role](t, objs)
	client := fake.NewClientset(ds)
	removed, _, err := k8s.DaemonSetRemoved(context.Background(), k8stest.Clientset(client), ds.Namespace, ds.Name)
	require.NoError(t, err)
	assert.False(t, removed)

	type call struct{ group, resource, verb, name string }
	calls := map[call]bool{}
	for _, a := range client.Actions() {
		gvr := a.GetResource()
		name := ""
		if g, ok := a.(interface{ GetName() string }); ok {
			name = g.GetName()
		}
		calls[call{gvr.Group, gvr.Resource, a.GetVerb(), name}] = true
	}
	for c := range agentAPICalls(t, objs) {
		if c.namespace == "" {
			continue // the ClusterRole's
		}
		assert.Equal(t, role.Namespace, c.namespace)
		calls[call{c.group, c.resource, c.verb, ""}] = true
	}
	granted := map[call]bool{}
	for _, r := range role.Rules {
		names := r.ResourceNames
		if len(names) == 0 {
			// Lists and watches name no object; RBAC cannot limit them.
			names = []string{""}
			for _, v := range r.Verbs {
				assert.Contains(t, []string{"list", "watch"}, v, "a rule without names: %v", r)
			}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					for _, n := range names {
						granted[call{g, res, v, n}] = true
					}
				}
			}
		}
	}
	assert.Equal(t, granted, calls)
	assert.Equal(t, ds.Namespace, role.Namespace)

	binding := only[*rbacv1.RoleBinding](t, objs)
	sa := only[*corev1.ServiceAccount](t, objs)
	assert.Equal(t, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}, binding.RoleRef)
	assert.Equal(t, []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}}, binding.Subjects)
}

// TestCNIInstallAndUninstallAgree: install-cni writes sluice-cni into the
// host's CNI directories with the agent's state directory (its socket);
// the agent mounts the same directories to remove it, and names its own
// DaemonSet for the check.
func TestCNIInstallAndUninstallAgree(t *testing.T) {
	objs := loadManifests(t)
	ds := only[*appsv1.DaemonSet](t, objs)
	spec := &ds.Spec.Template.Spec
	install := container(t, &corev1.PodSpec{Containers: spec.InitContainers}, "install-cni")
	agentC := container(t, spec, "agent")
	assert.Equal(t, agentC.Image, install.Image, "the agent's image ships sluice-cni")

	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	onHost := func(c *corev1.Container, p string) string {
		for _, m := range c.VolumeMounts {
			if p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/") {
				if hp, ok := hostPaths[m.Name]; ok && !m.ReadOnly {
					return path.Join(hp, strings.TrimPrefix(p, m.MountPath))
				}
			}
		}
		return ""
	}
	flags := func(args []string) map[string]string {
		out := map[string]string{}
		for _, a := range args {
			if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok {
				out[k] = v
			}
		}
		return out
	}

	require.Equal(t, []string{"/usr/local/bin/sluice-cni", "install"}, install.Command[:2])
	in := flags(install.Command[2:])
	assert.Equal(t, "/etc/cni/net.d", onHost(install, in["conf-dir"]))
	assert.Equal(t, "/opt/cni/bin", onHost(install, in["bin-dir"]))

	opts, fs := agentFlags()
	require.NoError(t, fs.Parse(agentC.Args))
	assert.Equal(t, "/etc/cni/net.d", onHost(agentC, opts.CNI.ConfDir))
	assert.Equal(t, "/opt/cni/bin", onHost(agentC, opts.CNI.BinDir))
	assert.Equal(t, onHost(agentC, opts.StateDir), in["state-dir"], "the plugin finds the agent's socket on the host")

	assert.Equal(t, "$(POD_NAMESPACE)/"+ds.Name, opts.CNI.UninstallWith)
	var podNS *corev1.EnvVar
	for i := range agentC.Env {
		if agentC.Env[i].Name == "POD_NAMESPACE" {
			podNS = &agentC.Env[i]
		}
	}
	require.NotNil(t, podNS, "POD_NAMESPACE for --cni-uninstall-with")
	require.NotNil(t, podNS.ValueFrom)
	require.NotNil(t, podNS.ValueFrom.FieldRef)
	assert.Equal(t, "metadata.namespace", podNS.ValueFrom.FieldRef.FieldPath)
}
