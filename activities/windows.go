package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"tideline/lake"
	"tideline/spec"
	"tideline/stream"
)

// window is one row of a view: a window of one group.
type window struct {
	start    int64 // UTC microseconds, as is end
	end      int64
	dims     map[string]any // for the corrections' dims column
	measures []*int64       // nil is SQL null; decimals in minor units
}

// windows of one view, keyed by start and group (spec's group key).
type windows map[string]*window

// newWindow keys a window by its start and group values.
func newWindow(v *spec.View, start, end int64, dims, measures []spec.Value) (*window, string) {
	w := &window{start: start, end: end, dims: map[string]any{}}
	for i, c := range v.GroupBy {
		switch {
		case dims[i].Null:
			w.dims[c.Name] = nil
		case c.Type == spec.TypeString:
			w.dims[c.Name] = dims[i].Str
		case c.Type == spec.TypeBool:
			w.dims[c.Name] = dims[i].Bool
		default:
			w.dims[c.Name] = dims[i].Int
		}
	}
	for _, m := range measures {
		if m.Null {
			w.measures = append(w.measures, nil)
		} else {
			n := m.Int
			w.measures = append(w.measures, &n)
		}
	}
	return w, string(v.AppendGroupKey(strconv.AppendInt(nil, start, 10), dims))
}

// readBatch reads the windows starting in [lo, hi) from batch files.
func (a *Activities) readBatch(ctx context.Context, v *spec.View, files []lake.File, lo, hi time.Time) (windows, error) {
	out := windows{}
	if len(files) == 0 {
		return out, nil
	}
	paths, err := a.fetch(ctx, files)
	if err != nil {
		return nil, err
	}
	defer a.Cache.Unpin(paths)
	// In the view's columns as the spec has them now: a file computed
	// before the view changed reads with nulls for what it lacks.
	sel, err := lake.SelectFiles(ctx, a.DB, lake.ViewSchema(v), paths)
	if err != nil {
		return nil, fromQuery(fmt.Errorf("cannot read batch files of view %s: %w", v.Name, err))
	}
	q := fmt.Sprintf("SELECT * FROM (%s) WHERE window_start >= make_timestamptz(%d) AND window_start < make_timestamptz(%d)",
		sel, lo.UnixMicro(), hi.UnixMicro())
	rows, err := a.DB.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("cannot read batch files of view %s: %w", v.Name, err)
	}
	defer rows.Close()
	n := 2 + len(v.GroupBy) + len(v.Measures)
	vals, ptrs := make([]any, n), make([]any, n)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("cannot read batch files of view %s: %w", v.Name, err)
		}
		dims := make([]spec.Value, len(v.GroupBy))
		for i := range dims {
			dims[i] = spec.ValueOf(vals[2+i])
		}
		ms := make([]spec.Value, len(v.Measures))
		for i := range ms {
			ms[i] = spec.ValueOf(vals[2+len(v.GroupBy)+i])
		}
		w, key := newWindow(v, vals[0].(time.Time).UnixMicro(), vals[1].(time.Time).UnixMicro(), dims, ms)
		out[key] = w
	}
	return out, rows.Err()
}

// speedWatermark is the speed layer's watermark for v (stream.ReadSpeedMark).
func (a *Activities) speedWatermark(ctx context.Context, v *spec.View) (wm, written, since time.Time, err error) {
	m, err := stream.ReadSpeedMark(ctx, a.JS, v)
	return m.Watermark, m.Written, m.Since, err
}

// dropBefore leaves out the windows starting before since: the speed layer
// never held them for this view, so batch values there are history.
func dropBefore(ws windows, since time.Time) {
	for k, w := range ws {
		if w.start < since.UnixMicro() {
			delete(ws, k)
		}
	}
}

// lastClose is when the speed layer closes the last of these windows: its
// watermark must reach the window's end plus the view's lateness.
func lastClose(v *spec.View, ws windows) time.Time {
	var last int64 = math.MinInt64
	for _, w := range ws {
		last = max(last, v.ClosesAt(w.end))
	}
	if last == math.MinInt64 {
		return time.Time{}
	}
	return time.UnixMicro(last).UTC()
}

// readSpeed reads the speed layer's windows of v starting in [lo, hi)
// (stream.ReadSpeedWindows).
func (a *Activities) readSpeed(ctx context.Context, v *spec.View, lo, hi time.Time) (windows, error) {
	ups, err := stream.ReadSpeedWindows(ctx, a.JS, v, lo.UnixMicro(), hi.UnixMicro())
	if err != nil {
		return nil, err
	}
	out := windows{}
	for _, u := range ups {
		w, key := newWindow(v, u.Start, u.End, u.Dims, u.Measures)
		out[key] = w
	}
	return out, nil
}

// Correction kinds.
const (
	KindSpeed = "speed" // batch replaced a value the speed layer served
	KindBatch = "batch" // a recompute below the tideline replaced an older batch value
)

// diff compares what was served (old) with batch (new) and returns the
// corrections, and how many windows they touch. A window missing from old
// counts as served empty only if it had closed by closedBy (the speed
// layer's watermark; for batch, any time after the window): a window the
// speed layer never reached was not served by it.
func diff(v *spec.View, kind string, old, new windows, closedBy, now time.Time) (*lake.Rows, int) {
	rows := lake.NewRows(lake.CorrectionsSchema(), 0)
	keys := slices.Sorted(maps.Keys(old))
	for k := range new {
		if _, ok := old[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	touched := 0
	for _, k := range keys {
		o, n := old[k], new[k]
		if o == nil && v.ClosesAt(n.end) > closedBy.UnixMicro() {
			continue
		}
		w := n
		if w == nil {
			w = o
		}
		dims, _ := json.Marshal(w.dims)
		changed := false
		for i, m := range v.Measures {
			var ov, nv *int64
			if o != nil {
				ov = o.measures[i]
			}
			if n != nil {
				nv = n.measures[i]
			}
			if (ov == nil) == (nv == nil) && (ov == nil || *ov == *nv) {
				continue
			}
			changed = true
			delta := spec.Value{Null: true}
			if ov != nil || nv != nil {
				delta = spec.Value{Int: val(nv) - val(ov)}
			}
			rows.Append(spec.Value{Str: v.Name}, spec.Value{Str: kind},
				spec.Value{Int: w.start}, spec.Value{Int: w.end},
				spec.Value{Str: string(dims)}, spec.Value{Str: m.Name},
				nullable(ov), nullable(nv), delta, spec.Value{Int: now.UnixMicro()})
		}
		if changed {
			touched++
		}
	}
	return rows, touched
}

func val(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func nullable(p *int64) spec.Value {
	if p == nil {
		return spec.Value{Null: true}
	}
	return spec.Value{Int: *p}
}

// fetch copies files into the local cache and pins them; the caller unpins.
func (a *Activities) fetch(ctx context.Context, files []lake.File) ([]string, error) {
	paths := make([]string, len(files))
	for i, f := range files {
		p, err := a.Cache.Fetch(ctx, a.Store, f)
		if err != nil {
			a.Cache.Unpin(paths[:i])
			return nil, fromLake(fmt.Errorf("cannot read lake file %s: %w", f.Key, err))
		}
		a.Cache.Pin([]string{p})
		paths[i] = p
	}
	return paths, nil
}
