package spec

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// View is a named event-time windowed aggregate over one stream. The same
// definition drives the speed layer (Prepare, Assign, Accumulator) and the
// batch layer (SQL), so the two cannot drift apart.
type View struct {
	Name   string
	Stream *Stream
	// Size is the window length; Hop is how far consecutive windows start
	// apart. Hop == Size is a tumbling window.
	Size, Hop time.Duration
	// Lateness is how long after the watermark passes a window's end the
	// window still accepts events.
	Lateness time.Duration
	Filter   *Expr     // nil keeps every event
	Derived  []*Column // computed after the contract fields, in order
	GroupBy  []*Column
	Measures []*Measure
	// Columns are what expressions of this view can read: contract fields,
	// then derived fields.
	Columns []*Column
	// Retention is how long the lake keeps the view's batch results and
	// corrections, by window start (default the stream's LakeRetention; 0
	// keeps them for ever).
	Retention time.Duration
}

// MeasureKind is an exact, mergeable aggregate.
type MeasureKind string

// The measure kinds.
const (
	Count   MeasureKind = "count"    // rows
	CountIf MeasureKind = "count_if" // rows where a bool column is true
	Sum     MeasureKind = "sum"
	Min     MeasureKind = "min"
	Max     MeasureKind = "max"
)

// Measure is one output column of a view.
type Measure struct {
	Name string
	Kind MeasureKind
	Arg  *Column // nil for Count
}

// Type is the measure's result type and scale.
func (m *Measure) Type() (Type, int) {
	if m.Kind == Count || m.Kind == CountIf {
		return TypeInt, 0
	}
	return m.Arg.Type, m.Arg.Scale
}

// Tumbling reports whether windows do not overlap.
func (v *View) Tumbling() bool { return v.Hop == v.Size }

// Prepare extends an event with the view's derived fields and applies the
// filter. It returns false when the filter drops the event.
func (v *View) Prepare(e Event) (Row, bool) {
	return v.PrepareInto(make(Row, 0, len(v.Columns)), e)
}

// PrepareInto is Prepare reusing buf's storage for the row. A view with no
// derived fields reads the event's values in place; the row then aliases
// them.
func (v *View) PrepareInto(buf Row, e Event) (Row, bool) {
	row := Row(e.Values)
	if len(v.Derived) > 0 {
		row = append(buf[:0], e.Values...)
	}
	for _, d := range v.Derived {
		row = append(row, d.Derived.Eval(row))
	}
	if v.Filter != nil {
		if f := v.Filter.Eval(row); f.Null || !f.Bool {
			return row, false
		}
	}
	return row, true
}

// Assign returns the start (UTC microseconds) of every window the event time
// ts falls in, latest first. Windows are aligned to the Unix epoch.
func (v *View) Assign(ts int64, starts []int64) []int64 {
	hop := v.Hop.Microseconds()
	base := v.LatestStart(ts)
	for k := int64(0); k < v.Size.Microseconds()/hop; k++ {
		starts = append(starts, base-k*hop)
	}
	return starts
}

// LatestStart is the start of the latest window ts falls in: the first
// that Assign returns.
func (v *View) LatestStart(ts int64) int64 { return ts - floorMod(ts, v.Hop.Microseconds()) }

func floorMod(a, m int64) int64 { return ((a % m) + m) % m }

// Dims returns the group-by values of a prepared row.
func (v *View) Dims(r Row) []Value {
	dims := make([]Value, len(v.GroupBy))
	for i, c := range v.GroupBy {
		dims[i] = r[c.Index]
	}
	return dims
}

// Cell is the running state of one measure. It merges exactly.
type Cell struct {
	N int64 // rows that contributed a non-null value
	V int64
}

// Accumulator is the running state of every measure of one window and group.
type Accumulator []Cell

// NewAccumulator returns the empty state for v.
func (v *View) NewAccumulator() Accumulator { return make(Accumulator, len(v.Measures)) }

// Add folds one prepared row into the state.
func (v *View) Add(a Accumulator, r Row) {
	for i, m := range v.Measures {
		c := &a[i]
		switch m.Kind {
		case Count:
			c.N++
			c.V++
			continue
		case CountIf:
			c.N++
			if x := r[m.Arg.Index]; !x.Null && x.Bool {
				c.V++
			}
			continue
		}
		x := r[m.Arg.Index]
		if x.Null {
			continue
		}
		c.merge(m.Kind, Cell{N: 1, V: x.Int})
	}
}

