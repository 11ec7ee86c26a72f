package spec

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Window is a view's event-time windows: which windows an event falls in,
// where each ends, when it closes under a watermark, how far the windows
// starting in a partition reach past its end, and the SQL that assigns rows
// to windows the same way. The speed layer, the batch layer and serve ask
// it; none does window arithmetic of its own.
//
// There are two kinds. Fixed windows are aligned to the Unix epoch: a
// window starts every Hop and lasts Size (Hop == Size is tumbling). Session
// windows (Gap > 0) are a group's runs of events with less than Gap between
// one and the next; a session starts at its first event and ends Gap after
// its last. No session crosses a multiple of Max since the epoch (as web
// analytics end sessions at midnight), so none is longer than Max, a
// partition's sessions reach at most Max past it, and a session is the
// merge of what its events added: a late or out-of-order event that bridges
// two sessions merges them exactly. Times are UTC microseconds.
type Window struct {
	Size, Hop time.Duration // fixed windows
	Gap, Max  time.Duration // session windows
	// Lateness is how long after the watermark passes a window's end the
	// window still accepts events.
	Lateness time.Duration
}

// Session reports whether the windows are sessions.
func (w Window) Session() bool { return w.Gap > 0 }

// Tumbling reports whether the windows are fixed and do not overlap.
func (w Window) Tumbling() bool { return !w.Session() && w.Hop == w.Size }

// String describes the windows as the spec writes them.
func (w Window) String() string {
	switch {
	case w.Session():
		return fmt.Sprintf("session %s (at most %s)", w.Gap, w.Max)
	case w.Tumbling():
		return w.Size.String()
	}
	return w.Size.String() + " every " + w.Hop.String()
}

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

// End is the end of the fixed window starting at start.
func (w Window) End(start int64) int64 { return start + w.Size.Microseconds() }

// Horizon is at most how long after its start a window closes: size +
// lateness, or for sessions max + lateness.
func (w Window) Horizon() time.Duration {
	if w.Session() {
		return w.Max + w.Lateness
	}
	return w.Size + w.Lateness
}

// ClosesAt is the watermark at which the window ending at end closes.
func (w Window) ClosesAt(end int64) int64 { return end + w.Lateness.Microseconds() }

// Reach is how far past a partition's end the windows starting in it read
// events: the last fixed window starts one hop before the end; a session
// ends at most Max after its start.
func (w Window) Reach() time.Duration {
	if w.Session() {
		return w.Max
	}
	return w.Size - w.Hop
}

// Lookback is how far before a partition's start events decide which of
// its windows there are: an event less than Gap before a session's first
// would have joined it.
func (w Window) Lookback() time.Duration { return w.Gap }

// SessionSpan is the start of the Max-long span of time ts falls in: no
// session crosses the end of it.
func (w Window) SessionSpan(ts int64) int64 { return ts - floorMod(ts, w.Max.Microseconds()) }

// SessionEnd is the end of the session whose last event is at last.
func (w Window) SessionEnd(last int64) int64 {
	return min(last+w.Gap.Microseconds(), w.SessionSpan(last)+w.Max.Microseconds())
}

// Joins reports whether an event at ts joins the session [start, last]:
// it lies in the same span, less than Gap from the session's events.
func (w Window) Joins(ts, start, last int64) bool {
	gap := w.Gap.Microseconds()
	return ts > start-gap && ts < last+gap && w.SessionSpan(ts) == w.SessionSpan(start)
}

// SealDelay is how long after a partition's end (in broker time) the
// partition is sealed for the view: the windows starting in it reach past
// it, then close after the lateness, and the stream's watermark trails
// event time by its out-of-orderness, or its idle timeout when quiet.
func (v *View) SealDelay() time.Duration {
	return v.Reach() + v.Lateness + v.Stream.OutOfOrderness + v.Stream.IdleTimeout
}

