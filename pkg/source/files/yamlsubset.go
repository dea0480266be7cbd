package files

// A parser for the subset of YAML that manifests are written in, several
// times faster than the general one and with a fraction of its garbage. It
// only ever says "this is the document" or "not mine": anything outside
// the subset, and anything that would be an error, is left to the strict
// decoder (decodeDocument), which then gives the object or the exact error
// it always gave. So the subset can be small and must only be right.
//
// The subset, one document at a time:
//
//   - block mappings ("key: value") and block sequences ("- item"),
//     including a sequence at the indentation of its parent key and a
//     mapping that starts on its item's line ("- name: x");
//   - flow mappings and sequences ({a: b}, [x, y]) that close on the line
//     they open;
//   - plain scalars of printable ASCII on one line; single-quoted and
//     double-quoted scalars on one line (double-quoted without escapes);
//   - comments and blank lines.
//
// Refused (left to the strict decoder): tabs, carriage returns and other
// control characters, non-ASCII bytes, block scalars (| and >), anchors,
// aliases, tags, directives, explicit keys (?), multi-line scalars and
// flow collections, trailing commas, duplicate keys, and every plain
// scalar whose YAML 1.1 type is not plainly a string, a decimal integer,
// a boolean or null (see plainClass).

// ykind is the kind of a parsed node.
type ykind uint8

const (
	yPlain  ykind = iota + 1 // plain scalar: its type comes from plainClass
	yQuoted                  // quoted scalar: a string
	yMap                     // children alternate key, value
	ySeq
	yNull // an empty value ("key:" with nothing after it)
)

// ynode is one node of a document. Nodes live in one slice per parser,
// reused from document to document; children are linked by index.
type ynode struct {
	kind ykind
	// squote: a single-quoted scalar holding '' (an escaped quote).
	squote bool
	// start, end: a scalar's text in the document (without quotes).
	start, end int32
	// first is the first child, next the next sibling; -1 when none.
	first, next int32
	n           int32 // number of children
}

// yparser parses one document. Methods return false when the document is
// outside the subset.
type yparser struct {
	data  []byte
	pos   int // read offset
	nodes []ynode
}

// parse parses data into p.nodes and returns the root.
func (p *yparser) parse(data []byte) (int32, bool) {
	p.data, p.pos, p.nodes = data, 0, p.nodes[:0]
	if len(data) > 1<<30 {
		return -1, false
	}
	ind, ok := p.nextContent()
	if !ok || ind != 0 {
		return -1, false
	}
	root, ok := p.blockNode(0)
	if !ok {
		return -1, false
	}
	// Everything was consumed: a line indented less than the root would
	// have ended it early.
	if ind, ok := p.nextContent(); !ok || ind != -1 {
		return -1, false
	}
	return root, true
}

func (p *yparser) add(n ynode) int32 {
	n.first, n.next = -1, -1
	p.nodes = append(p.nodes, n)
	return int32(len(p.nodes) - 1)
}

// appendChild links child as the last child of parent; last is parent's
// current last child (-1 if none). It returns the new last child.
func (p *yparser) appendChild(parent, last, child int32) int32 {
	if last < 0 {
		p.nodes[parent].first = child
	} else {
		p.nodes[last].next = child
	}
	p.nodes[parent].n++
	return child
}

// nextContent moves pos, which is at the start of a line, to the start of
// the next line that holds more than blanks and a comment, and returns its
// indentation: -1 at the end of the document. A tab or carriage return in
// a skipped or indented line is outside the subset.
func (p *yparser) nextContent() (int, bool) {
	for p.pos < len(p.data) {
		ind := 0
		i := p.pos
		for i < len(p.data) && p.data[i] == ' ' {
			i++
			ind++
		}
		if i == len(p.data) {
			p.pos = i
			return -1, true
		}
		switch c := p.data[i]; c {
		case '\n':
			p.pos = i + 1
			continue
		case '#':
			j := i
			for j < len(p.data) && p.data[j] != '\n' {
				if !commentByte(p.data[j]) {
					return 0, false
				}
				j++
			}
			p.pos = min(j+1, len(p.data))
			continue
		case '\t', '\r':
			return 0, false
		case '%':
			return 0, false // a directive
		case '.':
			if i+2 < len(p.data) && p.data[i+1] == '.' && p.data[i+2] == '.' && ind == 0 {
				return 0, false // a document end marker
			}
		}
		return ind, true
	}
	return -1, true
}