func (c *Cell) merge(k MeasureKind, o Cell) {
	if o.N == 0 && k != Count && k != CountIf {
		return
	}
	switch {
	case k == Min && c.N > 0:
		c.V = min(c.V, o.V)
	case k == Max && c.N > 0:
		c.V = max(c.V, o.V)
	case k == Min || k == Max:
		c.V = o.V
	default:
		c.V += o.V
	}
	c.N += o.N
}

// Values returns the measures' results; a sum, min or max over no non-null
// value is null, as in SQL.
func (v *View) Values(a Accumulator) []Value { return v.AppendValues(nil, a) }

// AppendValues appends the measures' results to dst, as Values returns them.
func (v *View) AppendValues(dst []Value, a Accumulator) []Value {
	for i, m := range v.Measures {
		if a[i].N == 0 && m.Kind != Count && m.Kind != CountIf {
			dst = append(dst, Value{Null: true})
		} else {
			dst = append(dst, Value{Int: a[i].V})
		}
	}
	return dst
}

// SQL renders the DuckDB query computing the view exactly over input, a
// relation with the stream's contract columns that holds each valid event
// once. Its columns are window_start and window_end (TIMESTAMPTZ), the
// group-by columns, then the measures, ordered by window and dimensions.
func (v *View) SQL(input string) string {
	ts := "epoch_us(" + QuoteIdent(v.Stream.Contract.Fields[v.Stream.Contract.Time].Name) + ")"
	hop := strconv.FormatInt(v.Hop.Microseconds(), 10)
	size := strconv.FormatInt(v.Size.Microseconds(), 10)
	var inner []string
	inner = append(inner, fmt.Sprintf("%s - (((%s %% %s) + %s) %% %s) AS __base", ts, ts, hop, hop, hop))
	for _, c := range v.GroupBy {
		inner = append(inner, columnSQL(c)+" AS "+QuoteIdent(c.Name))
	}
	for i, m := range v.Measures {
		if m.Arg != nil {
			inner = append(inner, fmt.Sprintf("%s AS __m%d", columnSQL(m.Arg), i))
		}
	}
	start := "__base"
	from := "(SELECT " + strings.Join(inner, ", ") + " FROM " + input
	if v.Filter != nil {
		from += " WHERE " + v.Filter.SQL()
	}
	from += ") AS __e"
	if !v.Tumbling() {
		from += fmt.Sprintf(" CROSS JOIN range(0, %d) AS __k(k)", v.Size/v.Hop)
		start = "(__base - __k.k * " + hop + ")"
	}
	outer := []string{
		"make_timestamptz(" + start + ") AS window_start",
		"make_timestamptz(" + start + " + " + size + ") AS window_end",
	}
	group := []string{start}
	order := []string{"window_start"}
	for _, c := range v.GroupBy {
		outer = append(outer, QuoteIdent(c.Name))
		group = append(group, QuoteIdent(c.Name))
		order = append(order, QuoteIdent(c.Name)+" NULLS FIRST")
	}
	for i, m := range v.Measures {
		arg := fmt.Sprintf("__m%d", i)
		var agg string
		switch m.Kind {
		case Count:
			agg = "count(*)"
		case CountIf:
			agg = "count(*) FILTER (WHERE " + arg + ")"
		case Sum:
			agg = "CAST(sum(" + arg + ") AS BIGINT)" // DuckDB widens to HUGEINT; Go sums in int64
		case Min, Max:
			agg = string(m.Kind) + "(" + arg + ")"
		}
		outer = append(outer, agg+" AS "+QuoteIdent(m.Name))
	}
	return "SELECT " + strings.Join(outer, ", ") + " FROM " + from +
		" GROUP BY " + strings.Join(group, ", ") + " ORDER BY " + strings.Join(order, ", ")
}

func columnSQL(c *Column) string {
	if c.Derived != nil {
		return c.Derived.SQL()
	}
	return QuoteIdent(c.Name)
}
