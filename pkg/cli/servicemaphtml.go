package cli

import (
	"cmp"
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
)

// The HTML map's layout, in SVG user units (pixels at 100% zoom): a
// column per namespace (peers outside the cluster left, nodes right).
const (
	svgNodeW     = 190
	svgNodeH     = 44
	svgColGap    = 170 // between columns: room for edge labels
	svgRowGap    = 40  // between rows: a corridor for edges that skip columns
	svgMargin    = 30
	svgHeaderH   = 80 // column titles, and a corridor above the first row
	svgLoopReach = 70 // how far same-column edges bulge right
	svgCorner    = 8  // radius of routed edges' corners
	svgMaxName   = 24 // runes of a name shown in a box; the tooltip has all
)

// layout places a map's nodes.
type layout struct {
	columns []string
	pos     map[string]point // top-left corner of each node's box, by ID
	col     map[string]int
	rows    int // rows of the longest column
	width   int
	height  int
	// corridorUse counts the edges routed along each corridor, to spread
	// them.
	corridorUse map[int]int
}

type point struct{ x, y int }

// layoutMap places the nodes in their columns. Rows start in name order;
// a few sweeps then sort each column by the mean row of each node's
// neighbours in other columns (the barycentre heuristic of layered graph
// drawing), which straightens edges and removes most crossings.
func layoutMap(m *serviceMap) *layout {
	l := &layout{pos: map[string]point{}, col: map[string]int{}, corridorUse: map[int]int{}}
	var cols [][]*mapNode
	for _, n := range m.Nodes { // sorted by column, then name
		if _, c := n.column(); len(l.columns) == 0 || l.columns[len(l.columns)-1] != c {
			l.columns = append(l.columns, c)
			cols = append(cols, nil)
		}
		i := len(cols) - 1
		cols[i] = append(cols[i], n)
		l.col[n.ID] = i
	}
	neighbours := map[string][]string{}
	for _, e := range m.Edges {
		if l.col[e.From] != l.col[e.To] {
			neighbours[e.From] = append(neighbours[e.From], e.To)
			neighbours[e.To] = append(neighbours[e.To], e.From)
		}
	}
	row := map[string]int{}
	for _, col := range cols {
		for i, n := range col {
			row[n.ID] = i
		}
	}
	for range 4 {
		for _, col := range cols {
			key := map[string]float64{}
			for i, n := range col {
				key[n.ID] = float64(i)
				if nb := neighbours[n.ID]; len(nb) > 0 {
					sum := 0
					for _, id := range nb {
						sum += row[id]
					}
					key[n.ID] = float64(sum) / float64(len(nb))
				}
			}
			slices.SortStableFunc(col, func(a, b *mapNode) int { return cmp.Compare(key[a.ID], key[b.ID]) })
			for i, n := range col {
				row[n.ID] = i
			}
		}
	}
	for i, col := range cols {
		for j, n := range col {
			l.pos[n.ID] = point{svgMargin + i*(svgNodeW+svgColGap), svgHeaderH + j*(svgNodeH+svgRowGap)}
		}
		l.rows = max(l.rows, len(col))
	}
	l.width = 2*svgMargin + len(l.columns)*svgNodeW + max(len(l.columns)-1, 0)*svgColGap + svgLoopReach
	l.height = svgHeaderH + l.rows*(svgNodeH+svgRowGap) + svgMargin
	return l
}

