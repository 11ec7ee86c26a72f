package serve

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"tideline/spec"
	"tideline/stream"
)

// rowIndex is one side of a view's snapshot, batch or speed, held in memory
// for GET /v1/views: its rows in (window_start, dims) order and each group's
// rows in the same order, so a read is a binary search and a copy, with no
// SQL on the request path. Immutable once built.
//
// A row is window_start, window_end (time.Time), the dimensions, then the
// measures, as DuckDB scans them: string, int64, bool, time.Time or nil.
type rowIndex struct {
	v      *spec.View
	rows   [][]any
	starts []int64            // each row's window_start, Unix microseconds
	groups map[string][]int32 // the group's key (spec) -> positions in rows
}

func newRowIndex(v *spec.View, rows [][]any) *rowIndex {
	x := &rowIndex{v: v, rows: rows, starts: make([]int64, len(rows)), groups: map[string][]int32{}}
	var b []byte
	for i, r := range rows {
		x.starts[i] = r[0].(time.Time).UnixMicro()
		b = x.appendKey(b[:0], r[2:2+len(v.GroupBy)], 0)
		x.groups[string(b)] = append(x.groups[string(b)], int32(i))
	}
	return x
}

// appendKey appends the group key (spec.AppendKeyValue) of dimension
// values as database/sql gives them, the first of which is group-by column
// from: from DuckDB, the speed layer and a query parameter alike.
func (x *rowIndex) appendKey(b []byte, dims []any, from int) []byte {
	for i, d := range dims {
		b = spec.AppendKeyValue(b, x.v.GroupBy[from+i].Type, spec.ValueOf(d))
	}
	return b
}

// appendRange appends the rows with window_start in [lo, hi) whose
// dimensions equal eq where eq is not nil (a filter per dimension: want
// says whether dimension i is filtered). With every dimension filtered it
// reads only that group's rows.
func (x *rowIndex) appendRange(out [][]any, lo, hi int64, eq []any, want []bool) [][]any {
	if x == nil || lo >= hi {
		return out
	}
	all := !slices.Contains(want, false)
	if all {
		pos := x.groups[string(x.appendKey(nil, eq, 0))]
		i, _ := slices.BinarySearchFunc(pos, lo, func(p int32, t int64) int { return cmp.Compare(x.starts[p], t) })
		for ; i < len(pos) && x.starts[pos[i]] < hi; i++ {
			out = append(out, x.rows[pos[i]])
		}
		return out
	}
	i, _ := slices.BinarySearch(x.starts, lo)
	var kb, rb []byte
	for ; i < len(x.starts) && x.starts[i] < hi; i++ {
		r := x.rows[i]
		match := true
		for d, w := range want {
			if w {
				kb, rb = x.appendKey(kb[:0], eq[d:d+1], d), x.appendKey(rb[:0], r[2+d:3+d], d)
				if string(kb) != string(rb) {
					match = false
					break
				}
			}
		}
		if match {
			out = append(out, r)
		}
	}
	return out
}

// loadBatchIndex reads a view's batch table, the whole of it (views answer
// from all of it while the speed layer is stale), in window and group
// order, through conn (inside the refresh's transaction). It returns nil
// when the table has more than max rows: GET /v1/views then runs SQL
// instead.
func (s *Server) loadBatchIndex(ctx context.Context, conn *sql.Conn, v *spec.View, max int) (*rowIndex, error) {
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM "+spec.QuoteIdent(batchTable(v.Name))).Scan(&n); err != nil {
		return nil, fmt.Errorf("cannot count the batch results of view %s: %w", v.Name, err)
	}
	if n > max {
		s.cfg.Log.Info("batch results too large to hold in memory; GET /v1/views runs SQL", "view", v.Name, "rows", n, "max", max)
		return nil, nil
	}
	order := []string{"window_start"}
	for _, c := range v.GroupBy {
		order = append(order, spec.QuoteIdent(c.Name))
	}
	rows, err := conn.QueryContext(ctx, "SELECT * FROM "+spec.QuoteIdent(batchTable(v.Name))+" ORDER BY "+strings.Join(order, ", "))
	if err != nil {
		return nil, fmt.Errorf("cannot read the batch results of view %s: %w", v.Name, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	out := make([][]any, 0, n)
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("cannot read the batch results of view %s: %w", v.Name, err)
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot read the batch results of view %s: %w", v.Name, err)
	}
	return newRowIndex(v, out), nil
}

// speedIndex holds the speed windows swapped in, as rows like DuckDB's, in
// window and group order.
func speedIndex(v *spec.View, ups []stream.Update) *rowIndex {
	rows := make([][]any, len(ups))
	for i, u := range ups {
		r := make([]any, 0, 2+len(v.GroupBy)+len(v.Measures))
		r = append(r, time.UnixMicro(u.Start).UTC(), time.UnixMicro(u.End).UTC())
		for j, c := range v.GroupBy {
			r = append(r, driverValue(u.Dims[j], c.Type))
		}
		for _, m := range u.Measures {
			r = append(r, driverValue(m, spec.TypeInt))
		}
		rows[i] = r
	}
	slices.SortFunc(rows, func(a, b []any) int {
		for i := range 2 + len(v.GroupBy) {
			if c := compareValues(a[i], b[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	return newRowIndex(v, rows)
}

// compareValues orders values as DuckDB's ORDER BY does: NULLs last.
func compareValues(a, b any) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	switch a := a.(type) {
	case string:
		return strings.Compare(a, b.(string))
	case int64:
		return cmp.Compare(a, b.(int64))
	case bool:
		return cmp.Compare(boolInt(a), boolInt(b.(bool)))
	case time.Time:
		return a.Compare(b.(time.Time))
	}
	return 0
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// bounds turns from and to (zero: unbounded) into microseconds.
func bounds(from, to time.Time) (int64, int64) {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !from.IsZero() {
		lo = from.UnixMicro()
	}
	if !to.IsZero() {
		hi = to.UnixMicro()
	}
	return lo, hi
}
