package stream

import (
	"cmp"
	"container/heap"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"tideline/spec"
)

// Outcome is what the operator did with one message.
type Outcome int

// The outcomes of Apply.
const (
	Applied   Outcome = iota // counted in at least one window
	Invalid                  // failed the contract; goes to the dead-letter stream
	Duplicate                // its id was seen in an open window already
	Late                     // every window it belongs to had closed
	Filtered                 // no view's filter kept it
)

// Update is a window's current value, emitted when it changes or closes.
type Update struct {
	View     *spec.View
	Start    int64 // UTC microseconds
	End      int64
	Dims     []spec.Value
	Measures []spec.Value
	Final    bool
	// Gone says the window is no more: a session that merged into another,
	// or that an earlier event moved the start of. Its key is deleted.
	Gone bool
	// Part is, for a partitioned stream, the partition the update is of,
	// plus one; 0 is a whole window (an unpartitioned stream's, or the
	// merge of every partition's: MergeParts). A partial update carries
	// its window's mergeable state in Partial (none when Gone).
	Part    int
	Partial *spec.Partial
	group   *group // set by Drain: the processor names windows by it
}

// windowID names a window of an operator's without building its key: the
// windows of one group have distinct starts, and a group made again after
// its windows closed only opens later ones.
type windowID struct {
	group *group
	start int64
}

func (u *Update) id() windowID { return windowID{u.group, u.Start} }

// group is one group of a view with its open windows: few at a time (one,
// or size/hop for hopping windows, plus those waiting out lateness), kept in
// one flat slice, so an event reaches all of them with one map lookup and
// reads no further pointer.
type group struct {
	key  string       // in viewState.groups
	dims []spec.Value // strings cloned: an event's are borrowed from its message
	// wins holds the windows, stride words each: the start, flags, for a
	// session the time of its last event, then the spec.Cell (count,
	// value) of each measure.
	wins  []int64
	dirty bool // on the view's dirty list
}

// The words of a window in group.wins.
const (
	winStart = iota
	winFlags
	winCells // first of the cells of a fixed window
	winLast  = winCells
)

// The flags of a window.
const (
	flagDirty = 1 << iota // changed since the last Drain
	flagFinal             // a session reported final, kept until no on-time event can touch it
)

// cells is the accumulator of the window at word at of g.
func (vs *viewState) cells(g *group, at int) spec.Accumulator {
	return unsafe.Slice((*spec.Cell)(unsafe.Pointer(&g.wins[at+vs.cellsAt])), len(vs.v.Measures))
}

type viewState struct {
	v        *spec.View
	groups   map[string]*group // dims key -> group
	minStart int64             // of any open window; MaxInt64 when none
	open     int               // windows held
	dirty    []*group          // groups with a window changed since Drain
	row      spec.Row
	late     uint64
	horizon  int64 // size + lateness, microseconds
	hop      int64 // microseconds
	span     int64 // (size/hop - 1) * hop: the oldest window an event is in starts this far before the latest
	stride   int   // words per window in group.wins
	cellsAt  int   // word of a window's first cell
	sketched bool  // a measure keeps a sketch (spec.View.Sketched)
	found    []bool
	// Sessions: when each group next has a session to close or forget (a
	// min-heap; a group may be in it more than once, and is looked at once
	// a Drain), and the windows gone since the last Drain.
	due  dueHeap
	gone []Update
	// since is the first event time from which the view has seen every
	// event: windows starting at or after it are the speed layer's; those
	// before were never held (the view is newer than them). MinInt64 when
	// the view has been here from the stream's start.
	since int64
}

