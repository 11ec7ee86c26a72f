package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// ErrRefused marks a query the server will not run; its message says why.
var ErrRefused = errors.New("query refused")

// allowedTableFunctions are the table functions a query may call: they make
// rows and touch nothing.
var allowedTableFunctions = []string{"range", "generate_series", "unnest"}

// checkSQL has DuckDB parse the query and accepts exactly one SELECT that
// calls no table function but the allowed ones.
func (s *Server) checkSQL(ctx context.Context, query string) error {
	var parsed string
	if err := s.db.QueryRowContext(ctx, "SELECT CAST(json_serialize_sql(CAST(? AS VARCHAR)) AS VARCHAR)", query).Scan(&parsed); err != nil {
		return fmt.Errorf("%w: cannot parse it: %v", ErrRefused, err)
	}
	var tree struct {
		Error      bool              `json:"error"`
		Message    string            `json:"error_message"`
		Statements []json.RawMessage `json:"statements"`
	}
	if err := json.Unmarshal([]byte(parsed), &tree); err != nil {
		return fmt.Errorf("%w: cannot read its parse tree: %v", ErrRefused, err)
	}
	switch {
	case tree.Error && tree.Message == "Only SELECT statements can be serialized to json!":
		return fmt.Errorf("%w: only a SELECT may run here (no COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA, DDL or DML)", ErrRefused)
	case tree.Error:
		return fmt.Errorf("%w: %s", ErrRefused, tree.Message)
	case len(tree.Statements) != 1:
		return fmt.Errorf("%w: send one statement, not %d", ErrRefused, len(tree.Statements))
	}
	var node any
	if err := json.Unmarshal(tree.Statements[0], &node); err != nil {
		return fmt.Errorf("%w: cannot read its parse tree: %v", ErrRefused, err)
	}
	if name := forbiddenTableFunction(node); name != "" {
		return fmt.Errorf("%w: table function %s() is not allowed (only %v): views and tables are queried by name", ErrRefused, name, allowedTableFunctions)
	}
	return nil
}

// forbiddenTableFunction walks a parse tree for a table function not in the
// allowed list and returns its name.
func forbiddenTableFunction(n any) string {
	switch n := n.(type) {
	case map[string]any:
		if n["type"] == "TABLE_FUNCTION" {
			if f, ok := n["function"].(map[string]any); ok {
				if name, _ := f["function_name"].(string); !slices.Contains(allowedTableFunctions, name) {
					return name
				}
			}
		}
		for _, c := range n {
			if name := forbiddenTableFunction(c); name != "" {
				return name
			}
		}
	case []any:
		for _, c := range n {
			if name := forbiddenTableFunction(c); name != "" {
				return name
			}
		}
	}
	return ""
}

// Result is a query's answer. Error is set when the answer was cut short
// after it had started (a limit, or a failure while reading it): the rows
// before it were sent, the rest were not.
type Result struct {
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
	Error   string   `json:"error,omitempty"`
}

// Query runs one read-only SELECT under the time and row limits, on one
// snapshot of the views, and collects its rows.
func (s *Server) Query(ctx context.Context, query string, args ...any) (*Result, error) {
	if err := s.checkSQL(ctx, query); err != nil {
		s.metrics.refused.Inc()
		return nil, err
	}
	return s.run(ctx, query, args...)
}

// run executes a checked query and collects at most MaxRows rows.
func (s *Server) run(ctx context.Context, query string, args ...any) (*Result, error) {
	res := &Result{Rows: [][]any{}}
	err := s.each(ctx, query, args, func(cols []string) error {
		res.Columns = cols
		return nil
	}, func(vals []any) error {
		res.Rows = append(res.Rows, vals)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// each executes a checked query under the time limit, calls head with its
// columns and row with each row, and refuses past MaxRows. DuckDB runs it
// in a transaction of its own, on the snapshot committed when it started.
func (s *Server) each(ctx context.Context, query string, args []any, head func([]string) error, row func([]any) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return s.queryErr(ctx, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	if err := head(cols); err != nil {
		return err
	}
	n := 0
	for rows.Next() {
		if n == s.cfg.MaxRows {
			s.metrics.refused.Inc()
			return fmt.Errorf("%w: it returns more than %d rows; add a LIMIT or narrow it", ErrRefused, s.cfg.MaxRows)
		}
		vals := make([]any, len(cols))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return s.queryErr(ctx, err)
		}
		if err := row(vals); err != nil {
			return err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return s.queryErr(ctx, err)
	}
	return nil
}

// ErrBusy marks a query refused because as many as the server allows are
// running.
var ErrBusy = errors.New("too many queries")

// acquire takes one of the slots that bound the queries running at once,
// without waiting: a full server answers at once rather than queueing.
func (s *Server) acquire() (release func(), err error) {
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	default:
		s.metrics.refused.Inc()
		return nil, fmt.Errorf("%w: %d queries are running, the most this server runs at once (--max-queries); retry in a moment", ErrBusy, cap(s.slots))
	}
}

// streamQuery writes a checked query's answer as it reads it: the status
// and columns first, then each row, so the server never holds the answer
// whole. Past MaxResponseBytes or MaxRows it stops and ends the answer with
// "error" saying which limit; an answer cut short is valid JSON still.
func (s *Server) streamQuery(ctx context.Context, w http.ResponseWriter, query string) {
	bw := bufio.NewWriterSize(w, 64<<10)
	written, n := 0, 0
	write := func(b ...[]byte) {
		for _, x := range b {
			m, _ := bw.Write(x)
			written += m
		}
	}
	started := false
	err := s.each(ctx, query, nil, func(cols []string) error {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		started = true
		b, _ := json.Marshal(cols)
		write([]byte(`{"columns":`), b, []byte(`,"rows":[`))
		return nil
	}, func(vals []any) error {
		b, err := json.Marshal(vals)
		if err != nil {
			return fmt.Errorf("%w: cannot encode a row as JSON: %v", ErrRefused, err)
		}
		if int64(written+len(b)+1) > s.cfg.MaxResponseBytes {
			s.metrics.refused.Inc()
			return fmt.Errorf("%w: the answer is larger than %d bytes (--max-response-bytes); add a LIMIT, select fewer columns or narrow it", ErrRefused, s.cfg.MaxResponseBytes)
		}
		if n > 0 {
			write([]byte{','})
		}
		write(b)
		n++
		return nil
	})
	if !started {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	write([]byte{']'})
	if err != nil {
		msg, _ := json.Marshal(err.Error())
		write([]byte(`,"error":`), msg)
	}
	write([]byte("}\n"))
	_ = bw.Flush()
}

func (s *Server) queryErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		s.metrics.refused.Inc()
		return fmt.Errorf("%w: it ran longer than %s", ErrRefused, s.cfg.QueryTimeout)
	}
	return fmt.Errorf("%w: %v", ErrRefused, err)
}

// timeOrZero parses an optional RFC 3339 parameter.
func timeOrZero(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}
