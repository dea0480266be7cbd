package cli

import (
	"encoding/base64"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// wireJSON writes protobuf messages straight from their wire encoding as
// the JSON protojson writes with UseProtoNames (proto field names, 64-bit
// integers as strings, enums by name, well-known types in their JSON
// forms), without unmarshalling them: `sluice observe -o json` prints
// every flow the observer sends, and decoding each into a flowpb.Flow
// and encoding it again with protojson cost several times the rest of
// the CLI.
//
// Keys come in the order of the wire (the sender's field-number order)
// rather than protojson's declaration order; JSON objects are unordered.
// What it does not handle (a well-known type other than the ones flows
// carry, a singular field sent twice, an Any of an unknown type, invalid
// UTF-8) it reports with errNotTranscoded, and the caller falls back to
// protojson, which gives the answer or the error protojson gives.
type wireJSON struct {
	msgs map[protoreflect.FullName]*msgInfo
	// scratch holds each nesting level's field occurrences, reused.
	scratch [][]occurrence
	depth   int
}

// errNotTranscoded: use protojson for this message.
var errNotTranscoded = errors.New("not transcoded")

// maxJSONDepth bounds nesting (protojson's limit is 10000; flows nest a
// few levels).
const maxJSONDepth = 64

type msgInfo struct {
	md  protoreflect.MessageDescriptor
	wkt wellKnown
	// tooMany: more singular fields and oneofs than once has bits; such a
	// message is protojson's.
	tooMany bool
	// fields by number: dense up to len(dense), then sparse.
	dense  []*fieldInfo
	sparse map[protowire.Number]*fieldInfo
}

type fieldInfo struct {
	fd       protoreflect.FieldDescriptor
	key      string // `"name":`
	msg      *msgInfo
	enums    map[protoreflect.EnumNumber]string
	repeated bool
	// implicit: a singular scalar without presence (proto3), which
	// protojson leaves out when it holds its zero value.
	implicit bool
	// once marks what a message may hold once: the field (singular), or
	// its oneof; a bit of msgInfo.onceBits, 0 for a repeated field.
	once uint64
}

// wellKnown is a message with its own JSON form.
type wellKnown int

const (
	notWellKnown wellKnown = iota
	wktTimestamp
	wktWrapper
	wktAny
	wktStruct
	wktValue
	wktListValue
	wktUnsupported // another google.protobuf type: protojson's job
)

func newWireJSON() *wireJSON { return &wireJSON{msgs: map[protoreflect.FullName]*msgInfo{}} }

func (w *wireJSON) info(md protoreflect.MessageDescriptor) *msgInfo {
	if m, ok := w.msgs[md.FullName()]; ok {
		return m
	}
	m := &msgInfo{md: md}
	w.msgs[md.FullName()] = m
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		m.wkt = wktTimestamp
	case "google.protobuf.BoolValue", "google.protobuf.Int32Value", "google.protobuf.Int64Value",
		"google.protobuf.UInt32Value", "google.protobuf.UInt64Value", "google.protobuf.StringValue",
		"google.protobuf.BytesValue", "google.protobuf.FloatValue", "google.protobuf.DoubleValue":
		m.wkt = wktWrapper
	case "google.protobuf.Any":
		m.wkt = wktAny
	case "google.protobuf.Struct":
		m.wkt = wktStruct
	case "google.protobuf.Value":
		m.wkt = wktValue
	case "google.protobuf.ListValue":
		m.wkt = wktListValue
	default:
		if md.ParentFile().Package() == "google.protobuf" {
			m.wkt = wktUnsupported
		}
	}
	fields := md.Fields()
	maxDense := 0
	for i := range fields.Len() {
		if n := int(fields.Get(i).Number()); n < 256 {
			maxDense = max(maxDense, n+1)
		}
	}
	m.dense = make([]*fieldInfo, maxDense)
	bits := 0
	oneofs := map[protoreflect.FullName]uint64{}
	for i := range fields.Len() {
		fd := fields.Get(i)
		f := &fieldInfo{fd: fd, key: strconv.Quote(string(fd.Name())) + ":", repeated: fd.Cardinality() == protoreflect.Repeated}
		f.implicit = !f.repeated && !fd.HasPresence()
		switch o := fd.ContainingOneof(); {
		case f.repeated:
		case o != nil && oneofs[o.FullName()] != 0:
			f.once = oneofs[o.FullName()]
		case bits < 64:
			f.once = 1 << bits
			bits++
			if o != nil {
				oneofs[o.FullName()] = f.once
			}
		default:
			m.tooMany = true
		}
		if ed := fd.Enum(); ed != nil {
			f.enums = map[protoreflect.EnumNumber]string{}
			vals := ed.Values()
			for j := range vals.Len() {
				f.enums[vals.Get(j).Number()] = string(vals.Get(j).Name())
			}
		}
		if n := int(fd.Number()); n < maxDense {
			m.dense[n] = f
		} else {
			if m.sparse == nil {
				m.sparse = map[protowire.Number]*fieldInfo{}
			}
			m.sparse[fd.Number()] = f
		}
	}
	return m
}