// Operator is the speed layer's pure state machine for one stream: it
// validates events, tracks the watermark, folds events into the windows of
// every view of the stream, and says which windows changed or closed. It
// does no I/O and is not safe for concurrent use; Processor drives it.
//
// Event time semantics: the watermark is the largest event time seen, each
// bounded by the broker's receive time of its event, minus the stream's
// out-of-orderness bound. A window [start, end) of a view closes
// once the watermark reaches end + the view's lateness; an event whose
// windows have all closed is late and left for the batch layer. An event
// whose id was already applied, while a window holding it is still open, is
// a duplicate and not counted again.
type Operator struct {
	st    *spec.Stream
	views []*viewState
	ooo   int64 // out-of-orderness, microseconds

	Seq       uint64 // last stream sequence applied
	MaxEvent  int64  // largest event time seen, each bounded by its receive time; UTC microseconds
	Watermark int64

	// seen remembers the 64-bit hashes of applied ids until no window
	// holding them is open. Hashes keep memory and checkpoints small at high
	// rates; two ids colliding (about 1 in 10^5 over 16M live ids) would
	// make the speed layer skip an event, which batch then counts.
	seen       map[uint64]struct{}
	seenByTime map[int64][]uint64 // event-time second -> id hashes
	seenSeq    map[int64]uint64   // event-time second -> lowest sequence of its ids

	// MaxCheckpointIDs bounds the ids a checkpoint holds. Past it, the
	// checkpoint holds the sequence the ids start from instead, and a
	// restart rebuilds them by reading the stream from there (Remember).
	MaxCheckpointIDs int
	replayFrom       uint64 // set by Restore when the ids must be rebuilt
	forget           int64  // ids are kept this long after their event time

	// Part, when not 0, is the partition of the stream this operator
	// holds, plus one: its updates are partial (Update.Part).
	Part int

	keyBuf []byte
	values []spec.Value // Apply's decode buffer
	// sketches holds the approx_count_distinct sketches of every window.
	sketches *spec.Sketches
}

// NewOperator returns the empty state for the stream and its views.
func NewOperator(st *spec.Stream) *Operator {
	op := &Operator{
		st: st, ooo: st.OutOfOrderness.Microseconds(),
		MaxEvent: math.MinInt64, Watermark: math.MinInt64,
		seen: map[uint64]struct{}{}, seenByTime: map[int64][]uint64{}, seenSeq: map[int64]uint64{},
		MaxCheckpointIDs: 1_000_000, sketches: &spec.Sketches{},
	}
	for _, v := range st.Views {
		vs := &viewState{
			v: v, groups: map[string]*group{}, minStart: math.MaxInt64, horizon: v.Horizon().Microseconds(),
			cellsAt: winCells, stride: winCells + 2*len(v.Measures), since: math.MinInt64,
			sketched: v.Sketched(),
		}
		if v.Session() {
			vs.cellsAt++
			vs.stride++
		} else {
			n := int64(v.PerEvent())
			vs.hop = v.Hop.Microseconds()
			vs.span, vs.found = (n-1)*vs.hop, make([]bool, n)
		}
		op.views = append(op.views, vs)
		op.forget = max(op.forget, vs.horizon)
	}
	return op
}

// Apply processes one message. received is the broker's timestamp.
func (op *Operator) Apply(data []byte, seq uint64, received time.Time) (Outcome, error) {
	return op.ApplySubject(data, "", seq, received)
}

// ApplySubject is Apply for a message stored under subject. A partition's
// operator (Part > 0) takes only a subject whose last token is the event
// id's (spec.IDToken): with another, copies of one id could land in two
// partitions and both count, so it is invalid.
func (op *Operator) ApplySubject(data []byte, subject string, seq uint64, received time.Time) (Outcome, error) {
	if seq > op.Seq {
		op.Seq = seq
	}
	ev, err := op.st.Contract.DecodeInto(op.values, data, received, true)
	if err != nil {
		return Invalid, err
	}
	op.values = ev.Values
	if op.Part > 0 {
		c := op.st.Contract
		id := spec.IDText(ev.Values[c.ID], c.Fields[c.ID].Type)
		if tok := subject[strings.LastIndexByte(subject, '.')+1:]; tok != spec.IDToken(id) {
			return Invalid, fmt.Errorf("subject %s ends in token %s, but the token of id %q is %s: publish to %s.%s (stream.PublishSubject, or POST /v1/ingest), so that every copy of an id meets in one partition",
				subject, tok, id, spec.IDToken(id), op.st.SubjectPrefix(), spec.IDToken(id))
		}
	}
	return op.applyEvent(ev, received), nil
}

