package lake

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
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
// DuckDB parallelises well over, and small enough that the writer builds
// one while it encodes the one before.
const DefaultRowGroupRows = 128 * 1024

// Rows is a batch of rows of one schema, held row-major in blocks of
// rowsPerBlock rows: appending never copies the rows already there.
type Rows struct {
	Schema *arrow.Schema
	ncol   int
	n      int
	blocks [][]spec.Value
}

const rowsPerBlock = 4096

// NewRows returns an empty batch for schema with room for n rows.
func NewRows(schema *arrow.Schema, n int) *Rows {
	r := &Rows{Schema: schema, ncol: schema.NumFields()}
	r.blocks = [][]spec.Value{make([]spec.Value, 0, min(max(n, 1), rowsPerBlock)*r.ncol)}
	return r
}

// Append adds a row; it must have one value per schema field.
func (r *Rows) Append(row ...spec.Value) { r.AppendWith(row) }

// AppendWith adds a row made of row then extra, which must have one value
// per schema field in all.
func (r *Rows) AppendWith(row []spec.Value, extra ...spec.Value) {
	if len(row)+len(extra) != r.ncol {
		panic(fmt.Sprintf("lake: row has %d values, schema has %d fields", len(row)+len(extra), r.ncol))
	}
	last := &r.blocks[len(r.blocks)-1]
	if len(*last) == rowsPerBlock*r.ncol {
		r.blocks = append(r.blocks, make([]spec.Value, 0, rowsPerBlock*r.ncol))
		last = &r.blocks[len(r.blocks)-1]
	} else if len(*last)+r.ncol > cap(*last) {
		grown := make([]spec.Value, len(*last), min(2*cap(*last)+r.ncol, rowsPerBlock*r.ncol))
		copy(grown, *last)
		*last = grown
	}
	*last = append(append(*last, row...), extra...)
	r.n++
}

// Len is the number of rows.
func (r *Rows) Len() int { return r.n }