func (m *msgInfo) field(n protowire.Number) *fieldInfo {
	if int(n) < len(m.dense) {
		return m.dense[n]
	}
	return m.sparse[n]
}

func (w *wireJSON) fieldMsg(f *fieldInfo) *msgInfo {
	if f.msg == nil {
		f.msg = w.info(f.fd.Message())
	}
	return f.msg
}

// Append appends the JSON of the message md encoded in b.
func (w *wireJSON) Append(out []byte, md protoreflect.MessageDescriptor, b []byte) ([]byte, error) {
	w.depth = 0
	return w.message(out, w.info(md), b)
}

// nextField splits the first field off a message's wire bytes: its
// number, wire type and value (a length-delimited value with its length).
func nextField(b []byte) (num protowire.Number, typ protowire.Type, value, rest []byte, err error) {
	num, typ, n := consumeTag(b)
	if n < 0 {
		return 0, 0, nil, nil, protowire.ParseError(n)
	}
	b = b[n:]
	if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
		return 0, 0, nil, nil, protowire.ParseError(n)
	}
	return num, typ, b[:n], b[n:], nil
}

// consumeTag is protowire.ConsumeTag refusing what proto.Unmarshal
// refuses: ConsumeTag takes field numbers up to 2^31-1, the wire format
// (and so Unmarshal) only up to MaxValidNumber (2^29-1).
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -2 // protowire's (internal) errCodeFieldNumber: ParseError says "invalid field number"
	}
	return num, typ, n
}

// occurrence is one field of a message on the wire: its value's bytes
// (a varint's or fixed value's too) and wire type.
type occurrence struct {
	f     *fieldInfo
	typ   protowire.Type
	value []byte
	done  bool
}

// scan lists a message's known fields in wire order; unknown fields are
// skipped, as protojson skips them. A singular field (or oneof) that comes
// twice is left to protojson: the last one wins, or messages merge.
func (w *wireJSON) scan(m *msgInfo, b []byte) ([]occurrence, error) {
	if m.tooMany {
		return nil, errNotTranscoded
	}
	for len(w.scratch) <= w.depth {
		w.scratch = append(w.scratch, nil)
	}
	occ := w.scratch[w.depth][:0]
	var seen uint64
	for len(b) > 0 {
		num, typ, v, rest, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = rest
		if f := m.field(num); f != nil {
			if seen&f.once != 0 {
				return nil, errNotTranscoded
			}
			seen |= f.once
			occ = append(occ, occurrence{f: f, typ: typ, value: v})
		}
	}
	w.scratch[w.depth] = occ
	return occ, nil
}

// message appends a message one level deeper than its parent: each level
// scans its fields into scratch of its own.
func (w *wireJSON) message(out []byte, m *msgInfo, b []byte) ([]byte, error) {
	if w.depth++; w.depth > maxJSONDepth {
		return out, errNotTranscoded
	}
	defer func() { w.depth-- }()
	if m.wkt != notWellKnown {
		return w.wellKnown(out, m, b)
	}
	out = append(out, '{')
	out, err := w.fields(out, m, b, false)
	if err != nil {
		return out, err
	}
	return append(out, '}'), nil
}