// applyEvent folds a valid event into every view. It keeps none of the
// event's strings, which may be borrowed (DecodeInto): a new group clones its
// group-by values.
func (op *Operator) applyEvent(ev spec.Event, received time.Time) Outcome {
	c := op.st.Contract
	ts := ev.Values[c.Time].Int
	id := idHash(ev.Values[c.ID], c.Fields[c.ID].Type)
	// Insert and test in one probe; an event applied nowhere is taken out
	// again below, which is rare.
	n := len(op.seen)
	op.seen[id] = struct{}{}
	if len(op.seen) == n {
		return Duplicate
	}
	// I7: an event moves event time no further than the broker's clock said
	// when it arrived. A producer whose clock runs ahead still counts in its
	// own (future) window, which closes when that time comes; it cannot
	// close anyone else's.
	bounded := ts
	if !received.IsZero() {
		bounded = min(ts, received.UnixMicro())
	}
	if bounded > op.MaxEvent {
		op.MaxEvent = bounded
		if wm := bounded - op.ooo; wm > op.Watermark {
			op.Watermark = wm
		}
	}
	applied, late := false, false
	for _, vs := range op.views {
		row, keep := vs.v.PrepareInto(vs.row, ev)
		if len(vs.v.Derived) > 0 {
			vs.row = row // keep the buffer; without derived fields row is the event's
		}
		if !keep {
			continue
		}
		var latest int64
		if vs.v.Session() {
			latest = ts
		} else if latest = vs.v.LatestStart(ts); op.closed(vs, latest) {
			vs.late++
			late = true
			continue
		}
		op.keyBuf = vs.v.AppendRowGroupKey(op.keyBuf[:0], row)
		g := vs.groups[string(op.keyBuf)] // no allocation for the lookup
		if g == nil {
			if vs.v.Session() && op.closedEnd(vs, vs.v.SessionEnd(ts)) {
				vs.late++
				late = true
				continue
			}
			g = &group{key: string(op.keyBuf), dims: vs.v.Dims(row)}
			for i, d := range g.dims {
				g.dims[i].Str = strings.Clone(d.Str)
			}
			vs.groups[g.key] = g
		}
		if vs.v.Session() {
			if !op.foldSession(vs, g, ts, row) {
				vs.late++
				late = true
				continue
			}
		} else {
			op.fold(vs, g, latest, row)
		}
		applied = true
	}
	if !applied {
		delete(op.seen, id)
		if late {
			return Late
		}
		return Filtered
	}
	op.remember(id, ts/1e6, op.Seq)
	return Applied
}

// remember records an id put in the dedup set, of an event in second sec
// applied at seq.
func (op *Operator) remember(id uint64, sec int64, seq uint64) {
	op.seenByTime[sec] = append(op.seenByTime[sec], id)
	if cur, ok := op.seenSeq[sec]; !ok || seq < cur {
		op.seenSeq[sec] = seq
	}
}

// ReplayFrom is the first sequence to read again with Remember after a
// Restore whose checkpoint left out the dedup ids; 0 when nothing is to be
// read. Read up to Seq.
func (op *Operator) ReplayFrom() uint64 { return op.replayFrom }

// Remember rebuilds the dedup set from a message already applied before the
// checkpoint: a valid event whose second is still live is remembered. One
// that was late or filtered then is remembered too, which is harmless: a
// repeat of it would be skipped either way.
func (op *Operator) Remember(data []byte, seq uint64, received time.Time) {
	ev, err := op.st.Contract.DecodeInto(op.values, data, received, true)
	if err != nil {
		return
	}
	op.values = ev.Values
	c := op.st.Contract
	sec := ev.Values[c.Time].Int / 1e6
	if op.Watermark != math.MinInt64 && (sec+1)*1e6+op.forget <= op.Watermark {
		return
	}
	id := idHash(ev.Values[c.ID], c.Fields[c.ID].Type)
	if _, dup := op.seen[id]; dup {
		return
	}
	op.seen[id] = struct{}{}
	op.remember(id, sec, seq)
}

// closed reports whether the fixed window starting at start has closed.
func (op *Operator) closed(vs *viewState, start int64) bool {
	return op.Watermark != math.MinInt64 && start+vs.horizon <= op.Watermark
}

// closedEnd reports whether a window ending at end has closed.
func (op *Operator) closedEnd(vs *viewState, end int64) bool {
	return op.Watermark != math.MinInt64 && vs.v.ClosesAt(end) <= op.Watermark
}

