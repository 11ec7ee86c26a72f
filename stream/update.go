package stream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"tideline/spec"
)

// UpdateJSON is the wire form of a window update, on tl.views.<view> and in
// the view's KV bucket. Decimal measures are exact decimal numbers.
type UpdateJSON struct {
	View        string                     `json:"view"`
	WindowStart time.Time                  `json:"window_start"`
	WindowEnd   time.Time                  `json:"window_end"`
	Dims        map[string]any             `json:"dims"`
	Measures    map[string]json.RawMessage `json:"measures"`
	Final       bool                       `json:"final"`
	Watermark   time.Time                  `json:"watermark"`
}

// Key is the update's KV key: window start, then a hash of its group.
func (u *Update) Key() string {
	return strconv.FormatInt(u.Start, 10) + "." + dimsHash(u.Dims)
}

// AppendJSON renders the update for the wire, as UpdateJSON marshals, but
// written directly: the speed layer emits a lot of these.
func (u *Update) AppendJSON(b []byte, watermark int64) []byte {
	return u.appendJSON(b, timeTexts{}, watermark)
}

// timeTexts caches RFC 3339 renderings of instants, which repeat across the
// updates of one flush (window bounds, the watermark).
type timeTexts map[int64][]byte

func (tt timeTexts) get(us int64) []byte {
	if t, ok := tt[us]; ok {
		return t
	}
	t := time.UnixMicro(us).UTC().AppendFormat(nil, time.RFC3339Nano)
	tt[us] = t
	return t
}

func (u *Update) appendJSON(b []byte, tt timeTexts, watermark int64) []byte {
	v := u.View
	b = append(b, `{"view":`...)
	b = strconv.AppendQuote(b, v.Name)
	b = append(b, `,"window_start":"`...)
	b = append(b, tt.get(u.Start)...)
	b = append(b, `","window_end":"`...)
	b = append(b, tt.get(u.Start+v.Size.Microseconds())...)
	b = append(b, `","dims":{`...)
	for i, c := range v.GroupBy {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, c.Name)
		b = append(b, ':')
		b = appendJSONValue(b, u.Dims[i], c.Type, c.Scale)
	}
	b = append(b, `},"measures":{`...)
	for i, m := range v.Measures {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, m.Name)
		b = append(b, ':')
		t, scale := m.Type()
		b = appendJSONValue(b, u.Measures[i], t, scale)
	}
	b = append(b, `},"final":`...)
	b = strconv.AppendBool(b, u.Final)
	b = append(b, `,"watermark":"`...)
	b = append(b, tt.get(watermark)...)
	return append(b, `"}`...)
}

func appendJSONValue(b []byte, x spec.Value, t spec.Type, scale int) []byte {
	switch {
	case x.Null:
		return append(b, "null"...)
	case t == spec.TypeString:
		// strconv quoting differs from JSON for some control and non-UTF-8
		// bytes; contract strings are valid UTF-8, and json handles the rest.
		if !needsJSONEscape(x.Str) {
			return strconv.AppendQuote(b, x.Str)
		}
		q, _ := json.Marshal(x.Str)
		return append(b, q...)
	case t == spec.TypeBool:
		return strconv.AppendBool(b, x.Bool)
	case t == spec.TypeTimestamp:
		return strconv.AppendQuote(b, spec.FormatTimestamp(x.Int))
	case t == spec.TypeDecimal:
		return append(b, spec.FormatDecimal(x.Int, scale)...)
	}
	return strconv.AppendInt(b, x.Int, 10)
}

// needsJSONEscape reports whether s has anything strconv.Quote would write
// differently from JSON: control characters, quotes and backslashes are the
// same in both, but non-ASCII and DEL are not.
func needsJSONEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return true
		}
	}
	return false
}

// ParseUpdate reads an update of view v from its wire form (the inverse of
// AppendJSON): dims and measures typed as the view's columns, decimals in
// minor units. It returns the update's watermark too.
func ParseUpdate(v *spec.View, data []byte) (Update, time.Time, error) {
	var u UpdateJSON
	if err := json.Unmarshal(data, &u); err != nil {
		return Update{}, time.Time{}, fmt.Errorf("cannot read update of view %s: %w", v.Name, err)
	}
	out := Update{View: v, Start: u.WindowStart.UnixMicro(), Final: u.Final,
		Dims: make([]spec.Value, len(v.GroupBy)), Measures: make([]spec.Value, len(v.Measures))}
	for i, c := range v.GroupBy {
		raw, _ := json.Marshal(u.Dims[c.Name])
		x, err := parseJSONValue(raw, c.Type, c.Scale)
		if err != nil {
			return Update{}, time.Time{}, fmt.Errorf("cannot read update of view %s: dim %s: %w", v.Name, c.Name, err)
		}
		out.Dims[i] = x
	}
	for i, m := range v.Measures {
		t, scale := m.Type()
		x, err := parseJSONValue(u.Measures[m.Name], t, scale)
		if err != nil {
			return Update{}, time.Time{}, fmt.Errorf("cannot read update of view %s: measure %s: %w", v.Name, m.Name, err)
		}
		out.Measures[i] = x
	}
	return out, u.Watermark, nil
}

func parseJSONValue(raw []byte, t spec.Type, scale int) (spec.Value, error) {
	s := string(bytes.TrimSpace(raw))
	if s == "" || s == "null" {
		return spec.Value{Null: true}, nil
	}
	switch t {
	case spec.TypeString:
		var x string
		err := json.Unmarshal(raw, &x)
		return spec.Value{Str: x}, err
	case spec.TypeBool:
		var x bool
		err := json.Unmarshal(raw, &x)
		return spec.Value{Bool: x}, err
	case spec.TypeTimestamp:
		var x time.Time
		err := json.Unmarshal(raw, &x)
		return spec.Value{Int: x.UnixMicro()}, err
	case spec.TypeDecimal:
		n, err := spec.ParseDecimal(s, scale)
		return spec.Value{Int: n}, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return spec.Value{Int: n}, err
}
