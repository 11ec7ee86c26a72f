package lake

import (
	"cmp"
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
	// Unique names columns whose values rarely repeat, such as event ids:
	// they skip dictionary encoding, which would only cost time there.
	Unique []string
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
		// Sort (time, position) pairs: stable by construction, and far
		// faster than a stable sort through the row slab.
		col := idx[0]
		keys := make([]sortKey, n)
		for i := range keys {
			keys[i] = sortKey{t: rows.vals[i*rows.ncol+col].Int, i: int32(i)}
		}
		slices.SortFunc(keys, func(a, b sortKey) int {
			if a.t != b.t {
				return cmp.Compare(a.t, b.t)
			}
			return cmp.Compare(a.i, b.i)
		})
		for i, k := range keys {
			order[i] = k.i
		}
		if n > 0 {
			meta.MinTime, meta.MaxTime = keys[0].t, keys[n-1].t
		}
	}
	groupRows := o.RowGroupRows
	if groupRows <= 0 {
		groupRows = DefaultRowGroupRows
	}
	popts := []parquet.WriterProperty{
		parquet.WithCompression(compress.Codecs.Zstd),
		parquet.WithStats(true),
		parquet.WithMaxRowGroupLength(int64(groupRows)),
		parquet.WithCreatedBy("tideline"),
	}
	for _, c := range o.Unique {
		popts = append(popts, parquet.WithDictionaryFor(c, false))
	}
	props := parquet.NewWriterProperties(popts...)
	fw, err := pqarrow.NewFileWriter(rows.Schema, w, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return FileMeta{}, fmt.Errorf("cannot start Parquet writer: %w", err)
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, rows.Schema)
	defer b.Release()
	for start := 0; start < n || (n == 0 && start == 0); start += groupRows {
		end := min(start+groupRows, n)
		appendRows(b, rows, order[start:end])
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

type sortKey struct {
	t int64
	i int32
}

// appendRows appends the rows in order to the record builder's columns,
// row by row, so each row is read from the slab once.
func appendRows(b *array.RecordBuilder, rows *Rows, order []int32) {
	ncol := rows.ncol
	strs := make([]*array.StringBuilder, ncol)
	ints := make([]*array.Int64Builder, ncol)
	bools := make([]*array.BooleanBuilder, ncol)
	tss := make([]*array.TimestampBuilder, ncol)
	for c := range ncol {
		fb := b.Field(c)
		fb.Reserve(len(order))
		switch x := fb.(type) {
		case *array.StringBuilder:
			strs[c] = x
		case *array.Int64Builder:
			ints[c] = x
		case *array.BooleanBuilder:
			bools[c] = x
		case *array.TimestampBuilder:
			tss[c] = x
		default:
			panic(fmt.Sprintf("lake: unsupported column builder %T", fb))
		}
	}
	for _, i := range order {
		row := rows.vals[int(i)*ncol : int(i)*ncol+ncol]
		for c := range row {
			v := &row[c]
			switch {
			case v.Null:
				b.Field(c).AppendNull()
			case strs[c] != nil:
				strs[c].Append(v.Str)
			case ints[c] != nil:
				ints[c].UnsafeAppend(v.Int)
			case tss[c] != nil:
				tss[c].UnsafeAppend(arrow.Timestamp(v.Int))
			default:
				bools[c].UnsafeAppend(v.Bool)
			}
		}
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