// fields appends a message's fields as object members (after a first
// member when more is set).
func (w *wireJSON) fields(out []byte, m *msgInfo, b []byte, more bool) ([]byte, error) {
	occ, err := w.scan(m, b)
	if err != nil {
		return out, err
	}
	for i := range occ {
		o := &occ[i]
		if o.done || o.f.implicit && isZero(o.f.fd.Kind(), o.typ, o.value) {
			continue
		}
		if more {
			out = append(out, ',')
		}
		more = true
		out = append(out, o.f.key...)
		if !o.f.repeated {
			if out, err = w.value(out, o.f, o.typ, o.value); err != nil {
				return out, err
			}
			continue
		}
		out = append(out, '[')
		first := true
		for j := i; j < len(occ); j++ {
			if occ[j].f != o.f {
				continue
			}
			occ[j].done = true
			if out, first, err = w.repeated(out, o.f, occ[j].typ, occ[j].value, first); err != nil {
				return out, err
			}
		}
		out = append(out, ']')
	}
	return out, nil
}

// repeated appends the elements of one occurrence of a repeated field:
// one, or a packed run of scalars.
func (w *wireJSON) repeated(out []byte, f *fieldInfo, typ protowire.Type, v []byte, first bool) ([]byte, bool, error) {
	var err error
	if typ != protowire.BytesType || f.fd.Kind() == protoreflect.StringKind || f.fd.Kind() == protoreflect.BytesKind ||
		f.fd.Kind() == protoreflect.MessageKind || f.fd.Kind() == protoreflect.GroupKind {
		if !first {
			out = append(out, ',')
		}
		out, err = w.value(out, f, typ, v)
		return out, false, err
	}
	// Packed scalars.
	packed, n := protowire.ConsumeBytes(v)
	if n < 0 {
		return out, first, protowire.ParseError(n)
	}
	elemType := protowire.VarintType
	switch f.fd.Kind() {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		elemType = protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		elemType = protowire.Fixed64Type
	}
	for len(packed) > 0 {
		n := protowire.ConsumeFieldValue(0, elemType, packed)
		if n < 0 {
			return out, first, protowire.ParseError(n)
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		if out, err = w.value(out, f, elemType, packed[:n]); err != nil {
			return out, first, err
		}
		packed = packed[n:]
	}
	return out, first, nil
}

// value appends one value of field f, encoded with wire type typ in v.
func (w *wireJSON) value(out []byte, f *fieldInfo, typ protowire.Type, v []byte) ([]byte, error) {
	kind := f.fd.Kind()
	switch kind {
	case protoreflect.MessageKind:
		if typ != protowire.BytesType {
			return out, errNotTranscoded
		}
		b, n := protowire.ConsumeBytes(v)
		if n < 0 {
			return out, protowire.ParseError(n)
		}
		return w.message(out, w.fieldMsg(f), b)
	case protoreflect.StringKind, protoreflect.BytesKind:
		if typ != protowire.BytesType {
			return out, errNotTranscoded
		}
		b, n := protowire.ConsumeBytes(v)
		if n < 0 {
			return out, protowire.ParseError(n)
		}
		if kind == protoreflect.BytesKind {
			return appendBase64(out, b), nil
		}
		return appendJSONString(out, b)
	case protoreflect.EnumKind:
		x, err := varint(typ, v)
		if err != nil {
			return out, err
		}
		if name, ok := f.enums[protoreflect.EnumNumber(int32(x))]; ok {
			if f.fd.Enum().FullName() == "google.protobuf.NullValue" {
				return append(out, "null"...), nil
			}
			out = append(out, '"')
			out = append(out, name...)
			return append(out, '"'), nil
		}
		return strconv.AppendInt(out, int64(int32(x)), 10), nil
	}
	return appendScalar(out, kind, typ, v)
}

// isZero reports whether v, a value of kind sent with wire type typ, is
// its kind's zero value as the decoder sees it (a 32-bit kind's varint
// truncated; a float by its bits, so -0 is not zero). Senders leave such
// values out, but one sent anyway is not printed, as protojson does not
// print it once decoded. A value of the wrong wire type is not zero: the
// caller reports it.
func isZero(kind protoreflect.Kind, typ protowire.Type, v []byte) bool {
	switch typ {
	case protowire.BytesType:
		if kind != protoreflect.StringKind && kind != protoreflect.BytesKind {
			return false
		}
		b, n := protowire.ConsumeBytes(v)
		return n >= 0 && len(b) == 0
	case protowire.VarintType:
		x, n := protowire.ConsumeVarint(v)
		switch kind {
		case protoreflect.Int32Kind, protoreflect.Uint32Kind, protoreflect.Sint32Kind, protoreflect.EnumKind:
			x = uint64(uint32(x))
		case protoreflect.BoolKind, protoreflect.Int64Kind, protoreflect.Uint64Kind, protoreflect.Sint64Kind:
		default:
			return false
		}
		return n >= 0 && x == 0
	case protowire.Fixed32Type:
		x, n := protowire.ConsumeFixed32(v)
		switch kind {
		case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
			return n >= 0 && x == 0
		}
	case protowire.Fixed64Type:
		x, n := protowire.ConsumeFixed64(v)
		switch kind {
		case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
			return n >= 0 && x == 0
		}
	}
	return false
}

func varint(typ protowire.Type, v []byte) (uint64, error) {
	if typ != protowire.VarintType {
		return 0, errNotTranscoded
	}
	x, n := protowire.ConsumeVarint(v)
	if n < 0 {
		return 0, protowire.ParseError(n)
	}
	return x, nil
}

// appendScalar appends a number or bool as protojson writes it.
func appendScalar(out []byte, kind protoreflect.Kind, typ protowire.Type, v []byte) ([]byte, error) {
	switch kind {
	case protoreflect.BoolKind, protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Uint32Kind,
		protoreflect.Uint64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		x, err := varint(typ, v)
		if err != nil {
			return out, err
		}
		switch kind {
		case protoreflect.BoolKind:
			return strconv.AppendBool(out, x != 0), nil
		case protoreflect.Int32Kind:
			return strconv.AppendInt(out, int64(int32(x)), 10), nil
		case protoreflect.Uint32Kind:
			return strconv.AppendUint(out, uint64(uint32(x)), 10), nil
		case protoreflect.Sint32Kind:
			return strconv.AppendInt(out, int64(int32(protowire.DecodeZigZag(x&math.MaxUint32))), 10), nil
		case protoreflect.Int64Kind:
			return quoted(strconv.AppendInt(append(out, '"'), int64(x), 10)), nil
		case protoreflect.Sint64Kind:
			return quoted(strconv.AppendInt(append(out, '"'), protowire.DecodeZigZag(x), 10)), nil
		default: // Uint64Kind
			return quoted(strconv.AppendUint(append(out, '"'), x, 10)), nil
		}
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		if typ != protowire.Fixed32Type {
			return out, errNotTranscoded
		}
		x, n := protowire.ConsumeFixed32(v)
		if n < 0 {
			return out, protowire.ParseError(n)
		}
		switch kind {
		case protoreflect.Fixed32Kind:
			return strconv.AppendUint(out, uint64(x), 10), nil
		case protoreflect.Sfixed32Kind:
			return strconv.AppendInt(out, int64(int32(x)), 10), nil
		default:
			return appendJSONFloat(out, float64(math.Float32frombits(x)), 32), nil
		}
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		if typ != protowire.Fixed64Type {
			return out, errNotTranscoded
		}
		x, n := protowire.ConsumeFixed64(v)
		if n < 0 {
			return out, protowire.ParseError(n)
		}
		switch kind {
		case protoreflect.Fixed64Kind:
			return quoted(strconv.AppendUint(append(out, '"'), x, 10)), nil
		case protoreflect.Sfixed64Kind:
			return quoted(strconv.AppendInt(append(out, '"'), int64(x), 10)), nil
		default:
			return appendJSONFloat(out, math.Float64frombits(x), 64), nil
		}
	}
	return out, errNotTranscoded
}

func quoted(out []byte) []byte { return append(out, '"') }

// appendJSONFloat formats a float as protojson does (encoding/json's
// rules; NaN and infinities as strings).
func appendJSONFloat(out []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(out, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(out, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(out, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	out = strconv.AppendFloat(out, f, format, -1, bits)
	if format == 'e' { // e-07 → e-7
		if n := len(out); n >= 4 && out[n-4] == 'e' && out[n-3] == '-' && out[n-2] == '0' {
			out[n-2] = out[n-1]
			out = out[:n-1]
		}
	}
	return out
}

func appendBase64(out []byte, b []byte) []byte {
	out = append(out, '"')
	out = base64.StdEncoding.AppendEncode(out, b)
	return append(out, '"')
}

// appendJSONString quotes s as protojson does: '"', '\\' and control
// characters escaped, nothing else; invalid UTF-8 is protojson's error.
func appendJSONString(out []byte, s []byte) ([]byte, error) {
	out = append(out, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && n == 1 {
				return out, errNotTranscoded
			}
			i += n
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		out = append(out, s[start:i]...)
		switch c {
		case '"', '\\':
			out = append(out, '\\', c)
		case '\b':
			out = append(out, '\\', 'b')
		case '\f':
			out = append(out, '\\', 'f')
		case '\n':
			out = append(out, '\\', 'n')
		case '\r':
			out = append(out, '\\', 'r')
		case '\t':
			out = append(out, '\\', 't')
		default:
			out = append(out, '\\', 'u', '0', '0', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		}
		i++
		start = i
	}
	out = append(out, s[start:]...)
	return append(out, '"'), nil
}

// wellKnown appends a well-known type in its JSON form.
func (w *wireJSON) wellKnown(out []byte, m *msgInfo, b []byte) ([]byte, error) {
	switch m.wkt {
	case wktTimestamp:
		return appendTimestamp(out, b)
	case wktWrapper:
		f := m.field(1)
		occ, err := w.scan(m, b)
		if err != nil {
			return out, err
		}
		switch len(occ) {
		case 0: // the zero value
			return appendZero(out, f.fd.Kind()), nil
		case 1:
			return w.value(out, f, occ[0].typ, occ[0].value)
		}
		return out, errNotTranscoded
	case wktAny:
		return w.anyMsg(out, m, b)
	case wktStruct:
		return w.structMsg(out, m, b)
	case wktValue:
		occ, err := w.scan(m, b)
		if err != nil || len(occ) != 1 {
			return out, errNotTranscoded // protojson: none of the oneof fields is set
		}
		return w.value(out, occ[0].f, occ[0].typ, occ[0].value)
	case wktListValue:
		out = append(out, '[')
		occ, err := w.scan(m, b)
		if err != nil {
			return out, err
		}
		for i, o := range occ {
			if i > 0 {
				out = append(out, ',')
			}
			if out, err = w.value(out, o.f, o.typ, o.value); err != nil {
				return out, err
			}
		}
		return append(out, ']'), nil
	}
	return out, errNotTranscoded
}

func appendZero(out []byte, kind protoreflect.Kind) []byte {
	switch kind {
	case protoreflect.BoolKind:
		return append(out, "false"...)
	case protoreflect.StringKind, protoreflect.BytesKind:
		return append(out, `""`...)
	case protoreflect.Int64Kind, protoreflect.Uint64Kind:
		return append(out, `"0"`...)
	}
	return append(out, '0')
}

// Timestamps protojson accepts: 0001-01-01 to 9999-12-31.
const (
	minTimestamp = -62135596800
	maxTimestamp = 253402300799
)

// appendTimestamp writes RFC 3339 in UTC with 0, 3, 6 or 9 fractional
// digits, as protojson does.
func appendTimestamp(out []byte, b []byte) ([]byte, error) {
	var secs int64
	var nanos int32
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return out, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.VarintType || num != 1 && num != 2 {
			return out, errNotTranscoded
		}
		x, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return out, protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 {
			secs = int64(x)
		} else {
			nanos = int32(x)
		}
	}
	if secs < minTimestamp || secs > maxTimestamp || nanos < 0 || nanos >= 1e9 {
		return out, errNotTranscoded
	}
	t := time.Unix(secs, int64(nanos)).UTC()
	out = append(out, '"')
	switch {
	case nanos == 0:
		out = t.AppendFormat(out, "2006-01-02T15:04:05")
	case nanos%1e6 == 0:
		out = t.AppendFormat(out, "2006-01-02T15:04:05.000")
	case nanos%1e3 == 0:
		out = t.AppendFormat(out, "2006-01-02T15:04:05.000000")
	default:
		out = t.AppendFormat(out, "2006-01-02T15:04:05.000000000")
	}
	return append(out, 'Z', '"'), nil
}

// anyMsg writes {"@type": url, ...}: the message's fields, or "value"
// for a well-known type.
func (w *wireJSON) anyMsg(out []byte, m *msgInfo, b []byte) ([]byte, error) {
	var url string
	var value []byte
	occ, err := w.scan(m, b)
	if err != nil {
		return out, err
	}
	for _, o := range occ {
		s, n := protowire.ConsumeBytes(o.value)
		if n < 0 || o.typ != protowire.BytesType {
			return out, errNotTranscoded
		}
		switch o.f.fd.Number() {
		case 1:
			url = string(s)
		case 2:
			value = s
		}
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		return out, errNotTranscoded // protojson's error, or its resolver's answer
	}
	inner := w.info(mt.Descriptor())
	out = append(out, `{"@type":`...)
	if out, err = appendJSONString(out, []byte(url)); err != nil {
		return out, err
	}
	if inner.wkt != notWellKnown {
		out = append(out, `,"value":`...)
		if out, err = w.wellKnown(out, inner, value); err != nil {
			return out, err
		}
		return append(out, '}'), nil
	}
	if out, err = w.fields(out, inner, value, true); err != nil {
		return out, err
	}
	return append(out, '}'), nil
}

// structMsg writes a Struct as an object, keys sorted as protojson sorts
// map keys.
func (w *wireJSON) structMsg(out []byte, m *msgInfo, b []byte) ([]byte, error) {
	occ, err := w.scan(m, b)
	if err != nil {
		return out, err
	}
	type entry struct {
		key   []byte
		value []byte // a Value message, nil if absent
	}
	entries := make([]entry, 0, len(occ))
	for _, o := range occ {
		e, n := protowire.ConsumeBytes(o.value)
		if n < 0 || o.typ != protowire.BytesType {
			return out, errNotTranscoded
		}
		var en entry
		for len(e) > 0 {
			num, typ, n := consumeTag(e)
			if n < 0 || typ != protowire.BytesType {
				return out, errNotTranscoded
			}
			e = e[n:]
			v, n := protowire.ConsumeBytes(e)
			if n < 0 {
				return out, protowire.ParseError(n)
			}
			e = e[n:]
			switch num {
			case 1:
				en.key = v
			case 2:
				en.value = v
			}
		}
		entries = append(entries, en)
	}
	slices.SortStableFunc(entries, func(a, b entry) int { return slices.Compare(a.key, b.key) })
	valueInfo := w.fieldMsg(m.field(1)).field(2)
	out = append(out, '{')
	for i, e := range entries {
		if i > 0 && slices.Equal(entries[i-1].key, e.key) {
			return out, errNotTranscoded // a key twice: the last wins
		}
		if i > 0 {
			out = append(out, ',')
		}
		if out, err = appendJSONString(out, e.key); err != nil {
			return out, err
		}
		out = append(out, ':')
		if out, err = w.message(out, w.fieldMsg(valueInfo), e.value); err != nil {
			return out, err
		}
	}
	return append(out, '}'), nil
}
