package flow

import (
	"testing"

	"github.com/sluice-net/sluice/pkg/model"
)

func TestWorkloadOf(t *testing.T) {
	owner := func(kind, name string) []model.OwnerRef {
		return []model.OwnerRef{{Kind: kind, Name: name, Controller: true}}
	}
	hash := map[string]string{"pod-template-hash": "5d8c7f9b6"}
	tests := []struct {
		name       string
		pod        *model.Pod
		kind, wl   string
		noWorkload bool
	}{
		{name: "deployment", pod: &model.Pod{Labels: hash, Owners: owner("ReplicaSet", "web-5d8c7f9b6")}, kind: "Deployment", wl: "web"},
		{name: "deployment with dashes", pod: &model.Pod{Labels: hash, Owners: owner("ReplicaSet", "my-web-app-5d8c7f9b6")}, kind: "Deployment", wl: "my-web-app"},
		{name: "bare replicaset, no hash label", pod: &model.Pod{Owners: owner("ReplicaSet", "web-5d8c7f9b6")}, kind: "ReplicaSet", wl: "web-5d8c7f9b6"},
		{name: "replicaset not named after the hash", pod: &model.Pod{Labels: hash, Owners: owner("ReplicaSet", "frontend")}, kind: "ReplicaSet", wl: "frontend"},
		{name: "statefulset", pod: &model.Pod{Owners: owner("StatefulSet", "db")}, kind: "StatefulSet", wl: "db"},
		{name: "daemonset", pod: &model.Pod{Owners: owner("DaemonSet", "sluice")}, kind: "DaemonSet", wl: "sluice"},
		{name: "cronjob's job", pod: &model.Pod{Owners: owner("Job", "backup-29123456")}, kind: "CronJob", wl: "backup"},
		{name: "hand-made job with a number", pod: &model.Pod{Owners: owner("Job", "migrate-2")}, kind: "Job", wl: "migrate-2"},
		{name: "job", pod: &model.Pod{Owners: owner("Job", "migrate")}, kind: "Job", wl: "migrate"},
		{name: "owner that is not the controller", pod: &model.Pod{Owners: []model.OwnerRef{{Kind: "ReplicaSet", Name: "x"}}}, noWorkload: true},
		{name: "bare pod", pod: &model.Pod{}, noWorkload: true},
		{name: "nil pod", noWorkload: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, ok := WorkloadOf(tt.pod)
			if tt.noWorkload {
				if ok {
					t.Fatalf("workload %v, want none", w)
				}
				return
			}
			if !ok || w.GetKind() != tt.kind || w.GetName() != tt.wl {
				t.Fatalf("workload %v (ok %v), want %s %s", w, ok, tt.kind, tt.wl)
			}
		})
	}
}