// Bridgeable reports whether one event could join both the session whose
// last event is at last and a later one starting at start: it would lie
// less than Gap after the one and before the other, in the same span.
func (w Window) Bridgeable(last, start int64) bool {
	return start > last && start < last+2*w.Gap.Microseconds() && w.SessionSpan(start) == w.SessionSpan(last)
}

// Untouchable is the watermark from which no on-time event can change the
// closed session whose last event is at last, unless it joins an open
// session Bridgeable to it: an event less than Gap after it would open a
// session of its own that had closed, and so would one that opened a
// session it could then bridge to (starting less than 2*Gap after it).
func (w Window) Untouchable(last int64) int64 {
	return w.ClosesAt(w.SessionEnd(last + 2*w.Gap.Microseconds()))
}

// MergeDelay is how far the watermark of a partitioned stream's view
// trails the least watermark of its partitions: a window of the view
// whose ClosesAt(end) is at most the view's watermark has its value for
// good. A fixed window's partitions all close it by their own watermarks.
// A session need not: an event on time in one partition may join an open
// session there that overlaps a session another partition has closed, so
// a session is settled only once its whole Max-long span has closed in
// every partition, which is at most Max - Gap after its own end.
func (w Window) MergeDelay() time.Duration {
	if w.Session() {
		return w.Max - w.Gap
	}
	return 0
}

// keyGrain is how finely a session's key prefix places its start.
const keyGrain = int64(60e6)

// KeyPrefix is the first token of the speed layer's key of the window
// starting at start: the start itself for fixed windows, the minute it
// falls in for sessions, so that a reader can ask for a range of windows
// by a few subject filters (KeyPrefixes). The key of a session adds its
// start as a second token.
func (w Window) KeyPrefix(start int64) string {
	if w.Session() {
		return strconv.FormatInt(start-floorMod(start, keyGrain), 10) + "." + strconv.FormatInt(start, 10)
	}
	return strconv.FormatInt(start, 10)
}

// KeyPrefixes are the first key tokens of every window that can start in
// [lo, hi); for sessions some of the keys start outside it.
func (w Window) KeyPrefixes(lo, hi int64) []string {
	var out []string
	if w.Session() {
		for s := lo - floorMod(lo, keyGrain); s < hi; s += keyGrain {
			out = append(out, strconv.FormatInt(s, 10))
		}
		return out
	}
	for _, s := range w.Starts(lo, hi) {
		out = append(out, strconv.FormatInt(s, 10))
	}
	return out
}

// Starts returns the fixed window starts in [lo, hi), in order.
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

// SessionsSQL finds the sessions of rel in DuckDB: rel is a relation with
// the event time as the BIGINT column __t (microseconds) and the group-by
// columns by. It returns rel's rows with the start and end of the session
// each is in, as __start and __end: a row starts a session when no row of
// its group and span is less than Gap before it. Rows at the same time are
// peers of one window frame, so they fall in one session whatever order
// DuckDB sorts them in.
func (w Window) SessionsSQL(rel string, by []string) string {
	m := strconv.FormatInt(w.Max.Microseconds(), 10)
	gap := strconv.FormatInt(w.Gap.Microseconds(), 10)
	part := strings.Join(append(slices.Clone(by), "__span"), ", ")
	spans := fmt.Sprintf("SELECT *, __t - (((__t %% %s) + %s) %% %s) AS __span FROM %s", m, m, m, rel)
	starts := fmt.Sprintf("SELECT *, CAST(coalesce(__t - lag(__t) OVER (PARTITION BY %s ORDER BY __t) >= %s, true) AS INTEGER) AS __new FROM (%s)", part, gap, spans)
	ids := fmt.Sprintf("SELECT *, sum(__new) OVER (PARTITION BY %s ORDER BY __t) AS __sid FROM (%s)", part, starts)
	return fmt.Sprintf("SELECT *, min(__t) OVER (PARTITION BY %s, __sid) AS __start, least(max(__t) OVER (PARTITION BY %s, __sid) + %s, __span + %s) AS __end FROM (%s)",
		part, part, gap, m, ids)
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
