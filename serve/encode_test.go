package serve

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"tideline/spec"
)

// TestAppendViewResponseIsEncodingJSON holds the hand-written encoder of
// view reads to encoding/json's output for the same response, with strings
// that need escaping, NULLs, negative decimals and every dimension type.
func TestAppendViewResponseIsEncodingJSON(t *testing.T) {
	s, err := spec.Parse("enc.yaml", []byte(`version: 1
streams:
  s:
    subjects: [s.>]
    id: id
    event_time: ts
    partition: 1h
    fields:
      id: {type: string, required: true}
      ts: {type: timestamp, required: true}
      zeta: {type: string}
      alpha: {type: int}
      flag: {type: bool}
      at: {type: timestamp}
      amount: {type: decimal, scale: 2}
views:
  v:
    stream: s
    window: 1m
    group_by: [zeta, alpha, flag, at]
    measures:
      n: count
      total: sum(amount)
      biggest: max(amount)
`))
	if err != nil {
		t.Fatal(err)
	}
	v := s.Views[0]
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	rows := [][]any{
		{t0, t0.Add(time.Minute), "plain", int64(7), true, at, int64(3), int64(-1234), int64(5)},
		{t0, t0.Add(time.Minute), `q"uote\ <b>&amp; é 日本 ` + "\x01\u2028", int64(-1), false, nil, int64(1), nil, int64(0)},
		{t0.Add(time.Minute), t0.Add(2 * time.Minute), nil, nil, nil, nil, int64(0), int64(99), nil},
	}
	for _, stale := range []string{"", "42s"} {
		want := ViewResponse{View: v.Name, Tideline: t0.Add(time.Minute), Watermark: at, Stale: stale, Rows: []ViewRow{}}
		for i, r := range rows {
			vr := ViewRow{WindowStart: r[0].(time.Time), WindowEnd: r[1].(time.Time), Dims: map[string]any{}, Measures: map[string]any{}, Source: "batch"}
			if i >= 2 {
				vr.Source = "speed"
			}
			for j, c := range v.GroupBy {
				vr.Dims[c.Name] = r[2+j]
			}
			for j, m := range v.Measures {
				x := r[2+len(v.GroupBy)+j]
				if n, ok := x.(int64); ok {
					if _, scale := m.Type(); scale > 0 {
						x = json.Number(spec.FormatDecimal(n, scale))
					}
				}
				vr.Measures[m.Name] = x
			}
			want.Rows = append(want.Rows, vr)
		}
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(want); err != nil {
			t.Fatal(err)
		}
		got := appendViewResponse(nil, v, want.Tideline, want.Watermark, stale, rows, 2)
		if !bytes.Equal(got, buf.Bytes()) {
			t.Errorf("stale %q:\ngot  %s\nwant %s", stale, got, buf.Bytes())
		}
	}
}
