package lake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"tideline/spec"
)

// ErrCorrupt marks an object that is not the Parquet file its commit says.
var ErrCorrupt = errors.New("corrupt object")

// DefaultRowGroupRows is the row group size: within the 100k to 1M rows
// DuckDB parallelises well over.
const DefaultRowGroupRows = 512 * 1024

// Rows is a batch of rows of one schema, held row-major in one slab.
type Rows struct {
	Schema *arrow.Schema
	ncol   int
	vals   []spec.Value
}

// NewRows returns an empty batch for schema with room for n rows.
func NewRows(schema *arrow.Schema, n int) *Rows {
	return &Rows{Schema: schema, ncol: schema.NumFields(), vals: make([]spec.Value, 0, n*schema.NumFields())}
}

// Append adds a row; it must have one value per schema field.
func (r *Rows) Append(row ...spec.Value) {
	if len(row) != r.ncol {
		panic(fmt.Sprintf("lake: row has %d values, schema has %d fields", len(row), r.ncol))
	}
	r.vals = append(r.vals, row...)
}

// Len is the number of rows.
func (r *Rows) Len() int { return len(r.vals) / max(r.ncol, 1) }

// Row returns row i; it aliases the batch.
func (r *Rows) Row(i int) []spec.Value { return r.vals[i*r.ncol : (i+1)*r.ncol] }

// FileMeta describes a written file.
type FileMeta struct {
	Rows             int64
	Bytes            int64
	MinTime, MaxTime int64 // of the sort column, UTC microseconds; 0 if none
}

// WriteOptions tune WriteParquet.
type WriteOptions struct {
	// SortBy is the name of the timestamp column rows are ordered by
	// ("" keeps the order given).
	SortBy string
	// RowGroupRows caps rows per row group (DefaultRowGroupRows when 0).
	RowGroupRows int
}

// WriteParquet writes rows as one Parquet file to path: zstd, column
// statistics on, rows ordered by SortBy, row groups of RowGroupRows.
func WriteParquet(path string, rows *Rows, o WriteOptions) (FileMeta, error) {
	f, err := os.Create(path)
	if err != nil {
		return FileMeta{}, fmt.Errorf("cannot create %s: %w", path, err)
	}
	meta, err := writeParquet(struct{ io.Writer }{f}, rows, o) // the Parquet writer would close f itself
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("cannot write %s: %w", path, cerr)
	}
	if err != nil {
		os.Remove(path)
		return FileMeta{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return FileMeta{}, err
	}
	meta.Bytes = st.Size()
	return meta, nil
}

func writeParquet(w io.Writer, rows *Rows, o WriteOptions) (FileMeta, error) {
	n := rows.Len()
	order := make([]int32, n)
	for i := range order {
		order[i] = int32(i)
	}
	meta := FileMeta{Rows: int64(n)}
	if o.SortBy != "" {
		idx := rows.Schema.FieldIndices(o.SortBy)
		if len(idx) != 1 {
			return FileMeta{}, fmt.Errorf("cannot sort by %q: no such column", o.SortBy)
		}
		col := idx[0]
		slices.SortStableFunc(order, func(a, b int32) int {
			x, y := rows.vals[int(a)*rows.ncol+col].Int, rows.vals[int(b)*rows.ncol+col].Int
			return int(min(max(x-y, -1), 1))
		})
		if n > 0 {
			meta.MinTime = rows.vals[int(order[0])*rows.ncol+col].Int
			meta.MaxTime = rows.vals[int(order[n-1])*rows.ncol+col].Int
		}
	}
	groupRows := o.RowGroupRows
	if groupRows <= 0 {
		groupRows = DefaultRowGroupRows
	}
	props := parquet.NewWriterProperties(
		parquet.WithCompression(compress.Codecs.Zstd),
		parquet.WithStats(true),
		parquet.WithMaxRowGroupLength(int64(groupRows)),
		parquet.WithCreatedBy("tideline"),
	)
	fw, err := pqarrow.NewFileWriter(rows.Schema, w, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return FileMeta{}, fmt.Errorf("cannot start Parquet writer: %w", err)
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, rows.Schema)
	defer b.Release()
	for start := 0; start < n || (n == 0 && start == 0); start += groupRows {
		end := min(start+groupRows, n)
		for c := range rows.ncol {
			appendColumn(b.Field(c), rows, order[start:end], c)
		}
		rec := b.NewRecordBatch()
		err := fw.Write(rec) // one row group per call
		rec.Release()
		if err != nil {
			fw.Close()
			return FileMeta{}, fmt.Errorf("cannot write Parquet row group: %w", err)
		}
		if n == 0 {
			break
		}
	}
	if err := fw.Close(); err != nil {
		return FileMeta{}, fmt.Errorf("cannot finish Parquet file: %w", err)
	}
	return meta, nil
}

func appendColumn(fb array.Builder, rows *Rows, order []int32, c int) {
	fb.Reserve(len(order))
	at := func(i int32) *spec.Value { return &rows.vals[int(i)*rows.ncol+c] }
	switch b := fb.(type) {
	case *array.StringBuilder:
		for _, i := range order {
			if v := at(i); v.Null {
				b.AppendNull()
			} else {
				b.Append(v.Str)
			}
		}
	case *array.Int64Builder:
		for _, i := range order {
			if v := at(i); v.Null {
				b.AppendNull()
			} else {
				b.UnsafeAppend(v.Int)
			}
		}
	case *array.BooleanBuilder:
		for _, i := range order {
			if v := at(i); v.Null {
				b.AppendNull()
			} else {
				b.UnsafeAppend(v.Bool)
			}
		}
	case *array.TimestampBuilder:
		for _, i := range order {
			if v := at(i); v.Null {
				b.AppendNull()
			} else {
				b.UnsafeAppend(arrow.Timestamp(v.Int))
			}
		}
	default:
		panic(fmt.Sprintf("lake: unsupported column builder %T", fb))
	}
}

// CheckParquet opens a Parquet file's footer and returns its row count. A
// truncated or garbled file fails with ErrCorrupt.
func CheckParquet(path string) (int64, error) {
	r, err := file.OpenParquetFile(path, false)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	defer r.Close()
	return r.NumRows(), nil
}

// PutParquet writes rows as a Parquet file and uploads it to key, returning
// the File to commit. Uploading the same rows to the same key again, as a
// retry does, replaces the object with identical content.
func PutParquet(ctx context.Context, store Store, key, partition string, rows *Rows, o WriteOptions) (File, error) {
	tmp, err := os.CreateTemp("", "tideline-*.parquet")
	if err != nil {
		return File{}, fmt.Errorf("cannot stage %s: %w", key, err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	meta, err := WriteParquet(tmp.Name(), rows, o)
	if err != nil {
		return File{}, fmt.Errorf("cannot write %s: %w", key, err)
	}
	f, err := os.Open(tmp.Name())
	if err != nil {
		return File{}, fmt.Errorf("cannot stage %s: %w", key, err)
	}
	defer f.Close()
	info, err := store.Put(ctx, key, f, meta.Bytes)
	if err != nil {
		return File{}, err
	}
	return File{Key: key, Partition: partition, Rows: meta.Rows, Bytes: meta.Bytes, ETag: info.ETag, MinTime: meta.MinTime, MaxTime: meta.MaxTime}, nil
}
