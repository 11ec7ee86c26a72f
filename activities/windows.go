package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tideline/lake"
	"tideline/spec"
	"tideline/stream"
)

// window is one row of a view: a window of one group.
type window struct {
	start    int64          // UTC microseconds
	dims     map[string]any // for the corrections' dims column
	measures []*int64       // nil is SQL null; decimals in minor units
}

// windows of one view, keyed by start and rendered group values.
type windows map[string]*window

func windowKey(start int64, dims []string) string {
	return strconv.FormatInt(start, 10) + "\x1e" + strings.Join(dims, "\x1f")
}

// fromDuckDB turns a value DuckDB returned into a spec.Value.
func fromDuckDB(x any) spec.Value {
	switch x := x.(type) {
	case nil:
		return spec.Value{Null: true}
	case string:
		return spec.Value{Str: x}
	case bool:
		return spec.Value{Bool: x}
	case int64:
		return spec.Value{Int: x}
	case time.Time:
		return spec.Value{Int: x.UnixMicro()}
	}
	return spec.Value{Str: fmt.Sprint(x)}
}

// valueText renders a group value of column c for a window key.
func valueText(c *spec.Column, x spec.Value) string {
	switch {
	case x.Null:
		return "\x00"
	case c.Type == spec.TypeString:
		return x.Str
	case c.Type == spec.TypeBool:
		return strconv.FormatBool(x.Bool)
	}
	return strconv.FormatInt(x.Int, 10)
}

// newWindow keys a window by its start and group values.
func newWindow(v *spec.View, start int64, dims, measures []spec.Value) (*window, string) {
	w := &window{start: start, dims: map[string]any{}}
	texts := make([]string, len(dims))
	for i, c := range v.GroupBy {
		texts[i] = valueText(c, dims[i])
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
	return w, windowKey(start, texts)
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
			dims[i] = fromDuckDB(vals[2+i])
		}
		ms := make([]spec.Value, len(v.Measures))
		for i := range ms {
			ms[i] = fromDuckDB(vals[2+len(v.GroupBy)+i])
		}
		w, key := newWindow(v, vals[0].(time.Time).UnixMicro(), dims, ms)
		out[key] = w
	}
	return out, rows.Err()
}

// speedWatermark is the speed layer's watermark for v from its bucket's
// WatermarkKey: every window it closed is in the bucket. It is zero when
// the speed layer has closed nothing; written is then when it last wrote a
// window, if it has. since is the first event time from which the speed
// layer has held the view's windows (zero: from the stream's start).
func (a *Activities) speedWatermark(ctx context.Context, v *spec.View) (wm, written, since time.Time, err error) {
	kv, err := a.JS.KeyValue(ctx, stream.ViewBucket(v.Name))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return time.Time{}, time.Time{}, time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, time.Time{}, time.Time{}, fmt.Errorf("cannot open KV bucket %s: %w", stream.ViewBucket(v.Name), err)
	}
	e, err := kv.Get(ctx, stream.WatermarkKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// It has closed nothing yet. If it has written windows, it is
		// running (its first checkpoint, say, still writing them), and
		// their values are not final: written is when it last wrote.
		st, err := a.JS.Stream(ctx, stream.ViewBucketStream(v.Name))
		if err != nil {
			return time.Time{}, time.Time{}, time.Time{}, fmt.Errorf("cannot read KV bucket %s: %w", stream.ViewBucket(v.Name), err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return time.Time{}, time.Time{}, time.Time{}, fmt.Errorf("cannot read KV bucket %s: %w", stream.ViewBucket(v.Name), err)
		}
		return time.Time{}, info.State.LastTime, time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, time.Time{}, time.Time{}, fmt.Errorf("cannot read the watermark in KV bucket %s: %w", stream.ViewBucket(v.Name), err)
	}
	var w stream.WatermarkJSON
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		return time.Time{}, time.Time{}, time.Time{}, fmt.Errorf("cannot parse the watermark in KV bucket %s (%q): %w", stream.ViewBucket(v.Name), e.Value(), err)
	}
	if w.Since != nil {
		since = *w.Since
	}
	return w.Watermark, e.Created(), since, nil
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
		last = max(last, w.start+(v.Size+v.Lateness).Microseconds())
	}
	if last == math.MinInt64 {
		return time.Time{}
	}
	return time.UnixMicro(last).UTC()
}

// readSpeed reads the speed layer's windows of v starting in [lo, hi) from
// its KV bucket. A missing bucket means the speed layer never ran.
//
// It reads with a consumer of its own that delivers the last value of each
// key and knows from the start how many there are, so a read that stops
// arriving fails (and the activity retries) instead of waiting for ever, as
// the KV watcher's end-of-initial-values marker did after a NATS restart.
func (a *Activities) readSpeed(ctx context.Context, v *spec.View, lo, hi time.Time) (windows, error) {
	out := windows{}
	bucket := stream.ViewBucket(v.Name)
	var filters []string
	for s := lo.UnixMicro(); s < hi.UnixMicro(); s += v.Hop.Microseconds() {
		filters = append(filters, stream.ViewKeySubject(v.Name, strconv.FormatInt(s, 10)+".*"))
	}
	if len(filters) == 0 {
		return out, nil
	}
	kvStream := stream.ViewBucketStream(v.Name)
	cons, err := a.JS.CreateConsumer(ctx, kvStream, jetstream.ConsumerConfig{
		FilterSubjects: filters, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true,
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read KV bucket %s: %w", bucket, err)
	}
	info := cons.CachedInfo()
	defer func() { _ = a.JS.DeleteConsumer(context.WithoutCancel(ctx), kvStream, info.Name) }()
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return nil, fmt.Errorf("cannot read KV bucket %s: %w", bucket, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			left--
			if op := m.Headers().Get("KV-Operation"); op == "DEL" || op == "PURGE" {
				continue
			}
			win, key, err := decodeSpeed(v, m.Data())
			if err != nil {
				return nil, fmt.Errorf("cannot read window %s of KV bucket %s: %w", strings.TrimPrefix(m.Subject(), stream.ViewKeySubject(v.Name, "")), bucket, err)
			}
			out[key] = win
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("cannot read KV bucket %s: %w", bucket, err)
		}
		if got == 0 {
			return nil, fmt.Errorf("cannot read KV bucket %s: %d of its windows not delivered within 10s; retrying", bucket, left)
		}
	}
	return out, nil
}

func decodeSpeed(v *spec.View, data []byte) (*window, string, error) {
	u, _, err := stream.ParseUpdate(v, data)
	if err != nil {
		return nil, "", err
	}
	w, key := newWindow(v, u.Start, u.Dims, u.Measures)
	return w, key, nil
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
	closed := closedBy.UnixMicro() - (v.Size + v.Lateness).Microseconds() // windows starting at or before this had closed
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
		if o == nil && n.start > closed {
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
				spec.Value{Int: w.start}, spec.Value{Int: w.start + v.Size.Microseconds()},
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