// edgePath returns the SVG path of a pair's edge and places for its
// label, best first; lane spreads edges that share a corridor.
//
//   - Between neighbouring columns, a curve from the facing side of one
//     box to the facing side of the other. The two directions between the
//     same nodes are drawn a few units apart.
//   - Between columns further apart, a path with rounded corners that
//     leaves into the gap beside its column, runs along a corridor between
//     two rows (no box stands there) and enters from the gap beside the
//     other column, so it never crosses a box. The corridor is the one
//     nearest halfway between the ends, traded against how many edges
//     already use it.
//   - Within a column, a curve out of and into the right sides; a node's
//     traffic to itself is a loop on its right side.
func (l *layout) edgePath(p *pair, lane int) (d string, labels []point) {
	a, b := l.pos[p.from.ID], l.pos[p.to.ID]
	ca, cb := l.col[p.from.ID], l.col[p.to.ID]
	mid := svgNodeH / 2
	// along offers label places around at, stepping by dx, dy.
	along := func(at point, dx, dy int) []point {
		out := []point{at}
		for i := 1; i <= 4; i++ {
			out = append(out, point{at.x + i*dx, at.y + i*dy}, point{at.x - i*dx, at.y - i*dy})
		}
		return out
	}
	switch {
	case p.from.ID == p.to.ID:
		x, y := a.x+svgNodeW, a.y
		d = fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x, y+svgNodeH/4, x+svgLoopReach/2, y-svgNodeH/2, x+svgLoopReach/2, y+svgNodeH+svgNodeH/2, x, y+3*svgNodeH/4)
		return d, along(point{x + svgLoopReach/2 + 4, y + mid}, 0, 13)
	case ca == cb:
		x := a.x + svgNodeW
		sy, ey := a.y+mid-4, b.y+mid+4
		reach := svgLoopReach/2 + abs(ey-sy)/6
		d = fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x, sy, x+reach, sy, x+reach, ey, x, ey)
		return d, along(point{x + 3*reach/4 + 4, (sy + ey) / 2}, 0, 13)
	}
	sx, ex, dir := a.x+svgNodeW, b.x, 1
	off := -5
	if ca > cb {
		sx, ex, dir = a.x, b.x+svgNodeW, -1
		off = 5
	}
	if abs(ca-cb) == 1 {
		sy, ey := a.y+mid+off, b.y+mid+off
		dx := (ex - sx) / 2
		d = fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", sx, sy, sx+dx, sy, ex-dx, ey, ex, ey)
		// Along the curve: its slope is about that of the chord.
		return d, along(point{(sx + ex) / 2, (sy+ey)/2 + off}, 10*dir, (ey-sy)*10/max(abs(ex-sx), 1)*dir+1)
	}
	off = (lane%5 - 2) * 4
	sy, ey := a.y+mid+off, b.y+mid+off
	g1, g2 := sx+dir*svgColGap/2+off, ex-dir*svgColGap/2+off
	// Corridor k runs above row k, for k in 0..rows.
	corridor := func(k int) int { return svgHeaderH + k*(svgNodeH+svgRowGap) - svgRowGap/2 }
	cost := func(k int) int { return abs(corridor(k)-(sy+ey)/2) + 30*l.corridorUse[k] }
	k := 0
	for j := 1; j <= l.rows; j++ {
		if cost(j) < cost(k) {
			k = j
		}
	}
	l.corridorUse[k]++
	cy := corridor(k) + off
	d = roundedPath([]point{{sx, sy}, {g1, sy}, {g1, cy}, {g2, cy}, {g2, ey}, {ex, ey}}, svgCorner)
	return d, along(point{(g1 + g2) / 2, cy + 3}, 45, 0)
}