// commentByte reports whether a comment may hold c: what the strict
// parser takes in a comment is its business, but a byte outside printable
// ASCII might be an encoding problem it reports.
func commentByte(c byte) bool { return c >= 0x20 && c < 0x7f }

// column is pos's column in its line.
func (p *yparser) column() int {
	i := p.pos
	for i > 0 && p.data[i-1] != '\n' {
		i--
	}
	return p.pos - i
}

// skipSpaces moves pos over spaces within the line.
func (p *yparser) skipSpaces() {
	for p.pos < len(p.data) && p.data[p.pos] == ' ' {
		p.pos++
	}
}

// endOfLine accepts spaces and a comment up to the end of the line and
// moves pos to the start of the next line. A comment must follow a space.
func (p *yparser) endOfLine() bool {
	start := p.pos
	p.skipSpaces()
	if p.pos == len(p.data) {
		return true
	}
	switch p.data[p.pos] {
	case '\n':
		p.pos++
		return true
	case '#':
		if p.pos == start && start > 0 && p.data[start-1] != ' ' {
			return false
		}
		for p.pos < len(p.data) && p.data[p.pos] != '\n' {
			if !commentByte(p.data[p.pos]) {
				return false
			}
			p.pos++
		}
		if p.pos < len(p.data) {
			p.pos++
		}
		return true
	}
	return false
}

// atSequenceItem reports whether pos (at content) starts a block sequence
// item: "-" followed by a space or the end of the line.
func (p *yparser) atSequenceItem() bool {
	if p.pos >= len(p.data) || p.data[p.pos] != '-' {
		return false
	}
	return p.pos+1 == len(p.data) || p.data[p.pos+1] == ' ' || p.data[p.pos+1] == '\n'
}

// blockNode parses the block node whose first line starts at pos, indented
// by ind: a sequence or a mapping (a scalar alone on its lines is outside
// the subset).
func (p *yparser) blockNode(ind int) (int32, bool) {
	p.pos += ind
	if p.atSequenceItem() {
		return p.blockSequence(ind)
	}
	return p.blockMapping(ind)
}

// blockSequence parses a block sequence whose items are at column ind;
// pos is at the first item's "-".
func (p *yparser) blockSequence(ind int) (int32, bool) {
	seq := p.add(ynode{kind: ySeq})
	last := int32(-1)
	for {
		// pos is at "-".
		p.pos++
		var item int32
		var ok bool
		p.skipSpaces()
		if p.pos == len(p.data) || p.data[p.pos] == '\n' || p.data[p.pos] == '#' {
			// "-" alone: the item is on the lines below, or empty.
			if !p.endOfLine() {
				return -1, false
			}
			next, ok := p.nextContent()
			if !ok {
				return -1, false
			}
			if next > ind {
				item, ok = p.blockNode(next)
			} else {
				item, ok = p.add(ynode{kind: yNull}), true
			}
			if !ok {
				return -1, false
			}
		} else {
			item, ok = p.inlineItem(ind, p.column())
			if !ok {
				return -1, false
			}
		}
		last = p.appendChild(seq, last, item)
		more, ok := p.nextAt(ind)
		if !ok {
			return -1, false
		}
		if !more {
			return seq, true
		}
		if !p.atSequenceItem() {
			// A mapping key at the sequence's indentation: the sequence
			// was its parent's value, and the parent continues.
			p.pos -= ind
			return seq, true
		}
	}
}

// nextAt moves to the next content line and reports whether it is
// indented by ind, with pos then at its content; when it is indented
// less (or there is none), pos is at its start. Deeper is outside the
// subset: a continuation, or bad indentation.
func (p *yparser) nextAt(ind int) (more, ok bool) {
	next, ok := p.nextContent()
	if !ok || next > ind {
		return false, false
	}
	if next < ind {
		return false, true
	}
	p.pos += ind
	return true, true
}

// inlineItem parses what follows "- " on the line of an item of a
// sequence at column ind, starting at column col: a mapping that starts
// there, a flow collection or a scalar. On return pos is at the start of
// the next line.
func (p *yparser) inlineItem(ind, col int) (int32, bool) {
	switch c := p.data[p.pos]; {
	case c == '{' || c == '[':
		n, ok := p.flowNode()
		if !ok || !p.endOfLine() {
			return -1, false
		}
		return n, p.continuationFree(ind)
	case c == '-':
		return -1, false // "- - x": a nested compact sequence
	}
	if p.looksLikeKey() {
		return p.blockMapping(col)
	}
	n, ok := p.scalarValue()
	if !ok {
		return -1, false
	}
	return n, p.continuationFree(ind)
}

