package spec

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"
)

// A group is one combination of a view's group-by values. Every package
// keys groups through here: the speed layer's operator, the batch layer's
// window maps and serve's indexes, so that equal groups get equal keys
// whatever the values came from (an event, DuckDB, a KV update, a query
// parameter).

// AppendGroupKey appends the key of a group: its values, one per GroupBy
// column. Two groups have the same key exactly when their values are
// equal (nulls equal to nulls).
func (v *View) AppendGroupKey(b []byte, dims []Value) []byte {
	for i, c := range v.GroupBy {
		b = AppendKeyValue(b, c.Type, dims[i])
	}
	return b
}

// AppendRowGroupKey is AppendGroupKey of a prepared row's group-by values,
// read in place.
func (v *View) AppendRowGroupKey(b []byte, r Row) []byte {
	for _, c := range v.GroupBy {
		b = AppendKeyValue(b, c.Type, r[c.Index])
	}
	return b
}

// AppendKeyValue appends one value of type t to a group key.
func AppendKeyValue(b []byte, t Type, x Value) []byte {
	if x.Null {
		return append(b, 0)
	}
	b = append(b, 1)
	switch t {
	case TypeString:
		b = binary.AppendUvarint(b, uint64(len(x.Str)))
		return append(b, x.Str...)
	case TypeBool:
		if x.Bool {
			return append(b, 1)
		}
		return append(b, 0)
	}
	return binary.AppendVarint(b, x.Int)
}

// GroupHash is a short, stable name of a group's values: the suffix of
// its windows' keys in the speed layer's KV bucket. It must never change,
// or a restart would not find the windows it wrote.
func GroupHash(dims []Value) string {
	h := fnv.New64a()
	var b [8]byte
	for _, d := range dims {
		if d.Null {
			h.Write([]byte{0})
			continue
		}
		h.Write([]byte{1})
		h.Write([]byte(d.Str))
		binary.LittleEndian.PutUint64(b[:], uint64(d.Int))
		h.Write(b[:])
		if d.Bool {
			h.Write([]byte{1})
		}
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

// ValueOf is the Value of x, a value as database/sql returns it from
// DuckDB (or a query parameter parsed to the same Go types): nil, string,
// bool, int64 or time.Time.
func ValueOf(x any) Value {
	switch x := x.(type) {
	case nil:
		return Value{Null: true}
	case string:
		return Value{Str: x}
	case bool:
		return Value{Bool: x}
	case int64:
		return Value{Int: x}
	case time.Time:
		return Value{Int: x.UnixMicro()}
	}
	return Value{Str: fmt.Sprint(x)}
}
