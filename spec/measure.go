package spec

import (
	"fmt"
	"math/bits"
	"slices"
)

// MeasureKind is an exact, mergeable aggregate.
type MeasureKind string

// The measure kinds.
const (
	Count   MeasureKind = "count"    // rows
	CountIf MeasureKind = "count_if" // rows where a bool column is true
	Sum     MeasureKind = "sum"
	Min     MeasureKind = "min"
	Max     MeasureKind = "max"
	// CountDistinct counts the distinct non-null values of a field with at
	// most MaxDistinct possible values (a bool, an enum, an int with min and
	// max close together): its cell holds them as a bit set, so it merges
	// exactly, and DuckDB's count(DISTINCT x) gives the same number.
	CountDistinct MeasureKind = "count_distinct"
	// ApproxCountDistinct estimates the distinct non-null values of any
	// field with a HyperLogLog sketch (hll.go) that both engines compute
	// alike: the speed and batch values of a window are the same number.
	ApproxCountDistinct MeasureKind = "approx_count_distinct"
)

// MaxDistinct is how many values a count_distinct field may have.
const MaxDistinct = 63

// Measure is one output column of a view.
type Measure struct {
	Name string
	Kind MeasureKind
	Arg  *Column // nil for Count
	k    *measureKind
	// bit numbers the values of a count_distinct argument, 0 to
	// MaxDistinct-1.
	bit func(Value) int
}

// Cell is the running state of one measure: N rows contributed a value,
// V is the kind's running value (for a sketch, its number in the engine's
// Sketches). It merges exactly.
type Cell struct {
	N int64
	V int64
}

// measureKind is everything tideline knows of one kind of measure: what it
// takes, how a row adds to its cell, how two cells merge (windows of two
// partitions, or of two processes), its value, and its DuckDB aggregate.
// Both engines read this table, so a new measure is one entry here.
type measureKind struct {
	// arg says what field the measure takes: "" none, "bool", "number",
	// "few" (a contract field of at most MaxDistinct values), "any".
	arg string
	// add folds one row's argument (the zero Value when arg is "") into c.
	add func(m *Measure, c *Cell, x Value, sk *Sketches)
	// merge folds cell o into c.
	merge func(c *Cell, o Cell, sk *Sketches)
	// final is the measure's value of a cell.
	final func(c Cell, sk *Sketches) Value
	// sketch says the cell holds a Sketch, to release with its window.
	sketch bool
	// sql aggregates the argument column x (unused when arg is "").
	sql func(x string) string
	// rowSQL, when set, adds columns to each row before the aggregate, in
	// two selects (first, then second), given the argument column x of
	// type t and the row's window and group as a PARTITION BY list.
	rowSQL func(x string, t Type, part string) (first, second string)
	// typ is the result's type, given the argument's.
	typ func(arg *Column) (Type, int)
}

func sumCells(c *Cell, o Cell, _ *Sketches) { c.N, c.V = c.N+o.N, c.V+o.V }

// nullIfEmpty is the value of a measure over no non-null value: null, as
// in SQL.
func nullIfEmpty(c Cell, _ *Sketches) Value {
	if c.N == 0 {
		return Value{Null: true}
	}
	return Value{Int: c.V}
}

func counted(c Cell, _ *Sketches) Value { return Value{Int: c.V} }
func intResult(*Column) (Type, int)     { return TypeInt, 0 }
func argResult(arg *Column) (Type, int) { return arg.Type, arg.Scale }
func extreme(pick func(a, b int64) int64) func(c *Cell, o Cell, _ *Sketches) {
	return func(c *Cell, o Cell, _ *Sketches) {
		switch {
		case o.N == 0:
			return
		case c.N == 0:
			c.V = o.V
		default:
			c.V = pick(c.V, o.V)
		}
		c.N += o.N
	}
}

func minInt(a, b int64) int64 { return min(a, b) }
func maxInt(a, b int64) int64 { return max(a, b) }