// continuationFree reports whether the next content line is indented no
// deeper than ind, so that the scalar or flow collection just read did not
// continue on it.
func (p *yparser) continuationFree(ind int) bool {
	save := p.pos
	next, ok := p.nextContent()
	p.pos = save
	return ok && next <= ind
}

// looksLikeKey reports whether the line from pos holds a mapping key: a
// quoted or plain scalar followed by ":" and a space or the end of the
// line. It does not move pos.
func (p *yparser) looksLikeKey() bool {
	save := p.pos
	defer func() { p.pos = save }()
	if _, ok := p.key(); !ok {
		return false
	}
	return true
}

// key reads a mapping key and the ":" after it, leaving pos after the
// colon. Keys are plain scalars without spaces, or quoted scalars.
func (p *yparser) key() (int32, bool) {
	var n int32
	switch c := p.data[p.pos]; c {
	case '\'', '"':
		var ok bool
		if n, ok = p.quoted(); !ok {
			return -1, false
		}
	default:
		start := p.pos
		if !plainFirst(c) {
			return -1, false
		}
		for p.pos < len(p.data) {
			c := p.data[p.pos]
			if c == ':' && (p.pos+1 == len(p.data) || p.data[p.pos+1] == ' ' || p.data[p.pos+1] == '\n') {
				break
			}
			if !keyByte(c) {
				return -1, false
			}
			p.pos++
		}
		n = p.add(ynode{kind: yPlain, start: int32(start), end: int32(p.pos)})
	}
	if p.pos == len(p.data) || p.data[p.pos] != ':' {
		return -1, false
	}
	p.pos++
	if p.pos < len(p.data) && p.data[p.pos] != ' ' && p.data[p.pos] != '\n' {
		return -1, false
	}
	return n, true
}

// blockMapping parses a block mapping whose keys are at column ind; pos is
// at the first key.
func (p *yparser) blockMapping(ind int) (int32, bool) {
	m := p.add(ynode{kind: yMap})
	last := int32(-1)
	for {
		k, ok := p.key()
		if !ok {
			return -1, false
		}
		if p.duplicateKey(m, k) {
			return -1, false
		}
		last = p.appendChild(m, last, k)
		v, ok := p.mappingValue(ind)
		if !ok {
			return -1, false
		}
		last = p.appendChild(m, last, v)
		more, ok := p.nextAt(ind)
		if !ok {
			return -1, false
		}
		if !more {
			return m, true
		}
		if p.atSequenceItem() {
			return -1, false // a sequence item among the keys
		}
	}
}

// mappingValue parses the value after "key:" of a mapping at column ind.
// On return pos is at the start of a line.
func (p *yparser) mappingValue(ind int) (int32, bool) {
	p.skipSpaces()
	if p.pos == len(p.data) || p.data[p.pos] == '\n' || p.data[p.pos] == '#' {
		if !p.endOfLine() {
			return -1, false
		}
		save := p.pos
		next, ok := p.nextContent()
		if !ok {
			return -1, false
		}
		switch {
		case next > ind:
			return p.blockNode(next)
		case next == ind:
			p.pos += ind
			if p.atSequenceItem() {
				return p.blockSequence(ind)
			}
		}
		p.pos = save
		return p.add(ynode{kind: yNull}), true
	}
	var n int32
	var ok bool
	switch p.data[p.pos] {
	case '{', '[':
		n, ok = p.flowNode()
	default:
		n, ok = p.scalarValue()
		if ok {
			return n, p.continuationFree(ind)
		}
		return -1, false
	}
	if !ok || !p.endOfLine() {
		return -1, false
	}
	return n, p.continuationFree(ind)
}

// scalarValue reads a block scalar value (quoted or plain) up to the end
// of the line and moves pos to the next line.
func (p *yparser) scalarValue() (int32, bool) {
	c := p.data[p.pos]
	if c == '\'' || c == '"' {
		n, ok := p.quoted()
		if !ok || !p.endOfLine() {
			return -1, false
		}
		return n, true
	}
	if !plainFirst(c) {
		return -1, false
	}
	start := p.pos
	end := p.pos
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		if c == '\n' {
			break
		}
		if c == ' ' {
			if p.pos+1 < len(p.data) && p.data[p.pos+1] == '#' {
				break // a comment
			}
			p.pos++
			continue
		}
		if c == ':' && (p.pos+1 == len(p.data) || p.data[p.pos+1] == ' ' || p.data[p.pos+1] == '\n') {
			return -1, false // "a: b: c" is an error
		}
		if c < ' ' || c >= 0x7f {
			return -1, false
		}
		p.pos++
		end = p.pos
	}
	n := p.add(ynode{kind: yPlain, start: int32(start), end: int32(end)})
	if !p.endOfLine() {
		return -1, false
	}
	return n, true
}

