package serve

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"tideline/spec"
)

// appendViewResponse writes GET /v1/views' answer exactly as encoding/json
// writes a ViewResponse (map keys sorted, HTML characters escaped, a final
// newline), without reflection or a map per row: this is the hot path of
// view reads. rows[:nbatch] are batch rows, the rest speed; each is
// window_start, window_end, the dimensions, then the measures.
func appendViewResponse(b []byte, v *spec.View, tideline, watermark time.Time, stale string, rows [][]any, nbatch int) []byte {
	b = append(b, `{"view":`...)
	b = appendJSONString(b, v.Name)
	b = append(b, `,"tideline":`...)
	b = appendJSONTime(b, tideline)
	b = append(b, `,"watermark":`...)
	b = appendJSONTime(b, watermark)
	if stale != "" {
		b = append(b, `,"stale":`...)
		b = appendJSONString(b, stale)
	}
	b = append(b, `,"rows":[`...)
	dims := sortedBy(len(v.GroupBy), func(i int) string { return v.GroupBy[i].Name })
	measures := sortedBy(len(v.Measures), func(i int) string { return v.Measures[i].Name })
	for i, r := range rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"window_start":`...)
		b = appendJSONTime(b, r[0].(time.Time).UTC())
		b = append(b, `,"window_end":`...)
		b = appendJSONTime(b, r[1].(time.Time).UTC())
		b = append(b, `,"dims":{`...)
		for j, d := range dims {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, v.GroupBy[d].Name)
			b = append(b, ':')
			b = appendJSONAny(b, r[2+d], 0)
		}
		b = append(b, `},"measures":{`...)
		for j, m := range measures {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, v.Measures[m].Name)
			b = append(b, ':')
			_, scale := v.Measures[m].Type()
			b = appendJSONAny(b, r[2+len(v.GroupBy)+m], scale)
		}
		if i < nbatch {
			b = append(b, `},"source":"batch"}`...)
		} else {
			b = append(b, `},"source":"speed"}`...)
		}
	}
	return append(b, "]}\n"...)
}

// sortedBy returns 0..n-1 ordered by name(i), as encoding/json orders map
// keys.
func sortedBy(n int, name func(int) string) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		switch x, y := name(a), name(b); {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	return idx
}

// appendJSONAny writes a scanned value; an int64 with a scale is a decimal
// in minor units, written as an exact decimal number.
func appendJSONAny(b []byte, x any, scale int) []byte {
	switch x := x.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendJSONString(b, x)
	case int64:
		return spec.AppendDecimal(b, x, scale)
	case bool:
		return strconv.AppendBool(b, x)
	case time.Time:
		return appendJSONTime(b, x)
	}
	q, _ := json.Marshal(x)
	return append(b, q...)
}

// appendJSONTime writes t as time.Time's MarshalJSON does, with a fast path
// for the common case: UTC, whole seconds, years 1000 to 9999.
func appendJSONTime(b []byte, t time.Time) []byte {
	year, month, day := t.Date()
	if t.Location() != time.UTC || t.Nanosecond() != 0 || year < 1000 || year > 9999 {
		b = append(b, '"')
		b = t.AppendFormat(b, time.RFC3339Nano)
		return append(b, '"')
	}
	hour, min, sec := t.Clock()
	b = append(b, '"')
	b = appendDigits(b, year, 4)
	b = appendDigits(append(b, '-'), int(month), 2)
	b = appendDigits(append(b, '-'), day, 2)
	b = appendDigits(append(b, 'T'), hour, 2)
	b = appendDigits(append(b, ':'), min, 2)
	b = appendDigits(append(b, ':'), sec, 2)
	return append(b, 'Z', '"')
}

// appendDigits writes n, zero-padded to width digits.
func appendDigits(b []byte, n, width int) []byte {
	div := 1
	for range width - 1 {
		div *= 10
	}
	for ; div > 0; div /= 10 {
		b = append(b, byte('0'+n/div%10))
	}
	return b
}

// appendJSONString quotes s as encoding/json does: printable ASCII but
// quotes, backslashes and <, >, & goes as it is; anything else through
// encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
