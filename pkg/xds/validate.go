package xds

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	// The typed configs a snapshot or Envoy's bootstrap holds are
	// registered, so the walker can unpack them: those Generate uses are
	// by its imports, and this one the bootstrap's static clusters use
	// too. (Importing the bootstrap's own package would add a megabyte to
	// the agent for its tests' sake: they import it themselves.)
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// ValidateMessage validates m with its protoc-gen-validate rules and
// every message packed in a google.protobuf.Any inside it, unpacked
// recursively through the global type registry: ValidateAll stops at an
// Any, and Envoy's typed configs (filters, access loggers, per-route
// configs) are all Anys. An Any of a type this binary does not know is an
// error too: Envoy would refuse it, and nothing here could check it.
func ValidateMessage(m proto.Message) error {
	return walk(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name()), func(path string, m proto.Message, root bool) error {
		if !root {
			return nil // validated with the message it is part of
		}
		if v, ok := m.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		} else if v, ok := m.(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
		return nil
	})
}

// walk calls visit on m and on every message inside it, Anys unpacked;
// root is true for m and for each message unpacked from an Any (the
// roots ValidateAll must be called on). path names the message for
// errors, e.g. "Listener.filter_chains[0].filters[0].typed_config<HttpConnectionManager>".
func walk(m protoreflect.Message, path string, visit func(path string, m proto.Message, root bool) error) error {
	return walkMsg(m, path, true, visit)
}

func walkMsg(m protoreflect.Message, path string, root bool, visit func(string, proto.Message, bool) error) error {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: unpack %s: %w", path, a.GetTypeUrl(), err)
		}
		return walkMsg(inner.ProtoReflect(), path+"<"+string(inner.ProtoReflect().Descriptor().Name())+">", true, visit)
	}
	if err := visit(path, m.Interface(), root); err != nil {
		return err
	}
	var errs []error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := path + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			var keys []protoreflect.MapKey
			v.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool { keys = append(keys, k); return true })
			// Sorted, so that the first error is always the same one.
			slices.SortFunc(keys, func(a, b protoreflect.MapKey) int { return cmp.Compare(a.String(), b.String()) })
			for _, k := range keys {
				errs = append(errs, walkMsg(v.Map().Get(k).Message(), fmt.Sprintf("%s[%s]", name, k.String()), false, visit))
			}
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			for i := 0; i < v.List().Len(); i++ {
				errs = append(errs, walkMsg(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", name, i), false, visit))
			}
		case fd.Message() != nil:
			errs = append(errs, walkMsg(v.Message(), name, false, visit))
		}
		return true
	})
	return errors.Join(errs...)
}

// staticClusters are the clusters of Envoy's bootstrap that resources may
// name without serving them.
var staticClusters = map[string]bool{ClusterALS: true, ClusterXDS: true}

// Validate checks res before it is served: every resource with
// ValidateMessage, the snapshot's consistency (every route configuration
// a listener names is served, and only those), and lints for the traps
// Envoy's own validation lets through:
//   - a local rate limit whose filter_enabled or filter_enforced is not
//     100% by default (the proto's default, 0%, limits nothing);
//   - an HTTP connection manager whose last filter is not the router (the
//     filters after it never run) or that has a router elsewhere;
//   - an RBAC config without `rules` (no enforcement at all; gRPC reads
//     only `rules`), and a per-route RBAC that disables the filter;
//   - a cluster named by a route or a gRPC service that neither the
//     snapshot nor Envoy's bootstrap defines.
func (r *Resources) Validate() error {
	_, err := r.snapshot()
	return err
}

