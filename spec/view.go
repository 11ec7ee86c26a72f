package spec

import (
	"fmt"
	"strings"
	"time"
)

// View is a named event-time windowed aggregate over one stream. The same
// definition drives the speed layer (Prepare, Assign, Accumulator) and the
// batch layer (SQL), so the two cannot drift apart.
type View struct {
	Name   string
	Stream *Stream
	// Window is the view's windows: Size, Hop, Lateness, and every
	// computation on them.
	Window
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

// Dims returns the group-by values of a prepared row.
func (v *View) Dims(r Row) []Value {
	dims := make([]Value, len(v.GroupBy))
	for i, c := range v.GroupBy {
		dims[i] = r[c.Index]
	}
	return dims
}

// SQL renders the DuckDB query computing the view exactly over input, a
// relation with the stream's contract columns that holds each valid event
// once. Its columns are window_start and window_end (TIMESTAMPTZ), the
// group-by columns, then the measures, ordered by window and dimensions.
func (v *View) SQL(input string) string {
	ts := QuoteIdent(v.Stream.Contract.Fields[v.Stream.Contract.Time].Name)
	var inner, by []string
	for _, c := range v.GroupBy {
		inner = append(inner, columnSQL(c)+" AS "+QuoteIdent(c.Name))
		by = append(by, QuoteIdent(c.Name))
	}
	for i, m := range v.Measures {
		if m.Arg != nil {
			inner = append(inner, fmt.Sprintf("%s AS __m%d", columnSQL(m.Arg), i))
		}
	}
	// rel is each row in each of its windows, with the window's bounds as
	// __start and __end.
	var rel string
	if v.Session() {
		inner = append(inner, "epoch_us("+ts+") AS __t")
		rel = v.SessionsSQL("(SELECT "+strings.Join(inner, ", ")+" FROM "+input+v.whereSQL()+")", by)
	} else {
		base, join, start := v.StartSQL(ts)
		inner = append(inner, base+" AS __base")
		rel = fmt.Sprintf("SELECT *, %s AS __start, %s + %d AS __end FROM (SELECT %s FROM %s%s) AS __e%s",
			start, start, v.Size.Microseconds(), strings.Join(inner, ", "), input, v.whereSQL(), join)
	}
	// Measures that look at rows of their window before aggregating them
	// (approx_count_distinct's registers) add columns, two selects deep.
	var first, second []string
	part := strings.Join(append([]string{"__start"}, by...), ", ")
	for i, m := range v.Measures {
		if rs := m.kind().rowSQL; rs != nil {
			f, s := rs(fmt.Sprintf("__m%d", i), m.Arg.Type, part)
			first, second = append(first, f), append(second, s)
		}
	}
	if len(first) > 0 {
		rel = fmt.Sprintf("SELECT *, %s FROM (SELECT *, %s FROM (%s))", strings.Join(second, ", "), strings.Join(first, ", "), rel)
	}
	outer := []string{"make_timestamptz(__start) AS window_start", "make_timestamptz(__end) AS window_end"}
	group := []string{"__start", "__end"}
	order := []string{"window_start"}
	for _, c := range v.GroupBy {
		outer = append(outer, QuoteIdent(c.Name))
		group = append(group, QuoteIdent(c.Name))
		order = append(order, QuoteIdent(c.Name)+" NULLS FIRST")
	}
	for i, m := range v.Measures {
		outer = append(outer, m.SQL(fmt.Sprintf("__m%d", i))+" AS "+QuoteIdent(m.Name))
	}
	return "SELECT " + strings.Join(outer, ", ") + " FROM (" + rel + ")" +
		" GROUP BY " + strings.Join(group, ", ") + " ORDER BY " + strings.Join(order, ", ")
}

func (v *View) whereSQL() string {
	if v.Filter == nil {
		return ""
	}
	return " WHERE " + v.Filter.SQL()
}

func columnSQL(c *Column) string {
	if c.Derived != nil {
		return c.Derived.SQL()
	}
	return QuoteIdent(c.Name)
}
