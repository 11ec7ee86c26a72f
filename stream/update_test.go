package stream

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"tideline/internal/stacktest"
	"tideline/spec"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	s := fastSpec(t)
	for _, v := range s.Views {
		dims := make([]spec.Value, len(v.GroupBy))
		for i := range dims {
			dims[i] = spec.Value{Str: []string{"m-1", `q"uo\te`, "Zürich", "\x01ctl"}[i%4], Null: i == 1 && v.Name == "merchant_flag_rate"}
		}
		ms := make([]spec.Value, len(v.Measures))
		for i := range ms {
			ms[i] = spec.Value{Int: int64(i*12345 - 7), Null: i == 2}
		}
		u := Update{View: v, Start: 1767268800123456, End: 1767268805123456, Dims: dims, Measures: ms, Final: true}
		want, err := u.JSON(1767268899000000)
		if err != nil {
			t.Fatal(err)
		}
		got := u.AppendJSON(nil, 1767268899000000)
		var a, b any
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("view %s: AppendJSON is not JSON: %v\n%s", v.Name, err, got)
		}
		_ = json.Unmarshal(want, &b)
		ga, _ := json.Marshal(a)
		gb, _ := json.Marshal(b)
		if !bytes.Equal(ga, gb) {
			t.Errorf("view %s:\nAppendJSON %s\n      JSON %s", v.Name, got, want)
		}
		// ParseUpdate reads back exactly what was written.
		back, wm, err := ParseUpdate(v, got)
		if err != nil || back.Start != u.Start || back.End != u.End || !back.Final || wm.UnixMicro() != 1767268899000000 ||
			!slices.EqualFunc(back.Dims, u.Dims, sameValue) || !slices.EqualFunc(back.Measures, u.Measures, sameValue) {
			t.Errorf("view %s: ParseUpdate(%s) = %+v, %v", v.Name, got, back, err)
		}
	}
}

// JSON is the reference AppendJSON is held to: encoding/json of UpdateJSON.
func (u *Update) JSON(watermark int64) ([]byte, error) {
	v := u.View
	out := UpdateJSON{
		View:        v.Name,
		WindowStart: time.UnixMicro(u.Start).UTC(),
		WindowEnd:   time.UnixMicro(u.End).UTC(),
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

// sameValue compares values as SQL sees them: nulls are equal whatever
// else they hold.
func sameValue(a, b spec.Value) bool {
	if a.Null || b.Null {
		return a.Null == b.Null
	}
	return a == b
}

// TestParseUpdateRefusesForgedPartials: a partial window in a view's
// bucket is read only if its partition, cells and sketches are ones a
// partition's processor could have written.
func TestParseUpdateRefusesForgedPartials(t *testing.T) {
	s := stacktest.FastSpec(t)
	v := s.View("card_sessions") // has an approx_count_distinct
	good := `{"view":"card_sessions","window_start":"2026-01-01T12:00:00Z","window_end":"2026-01-01T12:00:03Z","dims":{"card_id":"c1"},` +
		`"measures":{"payments":1,"amount":100,"amount_max":100,"merchants":1},"final":false,"watermark":"2026-01-01T12:00:00Z",` +
		`"partition":3,"cells":[[1,1],[1,100],[1,100],[1,0]],"sketches":{"merchants":"AAEFAQ=="}}`
	u, _, err := ParseUpdate(v, []byte(good))
	if err != nil || u.Part != 4 || u.Partial == nil || u.Partial.Sketches[3] == nil {
		t.Fatalf("a well-formed partial: %v, part %d, %+v", err, u.Part, u.Partial)
	}
	for name, bad := range map[string]string{
		"partition 64":       strings.Replace(good, `"partition":3`, `"partition":64`, 1),
		"partition -1":       strings.Replace(good, `"partition":3`, `"partition":-1`, 1),
		"3 cells for 4":      strings.Replace(good, `[[1,1],[1,100],[1,100],[1,0]]`, `[[1,1],[1,100],[1,100]]`, 1),
		"sketch of a sum":    strings.Replace(good, `"sketches":{"merchants"`, `"sketches":{"amount"`, 1),
		"sketch of no field": strings.Replace(good, `"sketches":{"merchants"`, `"sketches":{"nope"`, 1),
		"broken sketch":      strings.Replace(good, `"AAEFAQ=="`, `"AAEF"`, 1),
	} {
		if _, _, err := ParseUpdate(v, []byte(bad)); err == nil {
			t.Errorf("%s: read", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
