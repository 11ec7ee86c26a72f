package spec

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"
)

// The tests here hold the Go engine (Expr.Eval, View.Prepare/Assign/Add) to
// DuckDB as the oracle: DuckDB reads the generated NDJSON itself with
// read_json, so decoding is checked too, and runs the rendered SQL.

const agreeSpec = `
streams:
  e:
    subjects: [e.>]
    id: id
    event_time: ts
    fields:
      id: {type: string, required: true}
      ts: {type: timestamp, required: true}
      s: string
      i: {type: int, min: -50, max: 50}
      j: {type: int, min: -5, max: 5}
      d: {type: decimal, scale: 2, min: -100, max: 100}
      e: {type: decimal, scale: 1, min: -10, max: 10}
      b: bool
views:
  tumble:
    stream: e
    window: 1m
    filter: i is null or i != 0
    derive:
      q: i / j
      r: i % j
      big: d * e > 12.5
      w: d + i
    group_by: [s]
    measures:
      n: count
      big: count_if(big)
      q_sum: sum(q)
      r_min: min(r)
      w_max: max(w)
      d_sum: sum(d)
  hop:
    stream: e
    window: {size: 3m, hop: 1m}
    derive:
      neg: not b or s in ('a', 'b')
    group_by: [b, neg]
    measures:
      n: count
      i_sum: sum(i)
      e_min: min(e)
      j_kinds: count_distinct(j)
      b_kinds: count_distinct(b)
`

var agreeExprs = []string{
	"i + j * 2", "i / j", "i % j", "-i / 3", "(0 - i) % 7", "d + i", "d * e", "d - e * 2",
	"d > 1.5", "d = e", "e <= -2.5", "i in (1, -2, 3)", "e in (1.5, -2)", "d not in (0, 0.5)",
	"s not in ('a', 'b')", "s is null", "s is not null and s < 'b'", "not (b and i > 0)",
	"b or i < 0", "b = true", "(i - j) * (d - e)", "d >= 0 and d <= 50.5", "i > 10 or j < -2 and not b",
	"s = 'it''s'", "ts >= ts", "i * 0 = 0 or i is null",
}

