package cli_test

// Fuzzing what the CLI decodes from bytes it did not write: the observer's
// GetFlows responses (FuzzFlowPrinters) and the pinned maps' entries
// (FuzzBPFList, in bpffuzz_test.go). Neither may panic on any input; the
// JSON of a flow must be what protojson makes of the same bytes. Seeds are
// in the code and under testdata/fuzz; `make fuzz` runs the targets longer
// and CI for seconds. A crasher the fuzzer finds is written under
// testdata/fuzz: commit it as a regression input.

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-net/sluice/pkg/cli"
)

// flowSeeds are GetFlowsResponses as the observer sends them: Sluice's
// golden flows, the observe tests' flows (L4 and L7), a lost-events
// notice, random messages of every field kind, and the wire shapes a
// careless transcoder gets wrong (a oneof twice, a message field twice).
func flowSeeds(f *testing.F) [][]byte {
	var flows []*flowpb.Flow
	raw, err := os.ReadFile("../flow/testdata/golden_flows.json")
	if err != nil {
		f.Fatal(err)
	}
	var golden map[string]json.RawMessage
	if err := json.Unmarshal(raw, &golden); err != nil {
		f.Fatal(err)
	}
	for name, js := range golden {
		fl := &flowpb.Flow{}
		if err := protojson.Unmarshal(js, fl); err != nil {
			f.Fatalf("golden flow %s: %v", name, err)
		}
		flows = append(flows, fl)
	}
	flows = append(flows, testFlows()...)
	flows = append(flows, l7TestFlows()...)
	var responses []proto.Message
	for _, fl := range flows {
		responses = append(responses, &observerpb.GetFlowsResponse{NodeName: "worker-1", Time: fl.GetTime(),
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: fl}})
	}
	responses = append(responses, &observerpb.GetFlowsResponse{Time: timestamppb.New(ft0),
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
			Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 3}}})
	rng := rand.New(rand.NewPCG(18, 1))
	for range 8 {
		r := &observerpb.GetFlowsResponse{}
		fill(rng, r.ProtoReflect(), 0)
		responses = append(responses, r)
	}
	var seeds [][]byte
	for _, m := range responses {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	// A flow, then a lost-events notice in the same response (the oneof's
	// last field wins), and a flow sent in two parts (they merge).
	lost := protowire.AppendTag(nil, 3, protowire.BytesType)
	lost = protowire.AppendBytes(lost, []byte{0x08, 0x01, 0x10, 0x05})
	seeds = append(seeds, append(bytes.Clone(seeds[0]), lost...), append(bytes.Clone(seeds[0]), seeds[1]...))
	return seeds
}

// Any bytes as a GetFlows response: every output format of observe prints
// it or fails with an error, never panics; it fails exactly when the bytes
// are not a response; and -o json / -o jsonpb print what protojson makes
// of the decoded response (the fast path from the wire bytes must not
// differ from the slow one).
func FuzzFlowPrinters(f *testing.F) {
	for _, s := range flowSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r := &observerpb.GetFlowsResponse{}
		decodeErr := proto.Unmarshal(raw, r)
		for _, format := range []string{"compact", "table", "json", "jsonpb"} {
			var out bytes.Buffer
			err := cli.PrintResponses(format, &out, raw)
			if decodeErr != nil {
				switch {
				case err != nil:
				case format == "json":
					// -o json reads only the response's flow or lost-events
					// notice, so damage elsewhere may go unnoticed: what it
					// printed must be that part's JSON.
					printedPart(t, raw, out.String())
				default:
					t.Fatalf("-o %s printed bytes that are not a GetFlows response (%v):\n%s", format, decodeErr, out.String())
				}
				continue
			}
			var want proto.Message
			switch format {
			case "jsonpb":
				want = r
			case "json":
				switch {
				case r.GetFlow() != nil:
					want = r.GetFlow()
				case r.GetLostEvents() != nil:
					want = &observerpb.GetFlowsResponse{ResponseTypes: r.GetResponseTypes()}
				}
			}
			if want == nil {
				if err != nil {
					t.Fatalf("-o %s: %v", format, err)
				}
				if format == "json" && out.Len() > 0 {
					t.Fatalf("-o json printed a response that is neither a flow nor lost events: %s", out.String())
				}
				continue
			}
			js, jsErr := protojson.MarshalOptions{UseProtoNames: true}.Marshal(want)
			if jsErr != nil {
				if err == nil {
					t.Fatalf("-o %s printed what protojson refuses (%v): %s", format, jsErr, out.String())
				}
				continue
			}
			if err != nil {
				t.Fatalf("-o %s: %v; protojson prints %s", format, err, js)
			}
			sameJSON(t, []byte(strings.TrimSuffix(out.String(), "\n")), js)
		}
	})
}

// printedPart checks what -o json printed of a response that does not
// decode as a whole: nothing if it holds neither a flow nor a lost-events
// notice, else the protojson of the one it holds, which must decode.
func printedPart(t *testing.T, raw []byte, printed string) {
	t.Helper()
	var parts []protowire.Number
	var value []byte
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("-o json printed a response that is not protobuf wire format: %q", printed)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			t.Fatalf("-o json printed a response that is not protobuf wire format: %q", printed)
		}
		if num == 1 || num == 3 {
			parts = append(parts, num)
			value, _ = protowire.ConsumeBytes(b[n : n+m])
		}
		b = b[n+m:]
	}
	var want proto.Message
	switch {
	case len(parts) == 0:
		if printed != "" {
			t.Fatalf("-o json printed %q from a response with neither a flow nor lost events", printed)
		}
		return
	case len(parts) > 1:
		t.Fatalf("-o json printed %q from an undecodable response that sends its flow or lost events %d times", printed, len(parts))
	case parts[0] == 1:
		want = &flowpb.Flow{}
	default:
		want = &flowpb.LostEvent{}
	}
	if err := proto.Unmarshal(value, want); err != nil {
		t.Fatalf("-o json printed %q from a part that does not decode: %v", printed, err)
	}
	if le, ok := want.(*flowpb.LostEvent); ok {
		want = &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: le}}
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(want)
	if err != nil {
		t.Fatalf("-o json printed %q where protojson refuses the part: %v", printed, err)
	}
	sameJSON(t, []byte(strings.TrimSuffix(printed, "\n")), js)
}
