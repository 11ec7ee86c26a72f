package stream

import (
	"encoding/json"
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
	return strconv.FormatInt(u.Start, 10) + "." + DimsHash(u.Dims)
}

// JSON renders the update for the wire.
func (u *Update) JSON(watermark int64) ([]byte, error) {
	v := u.View
	out := UpdateJSON{
		View:        v.Name,
		WindowStart: time.UnixMicro(u.Start).UTC(),
		WindowEnd:   time.UnixMicro(u.Start + v.Size.Microseconds()).UTC(),
		Dims:        make(map[string]any, len(u.Dims)),
		Measures:    make(map[string]json.RawMessage, len(u.Measures)),
		Final:       u.Final,
		Watermark:   time.UnixMicro(watermark).UTC(),
	}
	for i, c := range v.GroupBy {
		out.Dims[c.Name] = jsonValue(u.Dims[i], c.Type, c.Scale)
	}
	for i, m := range v.Measures {
		t, scale := m.Type()
		b, _ := json.Marshal(jsonValue(u.Measures[i], t, scale))
		out.Measures[m.Name] = b
	}
	return json.Marshal(out)
}

func jsonValue(x spec.Value, t spec.Type, scale int) any {
	switch {
	case x.Null:
		return nil
	case t == spec.TypeString:
		return x.Str
	case t == spec.TypeBool:
		return x.Bool
	case t == spec.TypeTimestamp:
		return spec.FormatTimestamp(x.Int)
	case t == spec.TypeDecimal:
		return json.Number(spec.FormatDecimal(x.Int, scale))
	}
	return x.Int
}
