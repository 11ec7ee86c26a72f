package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// Result is a query's answer.
type Result struct {
	Columns []string `json:"columns"`
	Rows    [][]any  `json:"rows"`
}

// Query runs one read-only SELECT under the time and row limits, on one
// snapshot of the views.
func (s *Server) Query(ctx context.Context, query string, args ...any) (*Result, error) {
	if err := s.checkSQL(ctx, query); err != nil {
		s.metrics.refused.Inc()
		return nil, err
	}
	return s.run(ctx, query, args...)
}

// run executes a checked query.
func (s *Server) run(ctx context.Context, query string, args ...any) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	s.mu.RLock()
	defer s.mu.RUnlock()
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.queryErr(ctx, err)
	}
	defer rows.Close()
	res := &Result{Rows: [][]any{}}
	if res.Columns, err = rows.Columns(); err != nil {
		return nil, err
	}
	for rows.Next() {
		if len(res.Rows) == s.cfg.MaxRows {
			s.metrics.refused.Inc()
			return nil, fmt.Errorf("%w: it returns more than %d rows; add a LIMIT or narrow it", ErrRefused, s.cfg.MaxRows)
		}
		vals := make([]any, len(res.Columns))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, s.queryErr(ctx, err)
		}
		res.Rows = append(res.Rows, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, s.queryErr(ctx, err)
	}
	return res, nil
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
