package cli_test

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-net/sluice/pkg/cli"
)

// randomStrings include what JSON must escape and what it must not.
var randomStrings = []string{"", "web-0", `a"b\c`, "line\nbreak\ttab\r\b\f", "\x01\x1f\x7f", "<&>", "é ü 日本", "🙂", "k8s:app=web", "\u2028"}

// fill sets a random subset of m's fields, recursing into messages: every
// field kind of the observer's messages, every well-known type they carry.
func fill(rng *rand.Rand, m protoreflect.Message, depth int) {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		secs := rng.Int64N(4_000_000_000)
		nanos := []int32{0, 1_000_000 * rng.Int32N(1000), 1000 * rng.Int32N(1_000_000), rng.Int32N(1_000_000_000)}[rng.IntN(4)]
		proto.Merge(m.Interface(), timestamppb.New(timestamppb.Now().AsTime()))
		m.Set(m.Descriptor().Fields().ByName("seconds"), protoreflect.ValueOfInt64(secs))
		m.Set(m.Descriptor().Fields().ByName("nanos"), protoreflect.ValueOfInt32(nanos))
		return
	case "google.protobuf.Any":
		var inner proto.Message
		if rng.IntN(2) == 0 {
			inner = randomStruct(rng, depth)
		} else {
			ep := &flowpb.Endpoint{}
			fill(rng, ep.ProtoReflect(), depth+1)
			inner = ep
		}
		a, err := anypb.New(inner)
		if err != nil {
			panic(err)
		}
		proto.Merge(m.Interface(), a)
		return
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if rng.IntN(3) == 0 {
			continue
		}
		if o := fd.ContainingOneof(); o != nil && m.WhichOneof(o) != nil {
			continue
		}
		if fd.Message() != nil && depth > 4 {
			continue
		}
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for range rng.IntN(4) {
				if fd.Message() != nil {
					e := l.NewElement()
					fill(rng, e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(randomScalar(rng, fd))
				}
			}
			continue
		}
		if fd.Message() != nil {
			fill(rng, m.Mutable(fd).Message(), depth+1)
			continue
		}
		m.Set(fd, randomScalar(rng, fd))
	}
}

func randomScalar(rng *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(rng.IntN(2) == 0)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if rng.IntN(8) == 0 {
			return protoreflect.ValueOfEnum(999) // unknown: printed as a number
		}
		return protoreflect.ValueOfEnum(vals.Get(rng.IntN(vals.Len())).Number())
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(rng.Uint32()))
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(int64(rng.Uint64()))
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(rng.Uint32())
	case protoreflect.Uint64Kind:
		return protoreflect.ValueOfUint64(rng.Uint64())
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(randomStrings[rng.IntN(len(randomStrings))])
	case protoreflect.BytesKind:
		b := make([]byte, rng.IntN(9))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return protoreflect.ValueOfBytes(b)
	}
	panic("no random value for " + fd.Kind().String())
}

func randomValue(rng *rand.Rand, depth int) *structpb.Value {
	switch k := rng.IntN(6); {
	case k == 0:
		return structpb.NewNullValue()
	case k == 1:
		return structpb.NewNumberValue([]float64{0, 1, -2.5, 443, 1e21, 1.5e-7, math.MaxFloat64, 0.1}[rng.IntN(8)])
	case k == 2:
		return structpb.NewStringValue(randomStrings[rng.IntN(len(randomStrings))])
	case k == 3:
		return structpb.NewBoolValue(rng.IntN(2) == 0)
	case k == 4 && depth < 4:
		return structpb.NewStructValue(randomStruct(rng, depth+1))
	case depth < 4:
		l := &structpb.ListValue{}
		for range rng.IntN(3) {
			l.Values = append(l.Values, randomValue(rng, depth+1))
		}
		return structpb.NewListValue(l)
	}
	return structpb.NewNumberValue(7)
}

func randomStruct(rng *rand.Rand, depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for range rng.IntN(4) {
		s.Fields[randomStrings[rng.IntN(len(randomStrings))]] = randomValue(rng, depth)
	}
	return s
}

// sameJSON checks that two JSON documents hold the same values.
func sameJSON(t *testing.T, got, want []byte) {
	t.Helper()
	decode := func(b []byte) any {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		require.NoError(t, d.Decode(&v), "%s", b)
		return v
	}
	if g, w := decode(got), decode(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON differs from protojson's\n got: %s\nwant: %s", got, want)
	}
}

