package stream

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
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
	Gone        bool                       `json:"gone,omitempty"`
	Watermark   time.Time                  `json:"watermark"`
	// A partitioned stream's updates are partial: they name their
	// partition and carry each measure's cell [rows, value], and the
	// registers of each approx_count_distinct (spec.Sketch.AppendBinary).
	Partition *int              `json:"partition,omitempty"`
	Cells     [][2]int64        `json:"cells,omitempty"`
	Sketches  map[string][]byte `json:"sketches,omitempty"`
}

// Key is the update's KV key: the window's key prefix (its start, or for a
// session the minute and the start: spec.Window.KeyPrefix), then a hash of
// its group.
// A partial update's key ends in its partition: `.p<n>`.
func (u *Update) Key() string {
	k := u.View.KeyPrefix(u.Start) + "." + spec.GroupHash(u.Dims)
	if u.Part > 0 {
		k += ".p" + strconv.Itoa(u.Part-1)
	}
	return k
}

// AppendJSON renders the update for the wire, as UpdateJSON marshals, but
// written directly: the speed layer emits a lot of these.
func (u *Update) AppendJSON(b []byte, watermark int64) []byte {
	return u.appendJSON(b, newJSONTexts(), watermark)
}

// jsonTexts caches what repeats across the updates of one flush: RFC 3339
// renderings of instants (window bounds, the watermark), and each view's
// names, quoted.
type jsonTexts struct {
	times map[int64][]byte
	views map[*spec.View]*viewTexts
}

type viewTexts struct {
	head     []byte   // {"view":"<name>","window_start":"
	dims     [][]byte // "<column>": with a comma before all but the first
	measures [][]byte
}

func newJSONTexts() *jsonTexts {
	return &jsonTexts{times: map[int64][]byte{}, views: map[*spec.View]*viewTexts{}}
}

func (tt *jsonTexts) time(us int64) []byte {
	if t, ok := tt.times[us]; ok {
		return t
	}
	t := time.UnixMicro(us).UTC().AppendFormat(nil, time.RFC3339Nano)
	tt.times[us] = t
	return t
}

func (tt *jsonTexts) view(v *spec.View) *viewTexts {
	if vt := tt.views[v]; vt != nil {
		return vt
	}
	key := func(i int, name string) []byte {
		var b []byte
		if i > 0 {
			b = append(b, ',')
		}
		return append(appendJSONString(b, name), ':')
	}
	vt := &viewTexts{head: append(appendJSONString([]byte(`{"view":`), v.Name), `,"window_start":"`...)}
	for i, c := range v.GroupBy {
		vt.dims = append(vt.dims, key(i, c.Name))
	}
	for i, m := range v.Measures {
		vt.measures = append(vt.measures, key(i, m.Name))
	}
	tt.views[v] = vt
	return vt
}

func (u *Update) appendJSON(b []byte, tt *jsonTexts, watermark int64) []byte {
	v := u.View
	vt := tt.view(v)
	b = append(b, vt.head...)
	b = append(b, tt.time(u.Start)...)
	b = append(b, `","window_end":"`...)
	b = append(b, tt.time(u.End)...)
	b = append(b, `","dims":{`...)
	for i, c := range v.GroupBy {
		b = append(b, vt.dims[i]...)
		b = appendJSONValue(b, u.Dims[i], c.Type, c.Scale)
	}
	b = append(b, `},"measures":{`...)
	for i, m := range v.Measures {
		if u.Gone {
			break
		}
		b = append(b, vt.measures[i]...)
		t, scale := m.Type()
		b = appendJSONValue(b, u.Measures[i], t, scale)
	}
	b = append(b, `},"final":`...)
	b = strconv.AppendBool(b, u.Final)
	if u.Gone {
		b = append(b, `,"gone":true`...)
	}
	if u.Part > 0 {
		b = append(b, `,"partition":`...)
		b = strconv.AppendInt(b, int64(u.Part-1), 10)
	}
	if p := u.Partial; p != nil {
		b = append(b, `,"cells":[`...)
		for i, c := range p.Cells {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '[')
			b = strconv.AppendInt(b, c.N, 10)
			b = append(b, ',')
			b = strconv.AppendInt(b, c.V, 10)
			b = append(b, ']')
		}
		b = append(b, ']')
		n := 0
		for i, sk := range p.Sketches {
			if sk == nil {
				continue
			}
			if n++; n == 1 {
				b = append(b, `,"sketches":{`...)
			} else {
				b = append(b, ',')
			}
			b = appendJSONString(b, v.Measures[i].Name)
			b = append(b, `:"`...)
			b = base64.StdEncoding.AppendEncode(b, sk.AppendBinary(nil))
			b = append(b, '"')
		}
		if n > 0 {
			b = append(b, '}')
		}
	}
	b = append(b, `,"watermark":"`...)
	b = append(b, tt.time(watermark)...)
	return append(b, `"}`...)
}