// foldSession adds a row at ts to the group's session it joins, merging
// the two it bridges, or opens a session. It reports false, changing
// nothing, when the row is late: a session it would join has closed, or
// the one it would open would have.
func (op *Operator) foldSession(vs *viewState, g *group, ts int64, row spec.Row) bool {
	w := vs.v.Window
	hit := [2]int{-1, -1}
	for at := 0; at < len(g.wins); at += vs.stride {
		if !w.Joins(ts, g.wins[at+winStart], g.wins[at+winLast]) {
			continue
		}
		if op.windowClosed(vs, g, at) {
			return false
		}
		if hit[0] < 0 {
			hit[0] = at
		} else {
			hit[1] = at // sessions of a span are Gap apart: one joins at most two
		}
	}
	at := hit[0]
	if at < 0 {
		if op.closedEnd(vs, w.SessionEnd(ts)) {
			return false
		}
		at = len(g.wins)
		g.wins = slices.Grow(g.wins, vs.stride)[:at+vs.stride]
		clear(g.wins[at:])
		g.wins[at+winStart], g.wins[at+winLast] = ts, ts
		vs.open++
		// The session closes at this at the earliest; if it grows, Drain
		// finds it later and puts the group back for then.
		heap.Push(&vs.due, dueEntry{vs.v.ClosesAt(w.SessionEnd(ts)), g})
	}
	if b := hit[1]; b >= 0 {
		// The row bridges two sessions: the later merges into the earlier.
		if g.wins[b+winStart] < g.wins[at+winStart] {
			at, b = b, at
		}
		cells, from := vs.cells(g, at), vs.cells(g, b)
		for i, m := range vs.v.Measures {
			m.Merge(&cells[i], from[i], op.sketches)
		}
		vs.v.Release(from, op.sketches)
		g.wins[at+winLast] = max(g.wins[at+winLast], g.wins[b+winLast])
		vs.goneAt(g, b)
		last := len(g.wins) - vs.stride
		copy(g.wins[b:b+vs.stride], g.wins[last:])
		g.wins = g.wins[:last]
		vs.open--
		if at == last {
			at = b
		}
	}
	if ts < g.wins[at+winStart] {
		vs.goneAt(g, at)
		g.wins[at+winStart] = ts
	}
	g.wins[at+winLast] = max(g.wins[at+winLast], ts)
	op.addAt(vs, g, at, row)
	return true
}

// bridgeable reports whether an event could still bridge the closed
// session at word at of g to an open one: the event would be late, so the
// closed session is remembered. An event less than Gap after the closed
// session's last joins an open one only if that starts less than 2*Gap
// after it.
func (op *Operator) bridgeable(vs *viewState, g *group, at int) bool {
	last := g.wins[at+winLast]
	for o := 0; o < len(g.wins); o += vs.stride {
		if g.wins[o+winFlags]&flagFinal == 0 && vs.v.Bridgeable(last, g.wins[o+winStart]) {
			return true
		}
	}
	return false
}

// goneAt records that the session at word at of g no longer has its key:
// it merged into another, or starts earlier now. It is reported gone even
// if it was never reported: a restart from a checkpoint replays events, but
// not the flushes between them, so whether the process before it wrote the
// key cannot be known; deleting a key that is not there is harmless.
func (vs *viewState) goneAt(g *group, at int) {
	vs.gone = append(vs.gone, Update{View: vs.v, Start: g.wins[at+winStart], Dims: g.dims, Gone: true, group: g})
}

// fold adds a row to every open window of the group that its time is in,
// the latest of which starts at latest, opening those not held yet.
func (op *Operator) fold(vs *viewState, g *group, latest int64, row spec.Row) {
	oldest := latest - vs.span
	found := vs.found
	clear(found)
	for at := 0; at < len(g.wins); at += vs.stride {
		start := g.wins[at+winStart]
		if start < oldest || start > latest || op.closed(vs, start) {
			continue
		}
		found[(latest-start)/vs.hop] = true
		op.addAt(vs, g, at, row)
	}
	for k, ok := range found {
		start := latest - int64(k)*vs.hop
		if ok || op.closed(vs, start) {
			continue
		}
		at := len(g.wins)
		g.wins = slices.Grow(g.wins, vs.stride)[:at+vs.stride]
		clear(g.wins[at:])
		g.wins[at+winStart] = start
		vs.minStart = min(vs.minStart, start)
		vs.open++
		op.addAt(vs, g, at, row)
	}
}

func (op *Operator) addAt(vs *viewState, g *group, at int, row spec.Row) {
	vs.v.Add(vs.cells(g, at), row, op.sketches)
	if g.wins[at+winFlags]&flagDirty == 0 {
		g.wins[at+winFlags] |= flagDirty
		if !g.dirty {
			g.dirty = true
			vs.dirty = append(vs.dirty, g)
		}
	}
}

func idHash(v spec.Value, t spec.Type) uint64 {
	if t == spec.TypeInt {
		return xxhash.Sum64String(strconv.FormatInt(v.Int, 10))
	}
	return xxhash.Sum64String(v.Str)
}