// checkTranscode checks the JSON of m from its wire bytes against
// protojson's: the same values, and it reads back into the same message.
func checkTranscode(t *testing.T, w *cli.WireJSON, m proto.Message) {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	got, err := w.Append(nil, m.ProtoReflect().Descriptor(), b)
	require.NoError(t, err, "%v", m)
	want, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	require.NoError(t, err)
	sameJSON(t, got, want)
	// Read back as protojson's own output reads back (an Any's bytes are
	// the re-encoded message's, not the original's).
	back, wantBack := m.ProtoReflect().New().Interface(), m.ProtoReflect().New().Interface()
	require.NoError(t, protojson.Unmarshal(got, back), "%s", got)
	require.NoError(t, protojson.Unmarshal(want, wantBack))
	require.True(t, proto.Equal(wantBack, back), "read back differs:\n got: %v\nwant: %v", back, wantBack)
}

// Random flows and responses, every field kind and well-known type they
// have: the JSON written from the wire is protojson's.
func TestWireJSONIsProtojson(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 5))
	w := cli.NewWireJSON()
	for range 2000 {
		f := &flowpb.Flow{}
		fill(rng, f.ProtoReflect(), 0)
		checkTranscode(t, w, f)
	}
	for range 300 {
		r := &observerpb.GetFlowsResponse{}
		fill(rng, r.ProtoReflect(), 0)
		checkTranscode(t, w, r)
	}
}

// The flows Sluice's converter makes (pkg/flow's golden flows) and the
// handmade ones of the observe tests.
func TestWireJSONOfSluiceFlows(t *testing.T) {
	w := cli.NewWireJSON()
	raw, err := os.ReadFile("../flow/testdata/golden_flows.json")
	require.NoError(t, err)
	var golden map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &golden))
	require.NotEmpty(t, golden)
	for name, js := range golden {
		f := &flowpb.Flow{}
		require.NoError(t, protojson.Unmarshal(js, f), name)
		checkTranscode(t, w, f)
	}
	for _, f := range testFlows() {
		checkTranscode(t, w, f)
	}
}

// What it does not handle goes to protojson.
func TestWireJSONFallsBack(t *testing.T) {
	w := cli.NewWireJSON()
	md := (&flowpb.Flow{}).ProtoReflect().Descriptor()
	// Invalid UTF-8 in a string (protojson refuses it).
	nodeName := md.Fields().ByName("node_name").Number()
	bad := protowire.AppendTag(nil, nodeName, protowire.BytesType)
	bad = protowire.AppendBytes(bad, []byte{0xff, 'x'})
	_, err := w.Append(nil, md, bad)
	require.ErrorIs(t, err, cli.ErrNotTranscoded)
	// A singular field twice.
	twice := protowire.AppendTag(nil, nodeName, protowire.BytesType)
	twice = protowire.AppendString(twice, "a")
	twice = protowire.AppendTag(twice, nodeName, protowire.BytesType)
	twice = protowire.AppendString(twice, "b")
	_, err = w.Append(nil, md, twice)
	require.ErrorIs(t, err, cli.ErrNotTranscoded)
	// An Any of a type nobody registered.
	a := &anypb.Any{TypeUrl: "type.googleapis.com/nobody.Knows", Value: []byte{8, 1}}
	b, err := proto.Marshal(&flowpb.Flow{Extensions: a})
	require.NoError(t, err)
	_, err = w.Append(nil, md, b)
	require.ErrorIs(t, err, cli.ErrNotTranscoded)
}

// sluiceFlow is a flow as Sluice's converter makes them, for the
// benchmarks.
func sluiceFlow(b *testing.B) *flowpb.Flow {
	raw, err := os.ReadFile("../flow/testdata/golden_flows.json")
	require.NoError(b, err)
	var golden map[string]json.RawMessage
	require.NoError(b, json.Unmarshal(raw, &golden))
	f := &flowpb.Flow{}
	require.NoError(b, protojson.Unmarshal(golden["trace to a service, translated per packet"], f))
	return f
}

// -o json of a flow received: from the wire, and decoded then protojson.
func BenchmarkJSONFromWire(b *testing.B) {
	raw, err := proto.Marshal(sluiceFlow(b))
	require.NoError(b, err)
	w := cli.NewWireJSON()
	md := (&flowpb.Flow{}).ProtoReflect().Descriptor()
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		if out, err = w.Append(out[:0], md, raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJSONDecodedProtojson(b *testing.B) {
	raw, err := proto.Marshal(sluiceFlow(b))
	require.NoError(b, err)
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		f := &flowpb.Flow{}
		if err := proto.Unmarshal(raw, f); err != nil {
			b.Fatal(err)
		}
		if out, err = (protojson.MarshalOptions{UseProtoNames: true}).MarshalAppend(out[:0], f); err != nil {
			b.Fatal(err)
		}
	}
}