func appendJSONValue(b []byte, x spec.Value, t spec.Type, scale int) []byte {
	switch {
	case x.Null:
		return append(b, "null"...)
	case t == spec.TypeString:
		return appendJSONString(b, x.Str)
	case t == spec.TypeBool:
		return strconv.AppendBool(b, x.Bool)
	case t == spec.TypeTimestamp:
		return strconv.AppendQuote(b, spec.FormatTimestamp(x.Int))
	case t == spec.TypeDecimal:
		return spec.AppendDecimal(b, x.Int, scale)
	}
	return strconv.AppendInt(b, x.Int, 10)
}

// appendJSONString appends s as a JSON string. Most are printable ASCII
// with nothing to escape, and are copied as they are.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			q, _ := json.Marshal(s) // escapes as JSON does; contract strings are valid UTF-8
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// ParseUpdate reads an update of view v from its wire form (the inverse of
// AppendJSON): dims and measures typed as the view's columns, decimals in
// minor units. It returns the update's watermark too.
func ParseUpdate(v *spec.View, data []byte) (Update, time.Time, error) {
	var u UpdateJSON
	if err := json.Unmarshal(data, &u); err != nil {
		return Update{}, time.Time{}, fmt.Errorf("cannot read update of view %s: %w", v.Name, err)
	}
	out := Update{View: v, Start: u.WindowStart.UnixMicro(), End: u.WindowEnd.UnixMicro(), Final: u.Final, Gone: u.Gone,
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
		if u.Gone {
			break
		}
		t, scale := m.Type()
		x, err := parseJSONValue(u.Measures[m.Name], t, scale)
		if err != nil {
			return Update{}, time.Time{}, fmt.Errorf("cannot read update of view %s: measure %s: %w", v.Name, m.Name, err)
		}
		out.Measures[i] = x
	}
	if u.Partition != nil {
		if *u.Partition < 0 || *u.Partition >= spec.MaxPartitions {
			return Update{}, time.Time{}, fmt.Errorf("cannot read update of view %s: partition %d is out of range", v.Name, *u.Partition)
		}
		out.Part = *u.Partition + 1
	}
	if u.Cells != nil {
		p, err := parsePartial(v, u)
		if err != nil {
			return Update{}, time.Time{}, fmt.Errorf("cannot read update of view %s: %w", v.Name, err)
		}
		out.Partial = p
	}
	return out, u.Watermark, nil
}

// parsePartial reads a partial update's cells and sketches.
func parsePartial(v *spec.View, u UpdateJSON) (*spec.Partial, error) {
	if len(u.Cells) != len(v.Measures) {
		return nil, fmt.Errorf("%d cells for %d measures", len(u.Cells), len(v.Measures))
	}
	p := &spec.Partial{Cells: make([]spec.Cell, len(u.Cells))}
	for i, c := range u.Cells {
		p.Cells[i] = spec.Cell{N: c[0], V: c[1]}
	}
	for name, data := range u.Sketches {
		i := slices.IndexFunc(v.Measures, func(m *spec.Measure) bool { return m.Name == name })
		if i < 0 || !v.Measures[i].Sketched() {
			return nil, fmt.Errorf("a sketch for %q, which is no approx_count_distinct measure of the view", name)
		}
		s, err := spec.DecodeSketch(data)
		if err != nil {
			return nil, fmt.Errorf("sketch of %s: %w", name, err)
		}
		if p.Sketches == nil {
			p.Sketches = make([]*spec.Sketch, len(v.Measures))
		}
		p.Sketches[i] = s
	}
	return p, nil
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
