package flow

import (
	"regexp"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/model"
)

// podTemplateHashLabel is the label the Deployment controller puts on the
// pods of each ReplicaSet it creates; the ReplicaSet is named
// <deployment>-<hash>.
const podTemplateHashLabel = "pod-template-hash"

// cronJobName matches the Jobs the CronJob controller creates:
// <cronjob>-<scheduled time in minutes since the epoch>. Today that is 8
// digits; 8 to 10 (as Hubble allows) keeps hand-made Jobs such as
// "migrate-2" from passing for CronJobs.
var cronJobName = regexp.MustCompile(`^(.+)-[0-9]{8,10}$`)

// WorkloadOf returns the workload a pod belongs to, derived from its
// controller owner reference the way Hubble derives it, without looking up
// the owner itself (the agent does not watch ReplicaSets or Jobs):
//
//   - a ReplicaSet "web-5d8c7f9b6" whose pod has the label
//     pod-template-hash=5d8c7f9b6 belongs to Deployment "web";
//   - a ReplicaSet without that label, or whose name does not end in
//     "-<hash>", is reported as the ReplicaSet;
//   - a Job named "<name>-<8 to 10 digits>" belongs to CronJob "<name>";
//   - any other controller (StatefulSet, DaemonSet, Job, ...) is reported
//     as it is.
//
// A pod without a controller (a bare or static pod) has no workload.
func WorkloadOf(pod *model.Pod) (*flowpb.Workload, bool) {
	if pod == nil {
		return nil, false
	}
	owner, ok := pod.Controller()
	if !ok || owner.Name == "" || owner.Kind == "" {
		return nil, false
	}
	w := &flowpb.Workload{Kind: owner.Kind, Name: owner.Name}
	switch owner.Kind {
	case "ReplicaSet":
		if hash := pod.Labels[podTemplateHashLabel]; hash != "" {
			if name, ok := strings.CutSuffix(owner.Name, "-"+hash); ok && name != "" {
				w.Kind, w.Name = "Deployment", name
			}
		}
	case "Job":
		if m := cronJobName.FindStringSubmatch(owner.Name); m != nil {
			w.Kind, w.Name = "CronJob", m[1]
		}
	}
	return w, true
}
