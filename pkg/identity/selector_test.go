package identity

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

func ident(id ID, ns string, nsLabels, podLabels map[string]string) *Identity {
	sub := Subject{Namespace: ns, PodLabels: podLabels, NamespaceLabels: nsLabels}
	return &Identity{ID: id, Labels: sub.Labels(), Subject: sub}
}

func ml(kv ...string) *model.LabelSelector {
	s := &model.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func TestPeerSelectorSemantics(t *testing.T) {
	teamA := map[string]string{"team": "a"}
	teamB := map[string]string{"team": "b"}
	webX := ident(300, "x", teamA, map[string]string{"app": "web"})
	dbX := ident(301, "x", teamA, map[string]string{"app": "db"})
	webY := ident(302, "y", teamB, map[string]string{"app": "web"})
	all := []*Identity{webX, dbX, webY}

	tests := []struct {
		name string
		sel  PeerSelector
		want []ID
	}{
		{"podSelector alone: policy namespace only", PeerSelector{Namespace: "x", PodSelector: ml("app", "web")}, []ID{300}},
		{"empty podSelector: all pods of the namespace", PeerSelector{Namespace: "x", PodSelector: ml()}, []ID{300, 301}},
		{"namespaceSelector alone: all pods there", PeerSelector{Namespace: "x", NamespaceSelector: ml("team", "b")}, []ID{302}},
		{"empty namespaceSelector: every pod", PeerSelector{Namespace: "x", NamespaceSelector: ml()}, []ID{300, 301, 302}},
		{"both: AND", PeerSelector{Namespace: "x", NamespaceSelector: ml(), PodSelector: ml("app", "web")}, []ID{300, 302}},
		{"neither: nothing", PeerSelector{Namespace: "x"}, nil},
		{"matchExpressions", PeerSelector{Namespace: "x", NamespaceSelector: &model.LabelSelector{
			MatchExpressions: []model.SelectorRequirement{{Key: "team", Operator: model.SelectorOpNotIn, Values: []string{"a"}}},
		}}, []ID{302}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewSelectorCache()
			for _, i := range all {
				c.AddIdentity(i)
			}
			cs := c.Acquire(tt.sel)
			assert.Equal(t, tt.want, cs.Selected())
			assert.Equal(t, tt.want, c.Select(tt.sel))
		})
	}
}

func TestPeerSelectorKeyIgnoresOrderAndUnusedNamespace(t *testing.T) {
	a := PeerSelector{Namespace: "x", NamespaceSelector: ml("team", "a"), PodSelector: &model.LabelSelector{
		MatchLabels: map[string]string{"a": "1", "b": "2"},
		MatchExpressions: []model.SelectorRequirement{
			{Key: "k", Operator: model.SelectorOpIn, Values: []string{"2", "1"}},
			{Key: "j", Operator: model.SelectorOpExists},
		},
	}}
	b := PeerSelector{Namespace: "y", NamespaceSelector: ml("team", "a"), PodSelector: &model.LabelSelector{
		MatchLabels: map[string]string{"b": "2", "a": "1"},
		MatchExpressions: []model.SelectorRequirement{
			{Key: "j", Operator: model.SelectorOpExists},
			{Key: "k", Operator: model.SelectorOpIn, Values: []string{"1", "2"}},
		},
	}}
	c := NewSelectorCache()
	assert.Same(t, c.Acquire(a), c.Acquire(b))
	assert.Equal(t, 1, c.Len())

	nilPods := PeerSelector{Namespace: "x", NamespaceSelector: ml()}
	emptyPods := PeerSelector{Namespace: "x", NamespaceSelector: ml(), PodSelector: ml()}
	assert.NotEqual(t, nilPods.Key(), emptyPods.Key(), "keys stay literal; both select all pods")
	assert.Equal(t, "pods {a=1,b=2,k in (2,1),j} in namespaces {team=a}", a.String())
}

// The cache must always hold what evaluating every selector against every
// identity would give, whatever the order of identity and selector changes.
func TestSelectorCacheMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	namespaces := []string{"a", "b", "c"}
	nsLabels := map[string]map[string]string{
		"a": {"team": "x"}, "b": {"team": "y"}, "c": {"team": "x", "env": "prod"},
	}
	randSel := func() *model.LabelSelector {
		switch rng.IntN(5) {
		case 0:
			return nil
		case 1:
			return ml()
		case 2:
			return ml("app", fmt.Sprint("app", rng.IntN(3)))
		case 3:
			return &model.LabelSelector{MatchExpressions: []model.SelectorRequirement{
				{Key: "app", Operator: model.SelectorOpNotIn, Values: []string{"app0"}}}}
		default:
			return ml("team", "x")
		}
	}

	c := NewSelectorCache()
	idents := map[ID]*Identity{}
	var held []*CachedSelector
	next := ID(256)
	for step := range 800 {
		switch r := rng.IntN(10); {
		case r < 4:
			ns := namespaces[rng.IntN(3)]
			i := ident(next, ns, nsLabels[ns], map[string]string{"app": fmt.Sprint("app", rng.IntN(3))})
			next++
			idents[i.ID] = i
			changed := c.AddIdentity(i)
			for _, cs := range changed {
				assert.True(t, cs.Selects(i.ID))
			}
		case r < 6 && len(idents) > 0:
			ids := sortedIDs(idents)
			id := ids[rng.IntN(len(ids))]
			delete(idents, id)
			for _, cs := range c.RemoveIdentity(id) {
				assert.False(t, cs.Selects(id))
			}
		case r < 8:
			held = append(held, c.Acquire(PeerSelector{
				Namespace: namespaces[rng.IntN(3)], PodSelector: randSel(), NamespaceSelector: randSel(),
			}))
		case len(held) > 0:
			i := rng.IntN(len(held))
			c.Release(held[i])
			held = slices.Delete(held, i, i+1)
		}
		for _, cs := range held {
			var want []ID
			for _, id := range sortedIDs(idents) {
				if cs.Selector().Matches(&idents[id].Subject) {
					want = append(want, id)
				}
			}
			require.Equal(t, want, cs.Selected(), "step %d selector %s", step, cs.Selector().Key())
		}
	}
}

func sortedIDs(m map[ID]*Identity) []ID {
	var out []ID
	for id := range m {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