// plainFirst reports whether a plain scalar of the subset may start with
// c. Indicators, signs and dots are excluded (the latter two would make
// plainClass's work harder for no gain).
func plainFirst(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '/' || c == '~'
}

// keyByte reports whether a plain key, or a plain scalar in a flow
// collection, of the subset may hold c: letters, digits and the
// punctuation of names, label keys and addresses; no character that means
// something somewhere in YAML.
func keyByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '.', '_', '/', '-', '~', '+', '=':
		return true
	}
	return false
}

// quoted reads a single- or double-quoted scalar that ends on its line.
func (p *yparser) quoted() (int32, bool) {
	q := p.data[p.pos]
	p.pos++
	start := p.pos
	squote := false
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == q:
			if q == '\'' && p.pos+1 < len(p.data) && p.data[p.pos+1] == '\'' {
				squote = true
				p.pos += 2
				continue
			}
			n := p.add(ynode{kind: yQuoted, squote: squote, start: int32(start), end: int32(p.pos)})
			p.pos++
			return n, true
		case c == '\\' && q == '"':
			return -1, false // escapes
		case c < ' ' || c >= 0x7f:
			return -1, false // a line break (multi-line scalar) or non-ASCII
		}
		p.pos++
	}
	return -1, false
}

// flowNode reads a flow mapping or sequence that closes on its line; pos
// is at its opening bracket and ends after the closing one.
func (p *yparser) flowNode() (int32, bool) {
	open := p.data[p.pos]
	closer := byte('}')
	kind := yMap
	if open == '[' {
		closer, kind = ']', ySeq
	}
	n := p.add(ynode{kind: kind})
	last := int32(-1)
	p.pos++
	p.skipSpaces()
	if p.pos < len(p.data) && p.data[p.pos] == closer {
		p.pos++
		return n, true
	}
	for {
		if kind == yMap {
			k, ok := p.flowScalar(true)
			if !ok || p.pos+1 >= len(p.data) || p.data[p.pos] != ':' || p.data[p.pos+1] != ' ' {
				return -1, false
			}
			if p.duplicateKey(n, k) {
				return -1, false
			}
			p.pos++
			p.skipSpaces()
			last = p.appendChild(n, last, k)
		}
		v, ok := p.flowValue()
		if !ok {
			return -1, false
		}
		last = p.appendChild(n, last, v)
		p.skipSpaces()
		if p.pos == len(p.data) {
			return -1, false
		}
		switch p.data[p.pos] {
		case closer:
			p.pos++
			return n, true
		case ',':
			p.pos++
			p.skipSpaces()
			if p.pos < len(p.data) && p.data[p.pos] == closer {
				return -1, false // a trailing comma
			}
		default:
			return -1, false
		}
	}
}

// flowValue reads a value inside a flow collection.
func (p *yparser) flowValue() (int32, bool) {
	if p.pos == len(p.data) {
		return -1, false
	}
	if c := p.data[p.pos]; c == '{' || c == '[' {
		return p.flowNode()
	}
	return p.flowScalar(false)
}

// flowScalar reads a quoted scalar or a plain scalar inside a flow
// collection, where ",[]{}" end it. A plain key stops at ":"; anywhere
// else a ":" is left to the strict decoder, as is a plain scalar with
// spaces inside.
func (p *yparser) flowScalar(key bool) (int32, bool) {
	if p.pos == len(p.data) {
		return -1, false
	}
	c := p.data[p.pos]
	if c == '\'' || c == '"' {
		return p.quoted()
	}
	if !plainFirst(c) {
		return -1, false
	}
	start := p.pos
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		if c == ',' || c == ']' || c == '}' || c == ' ' {
			break
		}
		if c == ':' && key {
			break
		}
		if !keyByte(c) {
			return -1, false
		}
		p.pos++
	}
	end := p.pos
	// Spaces before a closer or a comma are fine; before more text they
	// would make a plain scalar with a space in it.
	save := p.pos
	p.skipSpaces()
	if p.pos < len(p.data) {
		if c := p.data[p.pos]; c != ',' && c != ']' && c != '}' && !(key && c == ':') {
			return -1, false
		}
	}
	if key && p.pos != save {
		return -1, false // "a : b"
	}
	return p.add(ynode{kind: yPlain, start: int32(start), end: int32(end)}), true
}

