package spec

import (
	"fmt"
	"strconv"
	"time"
)

// Window is a view's event-time windows: which windows an event falls in,
// where each ends, when it closes under a watermark, how far the windows
// starting in a partition reach past its end, and the SQL that assigns rows
// to windows the same way. The speed layer, the batch layer and serve ask
// it; none does window arithmetic of its own.
//
// Windows are aligned to the Unix epoch: a window starts every Hop and
// lasts Size (Hop == Size is tumbling). Times are UTC microseconds.
type Window struct {
	Size, Hop time.Duration
	// Lateness is how long after the watermark passes a window's end the
	// window still accepts events.
	Lateness time.Duration
}

// Tumbling reports whether windows do not overlap.
func (w Window) Tumbling() bool { return w.Hop == w.Size }

// PerEvent is how many windows each event falls in.
func (w Window) PerEvent() int { return int(w.Size / w.Hop) }

// Assign appends the start of every window the event time ts falls in,
// latest first.
func (w Window) Assign(ts int64, starts []int64) []int64 {
	hop := w.Hop.Microseconds()
	base := w.LatestStart(ts)
	for k := range int64(w.PerEvent()) {
		starts = append(starts, base-k*hop)
	}
	return starts
}

// LatestStart is the start of the latest window ts falls in: the first
// that Assign returns.
func (w Window) LatestStart(ts int64) int64 { return ts - floorMod(ts, w.Hop.Microseconds()) }

func floorMod(a, m int64) int64 { return ((a % m) + m) % m }

// End is the end of the window starting at start.
func (w Window) End(start int64) int64 { return start + w.Size.Microseconds() }

// Horizon is how long after its start a window closes: size + lateness.
func (w Window) Horizon() time.Duration { return w.Size + w.Lateness }

// ClosesAt is the watermark at which the window starting at start closes.
func (w Window) ClosesAt(start int64) int64 { return start + w.Horizon().Microseconds() }

// Reach is how far past a partition's end the windows starting in it read
// events: the last of them starts one hop before the end.
func (w Window) Reach() time.Duration { return w.Size - w.Hop }

// SealDelay is how long after a partition's end (in broker time) the
// partition is sealed for the view: the windows starting in it reach past
// it, then close after the lateness, and the stream's watermark trails
// event time by its out-of-orderness, or its idle timeout when quiet.
func (v *View) SealDelay() time.Duration {
	return v.Reach() + v.Lateness + v.Stream.OutOfOrderness + v.Stream.IdleTimeout
}

// Starts returns the window starts in [lo, hi), in order.
func (w Window) Starts(lo, hi int64) []int64 {
	hop := w.Hop.Microseconds()
	var out []int64
	for s := lo + floorMod(-lo, hop); s < hi; s += hop {
		out = append(out, s)
	}
	return out
}

// StartSQL assigns rows to windows in DuckDB: ts is a TIMESTAMPTZ
// expression. base is the latest window start of a row (a BIGINT of
// microseconds), to select as __base; join, when not empty, follows the
// FROM clause to make one row per window; start is then each row's window
// start, an expression over __base.
func (w Window) StartSQL(ts string) (base, join, start string) {
	us := "epoch_us(" + ts + ")"
	hop := strconv.FormatInt(w.Hop.Microseconds(), 10)
	base = fmt.Sprintf("%s - (((%s %% %s) + %s) %% %s)", us, us, hop, hop, hop)
	if w.Tumbling() {
		return base, "", "__base"
	}
	return base, fmt.Sprintf(" CROSS JOIN range(0, %d) AS __k(k)", w.PerEvent()), "(__base - __k.k * " + hop + ")"
}

// MembershipsSQL is a DuckDB expression counting the windows starting in
// [lo, hi) that the row with event time ts (a TIMESTAMPTZ expression) falls
// in, by arithmetic on its time rather than by grouping: the windows start
// at base - k*hop for k in [0, PerEvent), and those in [lo, hi) are the k
// with base-hi < k*hop <= base-lo.
func (w Window) MembershipsSQL(ts string, lo, hi int64) string {
	base, _, _ := w.StartSQL(ts)
	hop := w.Hop.Microseconds()
	return fmt.Sprintf("greatest(0, least(%d, (%s - %d) // %d) - greatest(0, (%s - %d) // %d + 1) + 1)",
		w.PerEvent()-1, base, lo, hop, base, hi, hop)
}