// Row returns row i; it aliases the batch.
func (r *Rows) Row(i int) []spec.Value {
	b, at := i/rowsPerBlock, (i%rowsPerBlock)*r.ncol
	return r.blocks[b][at : at+r.ncol]
}

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
			keys[i] = sortKey{t: rows.Row(i)[col].Int, i: int32(i)}
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
	// Dictionary encoding for the strings that repeat (built here, below)
	// only: numbers and times, mostly distinct, would be hashed for
	// nothing.
	schema, dict := dictionarySchema(rows.Schema, o.Unique)
	for c, f := range schema.Fields() {
		if !dict[c] {
			popts = append(popts, parquet.WithDictionaryFor(f.Name, false))
		}
	}
	props := parquet.NewWriterProperties(popts...)
	// Strings that repeat go in as Arrow dictionaries built here, with a Go
	// map: the Parquet writer then writes their indices as they are,
	// instead of hashing every value into its own dictionary (which
	// allocated once per value and was most of the write's time).
	fw, err := pqarrow.NewFileWriter(schema, w, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return FileMeta{}, fmt.Errorf("cannot start Parquet writer: %w", err)
	}
	// Row groups are built side by side, up to one per core ahead, while
	// this goroutine encodes and compresses them in order.
	var starts []int
	for start := 0; start < n || (n == 0 && start == 0); start += groupRows {
		starts = append(starts, start)
		if n == 0 {
			break
		}
	}
	built := make([]chan arrow.RecordBatch, len(starts))
	for i := range built {
		built[i] = make(chan arrow.RecordBatch, 1)
	}
	ahead := make(chan struct{}, runtime.GOMAXPROCS(0))
	stop := make(chan struct{})
	go func() {
		for i, start := range starts {
			select {
			case ahead <- struct{}{}:
			case <-stop:
				return
			}
			go func() {
				built[i] <- buildRecord(schema, dict, rows, order[start:min(start+groupRows, n)])
			}()
		}
	}()
	written := 0
	defer func() {
		close(stop)
		for _, ch := range built[written:] {
			select { // release what was built and not written
			case rec := <-ch:
				rec.Release()
			default:
			}
		}
	}()
	for _, ch := range built {
		rec := <-ch
		<-ahead
		written++
		err := fw.Write(rec) // one row group per call
		rec.Release()
		if err != nil {
			fw.Close()
			return FileMeta{}, fmt.Errorf("cannot write Parquet row group: %w", err)
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

var stringDictionary = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}

// dictionarySchema is schema with its string columns, but those named in
// unique, as dictionaries; dict says which columns those are. Readers see
// strings either way: Parquet stores a dictionary-encoded string column.
func dictionarySchema(schema *arrow.Schema, unique []string) (*arrow.Schema, []bool) {
	fields := slices.Clone(schema.Fields())
	dict := make([]bool, len(fields))
	for i, f := range fields {
		if f.Type.ID() == arrow.STRING && !slices.Contains(unique, f.Name) {
			fields[i].Type, dict[i] = stringDictionary, true
		}
	}
	md := schema.Metadata()
	return arrow.NewSchema(fields, &md), dict
}

// dictColumn builds one dictionary-encoded string column.
type dictColumn struct {
	index   map[string]int32
	indices *array.Int32Builder
	values  *array.StringBuilder
}

func (d *dictColumn) append(v *spec.Value) {
	if v.Null {
		d.indices.AppendNull()
		return
	}
	i, ok := d.index[v.Str]
	if !ok {
		i = int32(len(d.index))
		d.index[v.Str] = i
		d.values.Append(v.Str)
	}
	d.indices.UnsafeAppend(i)
}

// buildRecord builds one record batch of the rows in order, row by row, so
// each row is read from the slab once.
func buildRecord(schema *arrow.Schema, dict []bool, rows *Rows, order []int32) arrow.RecordBatch {
	ncol := rows.ncol
	mem := memory.DefaultAllocator
	builders := make([]array.Builder, ncol)
	dicts := make([]*dictColumn, ncol)
	strs := make([]*array.StringBuilder, ncol)
	ints := make([]*array.Int64Builder, ncol)
	bools := make([]*array.BooleanBuilder, ncol)
	tss := make([]*array.TimestampBuilder, ncol)
	for c, f := range schema.Fields() {
		if dict[c] {
			d := &dictColumn{index: map[string]int32{}, indices: array.NewInt32Builder(mem), values: array.NewStringBuilder(mem)}
			d.indices.Reserve(len(order))
			dicts[c] = d
			continue
		}
		b := array.NewBuilder(mem, f.Type)
		b.Reserve(len(order))
		builders[c] = b
		switch x := b.(type) {
		case *array.StringBuilder:
			strs[c] = x
		case *array.Int64Builder:
			ints[c] = x
		case *array.BooleanBuilder:
			bools[c] = x
		case *array.TimestampBuilder:
			tss[c] = x
		default:
			panic(fmt.Sprintf("lake: unsupported column builder %T", b))
		}
	}
	if len(order) > 0 {
		// Unique strings: room for their bytes at once, from a sample.
		first := rows.Row(int(order[0]))
		for c := range ncol {
			if strs[c] != nil {
				strs[c].ReserveData(len(order) * (len(first[c].Str) + 4))
			}
		}
	}
	for _, i := range order {
		row := rows.Row(int(i))
		for c := range row {
			v := &row[c]
			switch {
			case dicts[c] != nil:
				dicts[c].append(v)
			case v.Null:
				builders[c].AppendNull()
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
	cols := make([]arrow.Array, ncol)
	for c := range ncol {
		if d := dicts[c]; d != nil {
			idx, vals := d.indices.NewArray(), d.values.NewArray()
			cols[c] = array.NewDictionaryArray(stringDictionary, idx, vals)
			idx.Release()
			vals.Release()
			d.indices.Release()
			d.values.Release()
			continue
		}
		cols[c] = builders[c].NewArray()
		builders[c].Release()
	}
	rec := array.NewRecordBatch(schema, cols, int64(len(order)))
	for _, col := range cols {
		col.Release()
	}
	return rec
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