var measureKinds = map[MeasureKind]*measureKind{
	Count: {
		add:   func(_ *Measure, c *Cell, _ Value, _ *Sketches) { c.N++; c.V++ },
		merge: sumCells, final: counted, typ: intResult,
		sql: func(string) string { return "count(*)" },
	},
	CountIf: {
		arg: "bool",
		add: func(_ *Measure, c *Cell, x Value, _ *Sketches) {
			c.N++
			if !x.Null && x.Bool {
				c.V++
			}
		},
		merge: sumCells, final: counted, typ: intResult,
		sql: func(x string) string { return "count(*) FILTER (WHERE " + x + ")" },
	},
	Sum: {
		arg: "number",
		add: func(_ *Measure, c *Cell, x Value, _ *Sketches) {
			if !x.Null {
				c.N++
				c.V += x.Int
			}
		},
		merge: sumCells, final: nullIfEmpty, typ: argResult,
		// DuckDB widens to HUGEINT; Go sums in int64.
		sql: func(x string) string { return "CAST(sum(" + x + ") AS BIGINT)" },
	},
	Min: {
		arg:   "number",
		add:   func(_ *Measure, c *Cell, x Value, _ *Sketches) { addExtreme(c, x, minInt) },
		merge: extreme(minInt), final: nullIfEmpty, typ: argResult,
		sql: func(x string) string { return "min(" + x + ")" },
	},
	Max: {
		arg:   "number",
		add:   func(_ *Measure, c *Cell, x Value, _ *Sketches) { addExtreme(c, x, maxInt) },
		merge: extreme(maxInt), final: nullIfEmpty, typ: argResult,
		sql: func(x string) string { return "max(" + x + ")" },
	},
	CountDistinct: {
		arg: "few",
		add: func(m *Measure, c *Cell, x Value, _ *Sketches) {
			if !x.Null {
				c.N++
				c.V |= 1 << m.bit(x)
			}
		},
		merge: func(c *Cell, o Cell, _ *Sketches) { c.N, c.V = c.N+o.N, c.V|o.V },
		final: func(c Cell, _ *Sketches) Value { return Value{Int: int64(bits.OnesCount64(uint64(c.V)))} },
		typ:   intResult,
		sql:   func(x string) string { return "count(DISTINCT " + x + ")" },
	},
	ApproxCountDistinct: {
		arg: "any",
		add: func(m *Measure, c *Cell, x Value, sk *Sketches) {
			if !x.Null {
				c.N++
				sk.of(c).add(HLLHash(hllText(x, m.Arg.Type)))
			}
		},
		merge: func(c *Cell, o Cell, sk *Sketches) {
			if o.V > 0 {
				c.N += o.N
				sk.of(c).merge(sk.All[o.V-1])
			}
		},
		final: func(c Cell, sk *Sketches) Value {
			if c.V == 0 {
				return Value{Int: 0}
			}
			return Value{Int: sk.All[c.V-1].Estimate()}
		},
		sketch: true, typ: intResult, sql: hllSQL, rowSQL: hllRowSQL,
	},
}

// distinctBits numbers the values of field f for count_distinct, or says
// why f has too many possible values.
func distinctBits(f *Field) (func(Value) int, error) {
	switch {
	case f.Type == TypeBool:
		return func(x Value) int {
			if x.Bool {
				return 1
			}
			return 0
		}, nil
	case f.Type == TypeString && len(f.Enum) > 0 && len(f.Enum) <= MaxDistinct:
		// A value not in the enum (a row written before a value was
		// removed from it) cannot reach the speed layer. A few values are
		// found faster by comparing than by hashing.
		enum := f.Enum
		if len(enum) <= 8 {
			return func(x Value) int {
				for i, e := range enum {
					if e == x.Str {
						return i
					}
				}
				return 0
			}, nil
		}
		index := map[string]int{}
		for i, e := range enum {
			index[e] = i
		}
		return func(x Value) int { return index[x.Str] }, nil
	case (f.Type == TypeInt || f.Type == TypeDecimal) && f.Min != nil && f.Max != nil && *f.Max-*f.Min < MaxDistinct:
		lo := *f.Min
		return func(x Value) int { return int(x.Int - lo) }, nil
	}
	return nil, fmt.Errorf("count_distinct counts a field of at most %d values: a bool, a string with an enum, or an int with min and max; %s has more", MaxDistinct, f.Name)
}