// roundedPath draws a polyline of horizontal and vertical segments with
// its corners rounded to radius r (less on short segments).
func roundedPath(pts []point, r int) string {
	toward := func(from, to point, n int) point {
		return point{from.x + sign(to.x-from.x)*n, from.y + sign(to.y-from.y)*n}
	}
	length := func(a, b point) int { return abs(a.x-b.x) + abs(a.y-b.y) }
	var b strings.Builder
	fmt.Fprintf(&b, "M%d,%d", pts[0].x, pts[0].y)
	for i := 1; i < len(pts)-1; i++ {
		prev, at, next := pts[i-1], pts[i], pts[i+1]
		in := toward(at, prev, min(r, length(prev, at)/2))
		out := toward(at, next, min(r, length(at, next)/2))
		fmt.Fprintf(&b, " L%d,%d Q%d,%d %d,%d", in.x, in.y, at.x, at.y, out.x, out.y)
	}
	last := pts[len(pts)-1]
	fmt.Fprintf(&b, " L%d,%d", last.x, last.y)
	return b.String()
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// labelPlacer keeps edge labels from covering each other.
type labelPlacer struct{ taken []box }

type box struct{ x0, y0, x1, y1 int }

// place returns the first of places (label centres) where the lines fit
// without overlapping a label placed before, or the first if none does,
// and the box the label takes there.
// Sizes are estimates for the 10px labels: 6 units a rune, 12 a line.
func (lp *labelPlacer) place(places []point, lines []string) (point, box) {
	w := 0
	for _, l := range lines {
		w = max(w, len([]rune(l))*6)
	}
	// The first line's baseline is (len-1)*6 above the centre (see
	// writeHTML); a line rises 10 above its baseline and descends 3.
	around := func(p point) box {
		half := (len(lines) - 1) * 6
		return box{p.x - w/2 - 2, p.y - half - 10, p.x + w/2 + 2, p.y + half + 3}
	}
	at := places[0]
	for _, p := range places {
		b := around(p)
		if !slices.ContainsFunc(lp.taken, func(t box) bool { return b.x0 < t.x1 && t.x0 < b.x1 && b.y0 < t.y1 && t.y0 < b.y1 }) {
			at = p
			break
		}
	}
	lp.taken = append(lp.taken, around(at))
	return at, around(at)
}

// shorten cuts a name to n runes with an ellipsis.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// nodeFill is a node's background by kind.
func nodeFill(n *mapNode) string {
	switch n.Kind {
	case kindService:
		return "#e6fffa"
	case kindWorld, kindCIDR, kindIP, kindUnknown:
		return "#fffaf0"
	case kindHost, kindRemoteNode:
		return "#f7fafc"
	}
	return "#ebf4ff"
}

const mapPageStyle = `
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #1a202c; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.summary { color: #4a5568; margin: 0 0 12px; }
.legend span { margin-right: 18px; }
.legend i { display: inline-block; width: 28px; height: 0; vertical-align: middle; margin-right: 6px; border-top: 2px solid; }
.scroll { overflow: auto; border: 1px solid #e2e8f0; border-radius: 6px; margin: 8px 0 24px; }
svg text { font-size: 12px; }
svg .col { font-size: 13px; font-weight: 600; fill: #2d3748; }
svg .kind { font-size: 10px; fill: #718096; }
svg .edge path { fill: none; stroke-width: 1.6; }
svg .edge:hover path { stroke-width: 3.5; }
svg .label text { font-size: 10px; }
svg .label rect { fill: #fff; fill-opacity: 0.9; }
svg .node rect { stroke: #a0aec0; }
svg .node:hover rect { stroke: #2b6cb0; stroke-width: 2; }
table { border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 4px 12px 4px 0; border-bottom: 1px solid #edf2f7; }
td.n { text-align: right; }
tr.dropped td { color: ` + colorDropped + `; }
`

// writeHTML writes a page with the map as an inline SVG, drawn by
// layoutMap, and the edges as a table. It needs no script, stylesheet or
// font from anywhere: it can be mailed or opened offline.
func (m *serviceMap) writeHTML(w io.Writer) error {
	var b strings.Builder
	esc := html.EscapeString
	l := layoutMap(m)
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Sluice service map</title>\n")
	b.WriteString("<style>" + mapPageStyle + "</style>\n</head>\n<body>\n")
	b.WriteString("<h1>Sluice service map</h1>\n")
	fmt.Fprintf(&b, "<p class=\"summary\">%s.</p>\n", esc(m.summary()))
	fmt.Fprintf(&b, "<p class=\"legend\"><span><i style=\"border-color:%s\"></i>forwarded</span><span><i style=\"border-color:%s\"></i>some dropped</span><span><i style=\"border-color:%s;border-top-style:dashed\"></i>all dropped</span></p>\n",
		colorForwarded, colorSomeDrops, colorDropped)

	b.WriteString("<div class=\"scroll\">\n")
	fmt.Fprintf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"service map\">\n",
		l.width, l.height, l.width, l.height)
	b.WriteString("<defs>\n")
	for i, c := range []string{colorForwarded, colorSomeDrops, colorDropped} {
		fmt.Fprintf(&b, "<marker id=\"arrow%d\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"%s\"/></marker>\n", i, c)
	}
	b.WriteString("</defs>\n")
	for i, c := range l.columns {
		fmt.Fprintf(&b, "<text class=\"col\" x=\"%d\" y=\"%d\">%s</text>\n", svgMargin+i*(svgNodeW+svgColGap), svgMargin, esc(c))
	}
	// Edges under nodes, so boxes hide the curves' ends.
	var labels labelPlacer
	var labelSVG []string
	for lane, p := range m.pairs() {
		color, dashed := p.style()
		marker := map[string]int{colorForwarded: 0, colorSomeDrops: 1, colorDropped: 2}[color]
		d, places := l.edgePath(p, lane)
		lines := p.lines()
		b.WriteString("<g class=\"edge\">")
		title := "<title>" + esc(p.from.label()+" → "+p.to.label()+"\n"+strings.Join(lines, "\n")) + "</title>"
		b.WriteString(title)
		dashArray := ""
		if dashed {
			dashArray = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, "<path d=\"%s\" stroke=\"%s\"%s marker-end=\"url(#arrow%d)\"/>", d, color, dashArray, marker)
		b.WriteString("</g>\n")
		// Labels go on top of everything, each on a backing that hides the
		// lines under it.
		at, bg := labels.place(places, lines)
		var lb strings.Builder
		fmt.Fprintf(&lb, "<g class=\"label\">%s", title)
		fmt.Fprintf(&lb, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" rx=\"3\"/>", bg.x0, bg.y0, bg.x1-bg.x0, bg.y1-bg.y0)
		y := at.y - (len(lines)-1)*6
		for i, line := range lines {
			fmt.Fprintf(&lb, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"%s\">%s</text>", at.x, y+i*12, color, esc(line))
		}
		lb.WriteString("</g>\n")
		labelSVG = append(labelSVG, lb.String())
	}
	for _, n := range m.Nodes {
		at := l.pos[n.ID]
		kind := n.Kind
		if n.Namespace == "" {
			kind = ""
		}
		b.WriteString("<g class=\"node\">")
		fmt.Fprintf(&b, "<title>%s</title>", esc(n.label()))
		fmt.Fprintf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" rx=\"8\" fill=\"%s\"/>", at.x, at.y, svgNodeW, svgNodeH, nodeFill(n))
		nameY := at.y + svgNodeH/2 + 4
		if kind != "" {
			nameY = at.y + 19
			fmt.Fprintf(&b, "<text class=\"kind\" x=\"%d\" y=\"%d\">%s</text>", at.x+10, at.y+34, esc(kind))
		}
		fmt.Fprintf(&b, "<text x=\"%d\" y=\"%d\">%s</text>", at.x+10, nameY, esc(shorten(n.Name, svgMaxName)))
		b.WriteString("</g>\n")
	}
	for _, s := range labelSVG {
		b.WriteString(s)
	}
	b.WriteString("</svg>\n</div>\n")

	b.WriteString("<table>\n<tr><th>From</th><th>To</th><th>Proto/port</th><th>Forwarded</th><th>Dropped</th><th>Drop reasons</th></tr>\n")
	for _, e := range m.Edges {
		class := ""
		if e.Dropped > 0 {
			class = ` class="dropped"`
		}
		fmt.Fprintf(&b, "<tr%s><td>%s</td><td>%s</td><td>%s</td><td class=\"n\">%d</td><td class=\"n\">%d</td><td>%s</td></tr>\n",
			class, esc(e.from.label()), esc(e.to.label()), esc(e.portText()), e.Forwarded, e.Dropped, esc(dash(e.reasonsText())))
	}
	b.WriteString("</table>\n</body>\n</html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