// snapshot is the validated snapshot of r.
func (r *Resources) snapshot() (*cachev3.Snapshot, error) {
	// Every type is in the snapshot, empty or not: a type left out has
	// no version, and the cache never answers Envoy's request for it
	// (Envoy waits out its initial fetch timeout with no listeners).
	items := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {}, resourcev3.RouteType: {}, resourcev3.ClusterType: {},
	}
	var all []proto.Message
	for _, l := range r.Listeners {
		items[resourcev3.ListenerType] = append(items[resourcev3.ListenerType], l)
		all = append(all, l)
	}
	for _, rc := range r.Routes {
		items[resourcev3.RouteType] = append(items[resourcev3.RouteType], rc)
		all = append(all, rc)
	}
	clusters := map[string]bool{}
	for _, c := range r.Clusters {
		items[resourcev3.ClusterType] = append(items[resourcev3.ClusterType], c)
		all = append(all, c)
		clusters[c.Name] = true
	}
	routes := map[string]bool{}
	for _, rc := range r.Routes {
		routes[rc.Name] = true
	}
	for _, m := range all {
		name := cachev3.GetResourceName(m)
		if err := ValidateMessage(m); err != nil {
			return nil, fmt.Errorf("%s %q: %w", m.ProtoReflect().Descriptor().Name(), name, err)
		}
		if err := lint(m, clusters, routes); err != nil {
			return nil, fmt.Errorf("%s %q: %w", m.ProtoReflect().Descriptor().Name(), name, err)
		}
	}
	snap, err := cachev3.NewSnapshot(r.Version, items)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", r.Version, err)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", r.Version, err)
	}
	return snap, nil
}

// lint finds the traps of Validate's list in m, Anys unpacked.
func lint(m proto.Message, clusters, routes map[string]bool) error {
	cluster := func(path, name string) error {
		if !clusters[name] && !staticClusters[name] {
			return fmt.Errorf("%s: cluster %q is neither served nor in Envoy's bootstrap", path, name)
		}
		return nil
	}
	return walk(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name()), func(path string, m proto.Message, _ bool) error {
		switch m := m.(type) {
		case *hcmv3.HttpConnectionManager:
			fs := m.GetHttpFilters()
			if len(fs) == 0 || fs[len(fs)-1].GetName() != wellknown.Router {
				return fmt.Errorf("%s: the router is not the last HTTP filter: the filters after it never run", path)
			}
			for _, f := range fs[:len(fs)-1] {
				if f.GetName() == wellknown.Router {
					return fmt.Errorf("%s: a router before the last HTTP filter", path)
				}
			}
			if rds := m.GetRds(); rds != nil && !routes[rds.GetRouteConfigName()] {
				return fmt.Errorf("%s: route configuration %q is not served", path, rds.GetRouteConfigName())
			}
		case *lrlv3.LocalRateLimit:
			for what, p := range map[string]*corev3.RuntimeFractionalPercent{"filter_enabled": m.GetFilterEnabled(), "filter_enforced": m.GetFilterEnforced()} {
				if !isHundredPercent(p) {
					return fmt.Errorf("%s: %s is not 100%% by default: the filter would limit nothing", path, what)
				}
			}
		case *rbacfilterv3.RBAC:
			if m.GetRules() == nil {
				return fmt.Errorf("%s: RBAC without rules enforces nothing (shadow_rules only log)", path)
			}
		case *rbacfilterv3.RBACPerRoute:
			if m.GetRbac() == nil {
				return fmt.Errorf("%s: a per-route RBAC without rbac disables the filter", path)
			}
		case *routev3.RouteAction:
			if c := m.GetCluster(); c != "" {
				return cluster(path, c)
			}
		case *corev3.GrpcService_EnvoyGrpc:
			return cluster(path, m.GetClusterName())
		}
		return nil
	})
}

func isHundredPercent(p *corev3.RuntimeFractionalPercent) bool {
	d := p.GetDefaultValue()
	if d == nil {
		return false
	}
	var denom uint32
	switch d.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		denom = 100
	case typev3.FractionalPercent_TEN_THOUSAND:
		denom = 10000
	case typev3.FractionalPercent_MILLION:
		denom = 1000000
	}
	return d.GetNumerator() >= denom
}
