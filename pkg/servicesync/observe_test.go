package servicesync

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/service"
)

// failingDump is noMaps whose maps cannot be read back after the first
// read (the reconciler's start).
type failingDump struct {
	noMaps
	reads int
}

func (f *failingDump) LBDump() (datapath.LBState, error) {
	if f.reads++; f.reads > 1 {
		return datapath.LBState{}, errors.New("dump sl_lb_svc: bad fd")
	}
	return f.noMaps.LBDump()
}

type pass struct {
	full bool
	err  error
}

// Every pass is reported to ObservePass (the agent's reconcile metrics),
// with the error it left in Status.
func TestObservePass(t *testing.T) {
	for _, c := range []struct {
		name string
		maps lbMaps
		want []pass
	}{
		{"passes", noMaps{}, []pass{{full: true}, {full: false}}},
		{"failed full pass", &failingDump{}, []pass{{full: true, err: errors.New("dump sl_lb_svc: bad fd")}, {full: false}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []pass
			r, err := newReconciler(Options{Store: model.NewStore(), Service: service.Options{NodeName: "node1", MaglevTableSize: 251},
				ObservePass: func(full bool, took time.Duration, err error) {
					require.Positive(t, took)
					got = append(got, pass{full, err})
				}}, c.maps)
			require.NoError(t, err)
			r.Reconcile(true)
			r.Reconcile(false)
			require.Equal(t, c.want, got)
		})
	}
}
