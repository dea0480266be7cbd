package daemonset

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"

	npv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluice-net/sluice/pkg/source/k8sconv"
)

// TestCRDSchemaIsTheGoTypes holds the CRD to pkg/apis/sluice/v1alpha1,
// which the agent decodes: the names, and a schema with exactly the Go
// types' fields, of the same types, so that a field added to one and not
// the other fails here (the API server would prune a field the schema
// lacks, silently). tests/apiserver checks that a real API server
// accepts the CRD and serves its objects.
func TestCRDSchemaIsTheGoTypes(t *testing.T) {
	checkCRD(t, v1alpha1.SluiceL7Policies, v1alpha1.KindSluiceL7Policy, "Namespaced", reflect.TypeFor[v1alpha1.SluiceL7PolicySpec]())
}

// TestClusterNetworkPolicyCRDIsTheGoTypes holds the ClusterNetworkPolicy
// CRD to sigs.k8s.io/network-policy-api's v1alpha2 types, which the agent
// decodes, in the same way.
func TestClusterNetworkPolicyCRDIsTheGoTypes(t *testing.T) {
	checkCRD(t, k8sconv.ClusterNetworkPolicies, k8sconv.ClusterNetworkPolicyKind.Kind, "Cluster",
		reflect.TypeFor[npv1alpha2.ClusterNetworkPolicySpec]())
}

// checkCRD checks the manifests' CRD of res: its names and scope, one
// served and stored version, and a spec schema describing spec.
func checkCRD(t *testing.T, res schema.GroupVersionResource, kind, scope string, spec reflect.Type) {
	t.Helper()
	crd := crdNamed(t, res.Resource+"."+res.Group)
	str := func(path ...string) string {
		v, _, err := unstructured.NestedString(crd, path...)
		require.NoError(t, err)
		return v
	}
	assert.Equal(t, res.Group, str("spec", "group"))
	assert.Equal(t, res.Resource, str("spec", "names", "plural"))
	assert.Equal(t, kind, str("spec", "names", "kind"))
	assert.Equal(t, scope, str("spec", "scope"))
	versions, _, err := unstructured.NestedSlice(crd, "spec", "versions")
	require.NoError(t, err)
	require.Len(t, versions, 1)
	v := versions[0].(map[string]any)
	assert.Equal(t, res.Version, v["name"])
	assert.Equal(t, true, v["served"])
	assert.Equal(t, true, v["storage"])
	sch, _, err := unstructured.NestedMap(v, "schema", "openAPIV3Schema", "properties", "spec")
	require.NoError(t, err)
	compareSchema(t, "spec", sch, spec)
}

// crdNamed is the CustomResourceDefinition of the manifests with this name.
func crdNamed(t *testing.T, name string) map[string]any {
	t.Helper()
	for _, o := range loadManifests(t) {
		if u, ok := o.obj.(*unstructured.Unstructured); ok && u.GetKind() == "CustomResourceDefinition" && u.GetName() == name {
			return u.Object
		}
	}
	require.Failf(t, "no CRD", "the manifests have no CustomResourceDefinition %s", name)
	return nil
}

var intOrString = reflect.TypeFor[intstr.IntOrString]()

// compareSchema checks that schema describes values of type typ.
func compareSchema(t *testing.T, path string, schema map[string]any, typ reflect.Type) {
	t.Helper()
	if typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ == intOrString {
		assert.Equal(t, true, schema["x-kubernetes-int-or-string"], "%s: int or string", path)
		return
	}
	want := map[reflect.Kind]string{
		reflect.String: "string", reflect.Bool: "boolean", reflect.Int32: "integer",
		reflect.Struct: "object", reflect.Map: "object", reflect.Slice: "array",
	}[typ.Kind()]
	require.NotEmpty(t, want, "%s: Go type %s has no schema type here", path, typ)
	require.Equal(t, want, schema["type"], "%s (Go %s)", path, typ)
	switch typ.Kind() {
	case reflect.Slice:
		items, _ := schema["items"].(map[string]any)
		require.NotNil(t, items, "%s: items", path)
		compareSchema(t, path+"[]", items, typ.Elem())
	case reflect.Map:
		ap, _ := schema["additionalProperties"].(map[string]any)
		require.NotNil(t, ap, "%s: additionalProperties", path)
		compareSchema(t, path+"{}", ap, typ.Elem())
	case reflect.Struct:
		props, _ := schema["properties"].(map[string]any)
		fields := map[string]reflect.Type{}
		var required []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			fields[name] = f.Type
			if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
				required = append(required, name)
			}
		}
		var names []string
		for name := range props {
			names = append(names, name)
		}
		wantNames := make([]string, 0, len(fields))
		for name := range fields {
			wantNames = append(wantNames, name)
		}
		assert.ElementsMatch(t, wantNames, names, "%s: the schema's properties are the Go fields", path)
		var schemaRequired []string
		if r, ok := schema["required"].([]any); ok {
			for _, n := range r {
				schemaRequired = append(schemaRequired, n.(string))
			}
		}
		for _, n := range schemaRequired {
			assert.True(t, slices.Contains(required, n), "%s: %s is required in the schema, optional in Go", path, n)
		}
		for name, ft := range fields {
			if p, ok := props[name].(map[string]any); ok {
				compareSchema(t, path+"."+name, p, ft)
			}
		}
	}
}