// duplicateKey reports whether mapping m already has a key with the text
// of key k. Keys are compared as written, quotes removed, so 'a' and a
// are the same key, as for the strict decoder.
func (p *yparser) duplicateKey(m, k int32) bool {
	kt := p.text(k)
	for c := p.nodes[m].first; c >= 0; c = p.nodes[c].next {
		if p.text(c) == kt {
			return true
		}
		c = p.nodes[c].next // skip the value
		if c < 0 {
			break
		}
	}
	return false
}

// text is a scalar node's text, with a single-quoted scalar's ” made '.
// It allocates only for those.
func (p *yparser) text(n int32) string {
	nd := &p.nodes[n]
	b := p.data[nd.start:nd.end]
	if !nd.squote {
		return unsafeString(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		out = append(out, b[i])
		if b[i] == '\'' {
			i++
		}
	}
	return string(out)
}

// plain classes, by YAML 1.1 resolution (go.yaml.in/yaml/v2's resolve,
// which the strict decoder uses): what a plain scalar's JSON would be.
type plainKind uint8

const (
	plainOther  plainKind = iota // outside the subset: floats, timestamps, signed or based ints, ...
	plainString                  // a string
	plainInt                     // a decimal integer that fits int64
	plainTrue
	plainFalse
	plainNull
)

// plainClass resolves a plain scalar as YAML 1.1 does, where that is
// plain to see: words starting with a letter are strings unless they are
// one of the boolean and null words; "0" and decimal integers without a
// leading zero are integers; dotted numbers with two dots or more (IPv4
// addresses, optionally with a /prefix) are strings, since they can be
// neither numbers nor timestamps. Everything else starting with a digit,
// and "~", which is null, are resolved as strings or null here too only
// when certain; the rest is plainOther.
func plainClass(s string) plainKind {
	if s == "" {
		return plainNull
	}
	switch s {
	case "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON":
		return plainTrue
	case "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF":
		return plainFalse
	case "~", "null", "Null", "NULL":
		return plainNull
	}
	c := s[0]
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '/' || c == '~' {
		return plainString
	}
	if c < '0' || c > '9' {
		return plainOther
	}
	// Led by a digit: an integer, a float, a timestamp or a string.
	lead := 0
	for lead < len(s) && s[lead] >= '0' && s[lead] <= '9' {
		lead++
	}
	if lead == len(s) {
		if len(s) > 1 && s[0] == '0' || len(s) > 18 {
			return plainOther // octal, or perhaps past int64
		}
		return plainInt
	}
	if lead == 4 && s[4] == '-' {
		return plainOther // perhaps a timestamp (YYYY-...)
	}
	// Integers (in any base Go's ParseInt reads, underscores dropped) and
	// floats (decimal only: yaml.v2 checks a pattern first) are made of
	// numericByte only, with a sign only first or after an exponent's e:
	// anything else is a string, such as 500m, 128Mi or a UID.
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !numericByte(c) {
			return plainString
		}
		if (c == '-' || c == '+') && s[i-1] != 'e' && s[i-1] != 'E' {
			return plainString
		}
	}
	// [0-9]+(\.[0-9]+){2,}(/[0-9]+)?
	dots, i := 0, 0
	for {
		j := i
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i {
			return plainOther
		}
		if j == len(s) {
			break
		}
		switch s[j] {
		case '.':
			dots++
			i = j + 1
			continue
		case '/':
			if dots < 2 {
				return plainOther
			}
			k := j + 1
			for k < len(s) && s[k] >= '0' && s[k] <= '9' {
				k++
			}
			if k == j+1 || k != len(s) {
				return plainOther
			}
			return plainString
		}
		return plainOther
	}
	if dots < 2 {
		return plainOther
	}
	return plainString
}

// numericByte reports whether some YAML 1.1 integer or float may hold c.
func numericByte(c byte) bool {
	switch {
	case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		return true
	}
	switch c {
	case 'x', 'X', 'o', 'O', '.', '_', '+', '-':
		return true
	}
	return false
}
