package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tideline/spec"
)

// The speed layer's KV buckets are read only through here: the batch
// layer reads the watermark and the windows of a range, serve follows every
// change, and all of them decode entries alike.

// SpeedMark is what a view's bucket says of the speed layer's progress.
type SpeedMark struct {
	// Watermark is the speed layer's watermark: every window it closed is
	// in the bucket. Zero when it has closed nothing.
	Watermark time.Time
	// Written is when the watermark was written; with no watermark, when
	// the speed layer last wrote a window (zero if never).
	Written time.Time
	// Since is the first event time from which the speed layer has held
	// the view's windows (zero: from the stream's start).
	Since time.Time
}

// ReadSpeedMark reads the view's watermark from its bucket. A missing
// bucket means the speed layer never ran: the zero SpeedMark.
//
// For a partitioned stream it is the view's watermark over every
// partition's (ViewWatermark): nothing closed until each has written one.
func ReadSpeedMark(ctx context.Context, js jetstream.JetStream, v *spec.View) (SpeedMark, error) {
	bucket := ViewBucket(v.Name)
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return SpeedMark{}, nil
	}
	if err != nil {
		return SpeedMark{}, fmt.Errorf("cannot open KV bucket %s: %w", bucket, err)
	}
	if v.Stream.Partitioned() {
		return readPartitionMarks(ctx, js, kv, v)
	}
	e, err := kv.Get(ctx, WatermarkKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// It has closed nothing yet. If it has written windows, it is
		// running (its first checkpoint, say, still writing them), and
		// their values are not final: Written says when it last wrote.
		st, err := js.Stream(ctx, ViewBucketStream(v.Name))
		if err != nil {
			return SpeedMark{}, fmt.Errorf("cannot read KV bucket %s: %w", bucket, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return SpeedMark{}, fmt.Errorf("cannot read KV bucket %s: %w", bucket, err)
		}
		return SpeedMark{Written: info.State.LastTime}, nil
	}
	if err != nil {
		return SpeedMark{}, fmt.Errorf("cannot read the watermark in KV bucket %s: %w", bucket, err)
	}
	w, err := decodeWatermark(e.Value())
	if err != nil {
		return SpeedMark{}, fmt.Errorf("cannot parse the watermark in KV bucket %s (%q): %w", bucket, e.Value(), err)
	}
	m := SpeedMark{Watermark: w.Watermark, Written: e.Created()}
	if w.Since != nil {
		m.Since = *w.Since
	}
	return m, nil
}

// readPartitionMarks is ReadSpeedMark for a partitioned stream's view. A
// partition with no watermark yet leaves the view with none; Written is
// then when any partition last wrote a window.
func readPartitionMarks(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, v *spec.View) (SpeedMark, error) {
	n := v.Stream.Partitions
	wms := make([]int64, n)
	var m SpeedMark
	for p := range n {
		e, err := kv.Get(ctx, watermarkKey(p+1))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			st, err := js.Stream(ctx, ViewBucketStream(v.Name))
			if err != nil {
				return SpeedMark{}, fmt.Errorf("cannot read KV bucket %s: %w", kv.Bucket(), err)
			}
			info, err := st.Info(ctx)
			if err != nil {
				return SpeedMark{}, fmt.Errorf("cannot read KV bucket %s: %w", kv.Bucket(), err)
			}
			return SpeedMark{Written: info.State.LastTime}, nil
		}
		if err != nil {
			return SpeedMark{}, fmt.Errorf("cannot read the watermark of partition %d in KV bucket %s: %w", p, kv.Bucket(), err)
		}
		w, err := decodeWatermark(e.Value())
		if err != nil {
			return SpeedMark{}, fmt.Errorf("cannot parse the watermark of partition %d in KV bucket %s (%q): %w", p, kv.Bucket(), e.Value(), err)
		}
		wms[p] = w.Watermark.UnixMicro()
		if m.Written.IsZero() || e.Created().Before(m.Written) {
			m.Written = e.Created()
		}
		if w.Since != nil && w.Since.After(m.Since) {
			m.Since = *w.Since
		}
	}
	m.Watermark = time.UnixMicro(ViewWatermark(v, wms)).UTC()
	return m, nil
}

func decodeWatermark(data []byte) (WatermarkJSON, error) {
	var w WatermarkJSON
	err := json.Unmarshal(data, &w)
	return w, err
}

