// Package oracle computes the answers tideline must give, independently of
// tideline's own engines: DuckDB reads the generator's output file itself,
// parses the events with its JSON functions, drops what the generator made
// invalid and repeated ids (keeping the first published), and runs the
// view's SQL. Tests compare the speed and batch layers against it.
package oracle

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"

	_ "github.com/duckdb/duckdb-go/v2" // registers the "duckdb" driver

	"tideline/spec"
)

// Load creates the table events in db from generator --out files of
// stream st: one row per valid event id, with the contract's columns.
func Load(ctx context.Context, db *sql.DB, st *spec.Stream, outFiles ...string) error {
	if len(outFiles) == 0 {
		return fmt.Errorf("cannot load the oracle: no generator --out file given")
	}
	quoted := make([]string, len(outFiles))
	for i, f := range outFiles {
		quoted[i] = spec.QuoteString(f)
	}
	var cols []string
	for _, f := range st.Contract.Fields {
		x := "j->>" + spec.QuoteString(f.Name)
		var expr string
		switch f.Type {
		case spec.TypeString:
			expr = x
		case spec.TypeBool:
			expr = "CAST(" + x + " AS BOOLEAN)"
		case spec.TypeTimestamp:
			expr = "CAST(" + x + " AS TIMESTAMPTZ)"
		case spec.TypeInt:
			expr = "CAST(" + x + " AS BIGINT)"
		case spec.TypeDecimal:
			expr = fmt.Sprintf("CAST(CAST(%s AS DECIMAL(38,%d)) * %d AS BIGINT)", x, f.Scale, pow10(f.Scale))
		}
		cols = append(cols, expr+" AS "+spec.QuoteIdent(f.Name))
	}
	q := fmt.Sprintf(`CREATE OR REPLACE TABLE events AS
		WITH src AS (SELECT i, CAST(data AS JSON) AS j FROM read_json(%s, format='newline_delimited',
			columns={i: 'BIGINT', kind: 'VARCHAR', data: 'VARCHAR'}) WHERE kind <> 'invalid')
		SELECT %s, i AS _i FROM src QUALIFY row_number() OVER (PARTITION BY %s ORDER BY i) = 1`,
		"["+strings.Join(quoted, ", ")+"]", strings.Join(cols, ", "), "j->>"+spec.QuoteString(st.Contract.Fields[st.Contract.ID].Name))
	if _, err := db.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("cannot load %s into the oracle: %w", strings.Join(outFiles, ", "), err)
	}
	return nil
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

// Row is one window of a view in a form both sides can produce.
type Row struct {
	Start    time.Time
	End      time.Time // a session's end is part of its value
	Dims     string    // the group-by values, rendered
	Measures string    // the measures, rendered
}

func (r Row) String() string {
	return r.Start.UTC().Format(time.RFC3339Nano) + " " + r.Dims + " => " + r.Measures + " until " + r.End.UTC().Format(time.RFC3339Nano)
}

// ViewRows runs v's SQL over events (optionally restricted by where, a SQL
// condition on the events) and returns its windows keyed by Key.
func ViewRows(ctx context.Context, db *sql.DB, v *spec.View, where string) (map[string]Row, error) {
	input := "events"
	if where != "" {
		input = "(SELECT * FROM events WHERE " + where + ")"
	}
	return QueryRows(ctx, db, v, v.SQL(input))
}

// QueryRows runs a query returning rows shaped as v's (window_start,
// window_end, the group-by columns, the measures), such as a select from
// batch files, and returns them keyed by Key.
func QueryRows(ctx context.Context, db *sql.DB, v *spec.View, query string) (map[string]Row, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("cannot compute view %s: %w", v.Name, err)
	}
	defer rows.Close()
	out := map[string]Row{}
	n := 2 + len(v.GroupBy) + len(v.Measures)
	for rows.Next() {
		vals := make([]any, n)
		ptrs := make([]any, n)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		start := vals[0].(time.Time)
		dims := make([]string, len(v.GroupBy))
		for i := range v.GroupBy {
			dims[i] = Render(vals[2+i])
		}
		ms := make([]string, len(v.Measures))
		for i := range v.Measures {
			ms[i] = Render(vals[2+len(v.GroupBy)+i])
		}
		r := Row{Start: start, End: vals[1].(time.Time), Dims: strings.Join(dims, "|"), Measures: strings.Join(ms, "|")}
		out[Key(start, r.Dims)] = r
	}
	return out, rows.Err()
}

// FromResult turns the rows of `SELECT * EXCLUDE (source) FROM <view>`, as
// POST /v1/query returns them (JSON decoded with UseNumber), into the
// oracle's form. It also returns how many rows there were, to catch a
// window appearing twice.
func FromResult(v *spec.View, rows [][]any) (map[string]Row, int) {
	out := map[string]Row{}
	for _, row := range rows {
		start, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(row[0]))
		end, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(row[1]))
		var dims, ms []string
		for i := range v.GroupBy {
			dims = append(dims, Render(row[2+i]))
		}
		for i := range v.Measures {
			ms = append(ms, Render(row[2+len(v.GroupBy)+i]))
		}
		r := Row{Start: start, End: end, Dims: strings.Join(dims, "|"), Measures: strings.Join(ms, "|")}
		out[Key(start, r.Dims)] = r
	}
	return out, len(rows)
}

// Key identifies a window of a view.
func Key(start time.Time, dims string) string {
	return start.UTC().Format(time.RFC3339Nano) + "/" + dims
}

// Render prints a value the same way for DuckDB's and tideline's output.
func Render(x any) string {
	switch x := x.(type) {
	case nil:
		return "NULL"
	case string:
		return fmt.Sprintf("%q", x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(x)
}

// Diff describes how got differs from want, or "" when they are equal.
func Diff(got, want map[string]Row) string {
	var lines []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			lines = append(lines, "missing "+w.String())
		case g.Measures != w.Measures || !g.End.Equal(w.End):
			lines = append(lines, "differs "+w.String()+" got "+g.Measures+" until "+g.End.UTC().Format(time.RFC3339Nano))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			lines = append(lines, "extra   "+g.String())
		}
	}
	sort.Strings(lines)
	if len(lines) > 10 {
		lines = append(lines[:10], fmt.Sprintf("... and %d more", len(lines)-10))
	}
	return strings.Join(lines, "\n")
}
