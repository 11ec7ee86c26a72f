package lake

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/duckdb/duckdb-go/v2"

	"tideline/spec"
)

// ErrIncompatible: the spec's contract cannot read rows the lake holds.
var ErrIncompatible = errors.New("incompatible contract change")

// PropContract, followed by a contract fingerprint, is a raw table
// property holding the spec.ContractDoc of rows written with that contract.
// Every compact commit names the fingerprint it wrote with in
// Meta[MetaContract].
const (
	PropContract = "contract/"
	MetaContract = "contract"
)

// RecordedContract is a contract some rows of a raw table were written
// with.
type RecordedContract struct {
	Fingerprint string
	Doc         spec.ContractDoc
	Version     int64 // the commit that first recorded it (0 if unknown)
}

// Contracts returns the contracts a raw table's rows were written with,
// oldest first.
func Contracts(s *Snapshot) ([]RecordedContract, error) {
	var out []RecordedContract
	for k, v := range s.Props {
		fp, ok := strings.CutPrefix(k, PropContract)
		if !ok {
			continue
		}
		rc := RecordedContract{Fingerprint: fp, Version: s.PropVersion[k]}
		if err := json.Unmarshal([]byte(v), &rc.Doc); err != nil {
			return nil, fmt.Errorf("cannot read the contract %s recorded in table %s: %w: %w", fp, s.Table, ErrCorrupt, err)
		}
		out = append(out, rc)
	}
	slices.SortFunc(out, func(a, b RecordedContract) int {
		if a.Version != b.Version {
			return int(a.Version - b.Version)
		}
		return strings.Compare(a.Fingerprint, b.Fingerprint)
	})
	return out, nil
}

// ContractProps returns the fingerprint of c and the property recording
// it, or no property when the snapshot has it already.
func ContractProps(s *Snapshot, c *spec.Contract) (string, map[string]string) {
	doc := c.Doc()
	fp := doc.Fingerprint()
	if _, ok := s.Props[PropContract+fp]; ok {
		return fp, nil
	}
	data, _ := json.Marshal(doc)
	return fp, map[string]string{PropContract + fp: string(data)}
}

// CheckContract refuses a contract that cannot read every row a raw table
// holds: each breaking change against each contract recorded there, naming
// the field, both definitions and the commit that recorded the old one.
func CheckContract(s *Snapshot, stream string, c *spec.Contract) error {
	recorded, err := Contracts(s)
	if err != nil {
		return err
	}
	var lines []string
	for _, rc := range recorded {
		for _, ch := range spec.Breaking(spec.CompareContracts(rc.Doc, c.Doc())) {
			at := "an earlier commit"
			if rc.Version > 0 {
				at = "commit " + strconv.FormatInt(rc.Version, 10)
			}
			lines = append(lines, fmt.Sprintf("field %s: %s in the lake (contract %s, since %s of table %s), %s in the spec: %s",
				ch.Field, ch.Old, rc.Fingerprint, at, s.Table, ch.New, ch.Note))
		}
	}
	if len(lines) == 0 {
		return nil
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	return fmt.Errorf("stream %s: %w: the lake holds rows this contract cannot read:\n  %s\nundo the change, or give the field a new name",
		stream, ErrIncompatible, strings.Join(lines, "\n  "))
}

// Queryer runs queries: a *sql.DB, or a *sql.Conn inside a transaction.
type Queryer interface {
	Execer
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// SelectFiles is a query reading files in schema's columns, whatever
// contract each was written with: columns are matched by name
// (union_by_name), a column no file has reads as a typed null, and a column
// the schema does not have is left out. With no files it is an empty
// relation of the schema's columns.
func SelectFiles(ctx context.Context, q Queryer, schema *arrow.Schema, paths []string) (string, error) {
	if len(paths) == 0 {
		return selectColumns(schema, nil) + " LIMIT 0", nil
	}
	quoted := make([]string, len(paths))
	for i, p := range paths {
		quoted[i] = spec.QuoteString(p)
	}
	from := "read_parquet([" + strings.Join(quoted, ", ") + "], union_by_name = true)"
	rows, err := q.QueryContext(ctx, "DESCRIBE SELECT * FROM "+from)
	if err != nil {
		return "", fmt.Errorf("cannot read the columns of %d lake file(s): %w", len(paths), err)
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var name string
		var rest [5]sql.NullString
		if err := rows.Scan(&name, &rest[0], &rest[1], &rest[2], &rest[3], &rest[4]); err != nil {
			return "", fmt.Errorf("cannot read the columns of %d lake file(s): %w", len(paths), err)
		}
		have[name] = true
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("cannot read the columns of %d lake file(s): %w", len(paths), err)
	}
	return selectColumns(schema, have) + " FROM " + from, nil
}

// selectColumns selects schema's columns, typed nulls for those not in have.
func selectColumns(schema *arrow.Schema, have map[string]bool) string {
	cols := make([]string, schema.NumFields())
	for i, f := range schema.Fields() {
		if have[f.Name] {
			cols[i] = spec.QuoteIdent(f.Name)
		} else {
			cols[i] = "CAST(NULL AS " + DuckDBType(f.Type) + ") AS " + spec.QuoteIdent(f.Name)
		}
	}
	return "SELECT " + strings.Join(cols, ", ")
}

// IsQueryError reports whether err is DuckDB refusing a query as written
// (it cannot parse, bind, plan or convert it): running it again over the
// same files fails the same way.
func IsQueryError(err error) bool {
	var de *duckdb.Error
	if !errors.As(err, &de) {
		return false
	}
	switch de.Type {
	case duckdb.ErrorTypeBinder, duckdb.ErrorTypeParser, duckdb.ErrorTypeSyntax, duckdb.ErrorTypeCatalog,
		duckdb.ErrorTypePlanner, duckdb.ErrorTypeConversion:
		return true
	}
	return false
}

// CheckSpec runs CheckContract for every stream of s against its raw
// table in store.
func CheckSpec(ctx context.Context, store Store, s *spec.Spec) error {
	var errs []error
	for _, st := range s.Streams {
		snap, err := OpenTable(store, RawTable(st.Name)).Snapshot(ctx)
		if err != nil {
			return fmt.Errorf("cannot check spec %s against the lake at %s: %w", s.File, store, err)
		}
		if err := CheckContract(snap, st.Name, st.Contract); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cannot use spec %s with the lake at %s: %w", s.File, store, errors.Join(errs...))
	}
	return nil
}