// Heal takes back event time that runs ahead of now, the clock of the
// process: a checkpoint written before event time was bounded by the
// broker's clock (I7) may hold a watermark a future-dated event moved up to
// an hour ahead, which would leave every event after it late. It reports
// how far ahead event time was. Windows the poisoned watermark closed early
// stay closed; batch counts what they missed.
func (op *Operator) Heal(now time.Time) time.Duration {
	n := now.UnixMicro()
	if op.MaxEvent == math.MinInt64 || op.MaxEvent <= n {
		return 0
	}
	ahead := time.Duration(op.MaxEvent-n) * time.Microsecond
	op.MaxEvent = n
	op.Watermark = min(op.Watermark, n-op.ooo)
	return ahead
}

// Tick advances the watermark on idle: once no event has arrived for the
// stream's idle timeout, event time is taken to pass with wall time since
// the last arrival. lastArrival is the wall time of the last event.
func (op *Operator) Tick(now, lastArrival time.Time) {
	idle := now.Sub(lastArrival)
	// With no event yet there is no event time to move on: a partition
	// that has had none holds its views' watermark back (ViewWatermark)
	// until it has one, which ids spread over every partition quickly.
	// Taking the wall clock instead would make a replay of older events
	// late in that partition alone.
	if op.MaxEvent == math.MinInt64 || idle < op.st.IdleTimeout {
		return
	}
	if wm := op.MaxEvent + idle.Microseconds() - op.ooo; wm > op.Watermark {
		op.Watermark = wm
	}
}

// Drain returns the updates since the last Drain: every changed open window,
// and a final update for every window the watermark has closed, which it
// then forgets. It also forgets ids no open window can hold.
func (op *Operator) Drain(out []Update) []Update {
	var vals []spec.Value // the measures of every update, allocated a chunk at a time
	value := func(vs *viewState, g *group, at int, final bool) Update {
		m := len(vs.v.Measures)
		if cap(vals)-len(vals) < m {
			vals = make([]spec.Value, 0, max(1024, m))
		}
		n := len(vals)
		vals = vs.v.AppendValues(vals, vs.cells(g, at), op.sketches)
		u := Update{View: vs.v, Start: g.wins[at+winStart], End: vs.end(g, at), Dims: g.dims, Measures: vals[n:len(vals):len(vals)], Final: final, group: g}
		if op.Part > 0 {
			p := vs.v.Export(vs.cells(g, at), op.sketches)
			u.Part, u.Partial = op.Part, &p
		}
		if final && vs.sketched {
			vs.v.Release(vs.cells(g, at), op.sketches) // a final value does not change
		}
		return u
	}
	for _, vs := range op.views {
		for i := range vs.gone {
			vs.gone[i].Part = op.Part
		}
		out = append(out, vs.gone...)
		clear(vs.gone)
		vs.gone = vs.gone[:0]
		for _, g := range vs.dirty {
			g.dirty = false
			for at := 0; at < len(g.wins); at += vs.stride {
				if g.wins[at+winFlags]&flagDirty == 0 {
					continue
				}
				g.wins[at+winFlags] &^= flagDirty
				if !op.windowClosed(vs, g, at) { // else reported below as final
					out = append(out, value(vs, g, at, false))
				}
			}
		}
		clear(vs.dirty)
		vs.dirty = vs.dirty[:0]
		if vs.v.Session() {
			out = op.drainSessions(vs, out, value)
			continue
		}
		if vs.minStart == math.MaxInt64 || !op.closed(vs, vs.minStart) {
			continue
		}
		vs.minStart = math.MaxInt64
		out = sweep(vs, out, value, func(g *group, at int) (final, keep bool) {
			start := g.wins[at+winStart]
			if op.closed(vs, start) {
				return true, false
			}
			vs.minStart = min(vs.minStart, start)
			return false, true
		})
	}
	if op.Watermark != math.MinInt64 {
		for sec, ids := range op.seenByTime {
			if (sec+1)*1e6+op.forget <= op.Watermark {
				for _, id := range ids {
					delete(op.seen, id)
				}
				delete(op.seenByTime, sec)
				delete(op.seenSeq, sec)
			}
		}
	}
	return out
}

// windowClosed reports whether the window at word at of g has closed (a
// session reported final has, whatever the watermark).
func (op *Operator) windowClosed(vs *viewState, g *group, at int) bool {
	return g.wins[at+winFlags]&flagFinal != 0 || op.closedEnd(vs, vs.end(g, at))
}

// end is the end of the window at word at of g.
func (vs *viewState) end(g *group, at int) int64 {
	if vs.v.Session() {
		return vs.v.SessionEnd(g.wins[at+winLast])
	}
	return vs.v.End(g.wins[at+winStart])
}