func addExtreme(c *Cell, x Value, pick func(a, b int64) int64) {
	switch {
	case x.Null:
		return
	case c.N == 0:
		c.V = x.Int
	default:
		c.V = pick(c.V, x.Int)
	}
	c.N++
}

// kind is the measure's entry in measureKinds.
func (m *Measure) kind() *measureKind {
	if m.k != nil {
		return m.k // set by the parser
	}
	k := measureKinds[m.Kind]
	if k == nil {
		panic(fmt.Sprintf("spec: measure %s has unknown kind %q", m.Name, m.Kind))
	}
	return k
}

// Type is the measure's result type and scale.
func (m *Measure) Type() (Type, int) { return m.kind().typ(m.Arg) }

// Merge folds cell o into c, as the measure merges: the same window of two
// partitions, or two processes. sk holds the cells' sketches; o's is left
// as it was.
func (m *Measure) Merge(c *Cell, o Cell, sk *Sketches) { m.kind().merge(c, o, sk) }

// SQL is the measure's DuckDB aggregate over the column x holding its
// argument.
func (m *Measure) SQL(x string) string { return m.kind().sql(x) }

// Accumulator is the running state of every measure of one window and group.
type Accumulator []Cell

// NewAccumulator returns the empty state for v.
func (v *View) NewAccumulator() Accumulator { return make(Accumulator, len(v.Measures)) }

// Add folds one prepared row into the state; sk holds its sketches.
func (v *View) Add(a Accumulator, r Row, sk *Sketches) {
	for i, m := range v.Measures {
		var x Value
		if m.Arg != nil {
			x = r[m.Arg.Index]
		}
		m.kind().add(m, &a[i], x, sk)
	}
}

// Values returns the measures' results; a sum, min or max over no non-null
// value is null, as in SQL.
func (v *View) Values(a Accumulator, sk *Sketches) []Value { return v.AppendValues(nil, a, sk) }

// AppendValues appends the measures' results to dst, as Values returns them.
func (v *View) AppendValues(dst []Value, a Accumulator, sk *Sketches) []Value {
	for i, m := range v.Measures {
		dst = append(dst, m.kind().final(a[i], sk))
	}
	return dst
}

// Sketched reports whether a measure of the view keeps a sketch.
func (v *View) Sketched() bool {
	for _, m := range v.Measures {
		if m.kind().sketch {
			return true
		}
	}
	return false
}

// Release gives back the sketches of a window's state, which is then
// empty of them: the window closed, or merged into another.
func (v *View) Release(a Accumulator, sk *Sketches) {
	for i, m := range v.Measures {
		if m.kind().sketch {
			sk.release(&a[i])
		}
	}
}

// Partial is a window's mergeable state outside the engine that made it:
// its cells, with each sketch cell's registers in place of its number in
// that engine's Sketches. The partitions of a partitioned stream each
// write theirs, and a reader merges them into the window's value.
type Partial struct {
	Cells    []Cell
	Sketches []*Sketch // by measure: nil but for a sketch measure's, and nil when empty
}

// Export copies the state a (whose sketches sk holds) out of the engine.
func (v *View) Export(a Accumulator, sk *Sketches) Partial {
	p := Partial{Cells: slices.Clone([]Cell(a))}
	for i, m := range v.Measures {
		if !m.kind().sketch {
			continue
		}
		if p.Sketches == nil {
			p.Sketches = make([]*Sketch, len(v.Measures))
		}
		if a[i].V > 0 {
			p.Sketches[i] = sk.All[a[i].V-1].clone()
		}
		p.Cells[i].V = 0
	}
	return p
}

// Import merges the exported state p into a, whose sketches sk holds.
func (v *View) Import(a Accumulator, p Partial, sk *Sketches) {
	for i, m := range v.Measures {
		if !m.kind().sketch {
			m.kind().merge(&a[i], p.Cells[i], sk)
			continue
		}
		a[i].N += p.Cells[i].N
		if i < len(p.Sketches) && p.Sketches[i] != nil {
			sk.of(&a[i]).merge(p.Sketches[i])
		}
	}
}

// Sketched reports whether the measure keeps a sketch.
func (m *Measure) Sketched() bool { return m.kind().sketch }