func TestExprAgreesWithDuckDB(t *testing.T) {
	s, err := Parse("agree.yaml", []byte(agreeSpec))
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stream("e")
	db, events := loadEvents(t, st, 3000, 1)
	cols := s.View("tumble").Columns[:len(st.Contract.Fields)]
	for _, src := range agreeExprs {
		e, err := ParseExpr(src, cols)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		rows, err := db.QueryContext(t.Context(), "SELECT id, "+e.SQL()+" FROM events ORDER BY id")
		if err != nil {
			t.Fatalf("%s: %s: %v", src, e.SQL(), err)
		}
		mismatches := 0
		for rows.Next() {
			var id string
			var got any
			if err := rows.Scan(&id, &got); err != nil {
				t.Fatal(err)
			}
			want := format(e.Eval(Row(events[id].Values)), e.Type)
			if g := formatSQL(got); g != want && mismatches < 3 {
				mismatches++
				t.Errorf("%s on %s: DuckDB %s, Go %s (SQL %s)", src, id, g, want, e.SQL())
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
}

func TestViewSQLAgreesWithGo(t *testing.T) {
	agree, err := Parse("agree.yaml", []byte(agreeSpec))
	if err != nil {
		t.Fatal(err)
	}
	pay, err := Load("../examples/payments/tideline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range append(agree.Streams, pay.Streams...) {
		t.Run(st.Name, func(t *testing.T) {
			db, events := loadEvents(t, st, 4000, 2)
			for _, v := range st.Views {
				if v.Session() {
					continue // the operator's sessions: stream's TestOperatorAgreesWithSQL
				}
				got := sqlRows(t, db, v)
				want := goRows(v, events)
				if len(want) < 10 {
					t.Fatalf("view %s: only %d rows; the generator is too narrow", v.Name, len(want))
				}
				if len(got) != len(want) {
					t.Errorf("view %s: DuckDB %d rows, Go %d", v.Name, len(got), len(want))
				}
				for i := range min(len(got), len(want)) {
					if got[i] != want[i] {
						t.Errorf("view %s row %d:\nDuckDB %s\n    Go %s\nSQL: %s", v.Name, i, got[i], want[i], v.SQL("events"))
						break
					}
				}
			}
		})
	}
}

func goRows(v *View, events map[string]Event) []string {
	sk := &Sketches{}
	type key struct {
		start int64
		dims  string
	}
	accs := map[key]Accumulator{}
	dims := map[key][]Value{}
	var starts []int64
	for _, ev := range events {
		row, ok := v.Prepare(ev)
		if !ok {
			continue
		}
		d := v.Dims(row)
		enc := fmt.Sprint(d)
		starts = v.Assign(row[v.Stream.Contract.Time].Int, starts[:0])
		for _, s := range starts {
			k := key{s, enc}
			if accs[k] == nil {
				accs[k] = v.NewAccumulator()
				dims[k] = d
			}
			v.Add(accs[k], row, sk)
		}
	}
	var out []string
	for k, a := range accs {
		parts := []string{fmt.Sprint(k.start), fmt.Sprint(k.start + v.Size.Microseconds())}
		for i, d := range dims[k] {
			parts = append(parts, format(d, v.GroupBy[i].Type))
		}
		for _, m := range v.Values(a, sk) {
			parts = append(parts, format(m, TypeInt))
		}
		out = append(out, strings.Join(parts, "|"))
	}
	sort.Strings(out)
	return out
}

func sqlRows(t *testing.T, db *sql.DB, v *View) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), v.SQL("events"))
	if err != nil {
		t.Fatalf("view %s: %v\n%s", v.Name, err, v.SQL("events"))
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		parts := []string{fmt.Sprint(vals[0].(time.Time).UnixMicro()), fmt.Sprint(vals[1].(time.Time).UnixMicro())}
		for _, x := range vals[2:] {
			parts = append(parts, formatSQL(x))
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func format(v Value, t Type) string {
	switch {
	case v.Null:
		return "NULL"
	case t == TypeString:
		return fmt.Sprintf("%q", v.Str)
	case t == TypeBool:
		return fmt.Sprint(v.Bool)
	}
	return fmt.Sprint(v.Int)
}

func formatSQL(x any) string {
	switch x := x.(type) {
	case nil:
		return "NULL"
	case string:
		return fmt.Sprintf("%q", x)
	case time.Time:
		return fmt.Sprint(x.UnixMicro())
	}
	return fmt.Sprint(x)
}

// loadEvents generates n valid events for st, writes them as NDJSON, and has
// DuckDB read the file on its own into the table events (decimals as minor
// units, as the contract stores them). It returns the Go-decoded events by id.
func loadEvents(t *testing.T, st *Stream, n int, seed uint64) (*sql.DB, map[string]Event) {
	t.Helper()
	lines := genEvents(st.Contract, n, seed)
	path := filepath.Join(t.TempDir(), "events.ndjson")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	events := map[string]Event{}
	for _, l := range lines {
		ev, err := st.Contract.Decode([]byte(l), time.Now())
		if err != nil {
			t.Fatalf("generated event is invalid: %v\n%s", err, l)
		}
		events[ev.Values[st.Contract.ID].Str] = ev
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var jsonCols, sel []string
	for _, f := range st.Contract.Fields {
		typ, expr := f.Type.DuckDB(), QuoteIdent(f.Name)
		if f.Type == TypeDecimal {
			typ = fmt.Sprintf("DECIMAL(18,%d)", f.Scale)
			expr = fmt.Sprintf("CAST(%s * %d AS BIGINT) AS %s", expr, pow10(f.Scale), expr)
		}
		jsonCols = append(jsonCols, fmt.Sprintf("%s: '%s'", QuoteIdent(f.Name), typ))
		sel = append(sel, expr)
	}
	q := fmt.Sprintf("CREATE TABLE events AS SELECT %s FROM read_json('%s', format='newline_delimited', columns={%s})",
		strings.Join(sel, ", "), path, strings.Join(jsonCols, ", "))
	if _, err := db.ExecContext(t.Context(), q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return db, events
}

// genEvents makes n valid JSON events for c with small value domains, so
// groups repeat, and with nulls in optional fields.
func genEvents(c *Contract, n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, seed))
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	strs := []string{"a", "b", "c", "it's", "Zürich", "𝄞", "DE", "US"}
	lines := make([]string, n)
	for k := range n {
		obj := map[string]any{}
		for i, f := range c.Fields {
			if !f.Required && r.IntN(7) == 0 {
				if r.IntN(2) == 0 {
					obj[f.Name] = nil
				}
				continue
			}
			lo, hi := int64(-5000), int64(5000)
			if f.Min != nil && f.Type.Numeric() {
				lo = max(lo, *f.Min)
			}
			if f.Max != nil && f.Type.Numeric() {
				hi = min(hi, *f.Max)
			}
			num := lo + r.Int64N(hi-lo+1)
			switch {
			case i == c.ID:
				obj[f.Name] = fmt.Sprintf("ev-%06d", k)
			case f.Type == TypeString && len(f.Enum) > 0:
				obj[f.Name] = f.Enum[r.IntN(len(f.Enum))]
			case f.Type == TypeString:
				s := strs[r.IntN(len(strs))]
				if f.MaxLength > 0 && len(s) > f.MaxLength {
					s = "x"
				}
				obj[f.Name] = s
			case f.Type == TypeInt:
				obj[f.Name] = num
			case f.Type == TypeDecimal:
				obj[f.Name] = json.Number(FormatDecimal(num, f.Scale))
			case f.Type == TypeBool:
				obj[f.Name] = r.IntN(2) == 0
			case f.Type == TypeTimestamp:
				ts := base.Add(time.Duration(r.Int64N(int64(15 * time.Minute)))).Truncate(time.Microsecond)
				obj[f.Name] = ts.Format(time.RFC3339Nano)
			}
		}
		b, _ := json.Marshal(obj)
		lines[k] = string(b)
	}
	return lines
}