// drainSessions reports the sessions the watermark has closed as final,
// and forgets the closed sessions no on-time event can touch any more. An
// event less than Gap after a closed session is late (it would change a
// window already final) even when it joins an open session after it; that
// session starts less than 2*Gap after the closed one. So a closed session
// is kept while such an open session exists, or could still open on time:
// until the watermark passes 3*Gap after its last event, plus lateness.
//
// It looks only at the groups due by the watermark, so a Drain costs what
// closes, not what is open.
func (op *Operator) drainSessions(vs *viewState, out []Update, value func(*viewState, *group, int, bool) Update) []Update {
	if op.Watermark == math.MinInt64 {
		return out
	}
	w := vs.v.Window
	first := len(out)
	var done map[*group]bool
	for len(vs.due) > 0 && vs.due[0].at <= op.Watermark {
		g := heap.Pop(&vs.due).(dueEntry).g
		if len(g.wins) == 0 || done[g] {
			continue // forgotten, or looked at in this Drain
		}
		if done == nil {
			done = map[*group]bool{}
		}
		done[g] = true
		next, kept := int64(math.MaxInt64), 0
		for at := 0; at < len(g.wins); at += vs.stride {
			last := g.wins[at+winLast]
			if g.wins[at+winFlags]&flagFinal == 0 && op.closedEnd(vs, w.SessionEnd(last)) {
				out = append(out, value(vs, g, at, true))
				vs.open--
				g.wins[at+winFlags] |= flagFinal // kept, so events that would change it are late
			}
			due := w.ClosesAt(w.SessionEnd(last))
			if g.wins[at+winFlags]&flagFinal != 0 {
				if due = w.Untouchable(last); due <= op.Watermark {
					if !op.bridgeable(vs, g, at) {
						continue // forgotten
					}
					due = math.MaxInt64 // the open session it could be bridged to is due first
				}
			}
			next = min(next, due)
			copy(g.wins[kept:], g.wins[at:at+vs.stride])
			kept += vs.stride
		}
		if g.wins = g.wins[:kept]; kept == 0 {
			delete(vs.groups, g.key)
			continue
		}
		heap.Push(&vs.due, dueEntry{next, g})
	}
	slices.SortStableFunc(out[first:], func(a, b Update) int { return cmp.Compare(a.Start, b.Start) })
	return out
}

// dueEntry is a group of a session view due to be looked at when the
// watermark reaches at.
type dueEntry struct {
	at int64
	g  *group
}

// dueHeap orders dueEntry by at (container/heap).
type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = dueEntry{}
	*h = old[:len(old)-1]
	return x
}

// sweep asks decide of every window of vs whether to report it final
// (value's update goes to out; the window no longer counts as open) and
// whether to keep it. It packs the windows kept, forgets the groups left
// with none, and returns out with the final updates ordered by start.
func sweep(vs *viewState, out []Update, value func(*viewState, *group, int, bool) Update, decide func(g *group, at int) (final, keep bool)) []Update {
	first := len(out)
	for key, g := range vs.groups {
		kept := 0
		for at := 0; at < len(g.wins); at += vs.stride {
			final, keep := decide(g, at)
			if final {
				out = append(out, value(vs, g, at, true))
				vs.open--
			}
			if !keep {
				continue
			}
			copy(g.wins[kept:], g.wins[at:at+vs.stride])
			kept += vs.stride
		}
		if g.wins = g.wins[:kept]; kept == 0 {
			delete(vs.groups, key)
		}
	}
	slices.SortStableFunc(out[first:], func(a, b Update) int { return cmp.Compare(a.Start, b.Start) })
	return out
}

// OpenWindows counts the windows held in memory.
func (op *Operator) OpenWindows() int {
	n := 0
	for _, vs := range op.views {
		n += vs.open
	}
	return n
}

// LateEvents returns late events counted per view since the start.
// Since returns, per view, the event time (UTC microseconds) from which the
// view has seen every event: a view added to a running stream starts after
// the latest event time applied before it. math.MinInt64 means from the
// stream's start.
func (op *Operator) Since() map[string]int64 {
	out := map[string]int64{}
	for _, vs := range op.views {
		out[vs.v.Name] = vs.since
	}
	return out
}

func (op *Operator) LateEvents() map[string]uint64 {
	out := map[string]uint64{}
	for _, vs := range op.views {
		out[vs.v.Name] = vs.late
	}
	return out
}
