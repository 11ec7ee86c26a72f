package stream

import (
	"cmp"
	"math"
	"slices"

	"tideline/spec"
)

// A partitioned stream's processors each write partial windows: a
// window's value in one partition, with its mergeable state (Update.Part,
// Update.Partial) under a key of its own. Readers merge them here, with
// the same merge the measures define (spec.View.Import), so a window's
// merged value is the value of the events of every partition.

// ViewWatermark is a view's watermark given the watermarks of the
// partitions of its stream, one per partition (MinInt64 for one that has
// none yet): the least of them, less the view's MergeDelay.
func ViewWatermark(v *spec.View, parts []int64) int64 {
	if len(parts) == 0 {
		return math.MinInt64
	}
	wm := slices.Min(parts)
	if wm == math.MinInt64 {
		return wm
	}
	return wm - v.MergeDelay().Microseconds()
}

// MergeParts merges the current partial windows of a view (the latest of
// each partition's keys, none gone) into whole windows. Fixed windows merge
// by start and group. Sessions of one group and span merge where they
// overlap: each partition's session covers [first event, last event +
// gap), and the sessions of the union of the partitions' events are the
// connected runs of those intervals. A merged window is final when every
// part is and the view's watermark (ViewWatermark) has closed it.
// Updates that are not partial pass through unchanged.
func MergeParts(v *spec.View, parts []Update, watermark int64) []Update {
	type key struct {
		group string
		at    int64 // fixed windows: the start; sessions: the span
	}
	byKey := map[key][]Update{}
	var out []Update
	for _, u := range parts {
		if u.Partial == nil {
			out = append(out, u)
			continue
		}
		k := key{spec.GroupHash(u.Dims), u.Start}
		if v.Session() {
			k.at = v.SessionSpan(u.Start)
		}
		byKey[k] = append(byKey[k], u)
	}
	sk := &spec.Sketches{}
	merge := func(run []Update, end int64) Update {
		acc := v.NewAccumulator()
		final := true
		for _, u := range run {
			v.Import(acc, *u.Partial, sk)
			final = final && u.Final
		}
		m := Update{View: v, Start: run[0].Start, End: end, Dims: run[0].Dims, Measures: v.Values(acc, sk)}
		m.Final = final && watermark != math.MinInt64 && v.ClosesAt(end) <= watermark
		v.Release(acc, sk)
		return m
	}
	for _, run := range byKey {
		if !v.Session() {
			out = append(out, merge(run, run[0].End))
			continue
		}
		slices.SortFunc(run, func(a, b Update) int { return cmp.Compare(a.Start, b.Start) })
		from, end := 0, run[0].End
		for i := 1; i <= len(run); i++ {
			if i < len(run) && run[i].Start < end {
				end = max(end, run[i].End)
				continue
			}
			out = append(out, merge(run[from:i], end))
			if i < len(run) {
				from, end = i, run[i].End
			}
		}
	}
	slices.SortFunc(out, func(a, b Update) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(spec.GroupHash(a.Dims), spec.GroupHash(b.Dims)))
	})
	return out
}