// ReadSpeedWindows reads the view's windows starting in [lo, hi) (UTC
// microseconds) from its bucket. A missing bucket means the speed layer
// never ran: none.
//
// It reads with a consumer of its own that delivers the last value of each
// key and knows from the start how many there are, so a read that stops
// arriving fails (the caller retries) instead of waiting for ever, as the
// KV watcher's end-of-initial-values marker did after a NATS restart.
//
// A partitioned stream's windows are merged from their partitions'
// (MergeParts), as final as the view's watermark makes them.
func ReadSpeedWindows(ctx context.Context, js jetstream.JetStream, v *spec.View, lo, hi int64) ([]Update, error) {
	if !v.Stream.Partitioned() {
		return readSpeedWindows(ctx, js, v, lo, hi)
	}
	mark, err := ReadSpeedMark(ctx, js, v)
	if err != nil {
		return nil, err
	}
	// A session's parts start anywhere in its span.
	reach := v.Window.Max.Microseconds()
	parts, err := readSpeedWindows(ctx, js, v, lo-reach, hi+reach)
	if err != nil {
		return nil, err
	}
	wm := int64(math.MinInt64)
	if !mark.Watermark.IsZero() {
		wm = mark.Watermark.UnixMicro()
	}
	var out []Update
	for _, u := range MergeParts(v, parts, wm) {
		if u.Start >= lo && u.Start < hi {
			out = append(out, u)
		}
	}
	return out, nil
}

func readSpeedWindows(ctx context.Context, js jetstream.JetStream, v *spec.View, lo, hi int64) ([]Update, error) {
	bucket := ViewBucket(v.Name)
	var filters []string
	for _, prefix := range v.KeyPrefixes(lo, hi) {
		filters = append(filters, ViewKeySubject(v.Name, prefix+".>"))
	}
	if len(filters) == 0 {
		return nil, nil
	}
	kvStream := ViewBucketStream(v.Name)
	cons, err := js.CreateConsumer(ctx, kvStream, jetstream.ConsumerConfig{
		FilterSubjects: filters, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true,
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read KV bucket %s: %w", bucket, err)
	}
	info := cons.CachedInfo()
	defer func() { _ = js.DeleteConsumer(context.WithoutCancel(ctx), kvStream, info.Name) }()
	var out []Update
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return nil, fmt.Errorf("cannot read KV bucket %s: %w", bucket, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			left--
			if op := m.Headers().Get(kvOperation); op == kvDelete || op == "PURGE" {
				continue
			}
			u, _, err := ParseUpdate(v, m.Data())
			if err != nil {
				return nil, fmt.Errorf("cannot read window %s of KV bucket %s: %w", strings.TrimPrefix(m.Subject(), ViewKeySubject(v.Name, "")), bucket, err)
			}
			if u.Start >= lo && u.Start < hi { // a session's prefix is its minute
				out = append(out, u)
			}
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

// SpeedEntry is one value of a view's bucket, as a follower sees it: the
// watermark, a window with the watermark it was written at, or the delete
// marker of a window gone.
type SpeedEntry struct {
	IsWatermark bool
	Part        int       // a partitioned stream's partition the entry is of, plus one
	Gone        bool      // the window of this key is no more
	Window      Update    // when not IsWatermark
	Watermark   time.Time // the speed layer's watermark
	Written     time.Time // when the value was stored
}

// DecodeSpeedEntry decodes a value a watcher of the view's bucket got.
func DecodeSpeedEntry(v *spec.View, e jetstream.KeyValueEntry) (SpeedEntry, error) {
	out := SpeedEntry{Written: e.Created()}
	if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
		out.Gone = true
		return out, nil
	}
	if k := e.Key(); k == WatermarkKey || strings.HasPrefix(k, WatermarkKey+".p") {
		if k != WatermarkKey {
			p, err := strconv.Atoi(k[len(WatermarkKey)+2:])
			if err != nil || p < 0 || p >= spec.MaxPartitions {
				return out, fmt.Errorf("cannot parse the watermark of view %s: key %s names no partition", v.Name, k)
			}
			out.Part = p + 1
		}
		w, err := decodeWatermark(e.Value())
		if err != nil {
			return out, fmt.Errorf("cannot parse the watermark of view %s: %w", v.Name, err)
		}
		out.IsWatermark, out.Watermark = true, w.Watermark
		return out, nil
	}
	u, wm, err := ParseUpdate(v, e.Value())
	if err != nil {
		return out, fmt.Errorf("cannot parse window %s of view %s: %w", e.Key(), v.Name, err)
	}
	if v.Stream.Partitioned() != (u.Partial != nil) {
		return out, fmt.Errorf("window %s of view %s is partial: %t, but its stream is partitioned: %t; the speed layer and this reader run different specs", e.Key(), v.Name, u.Partial != nil, v.Stream.Partitioned())
	}
	out.Window, out.Watermark, out.Part = u, wm, u.Part
	return out, nil
}
