package stream

import (
	"cmp"
	"encoding/binary"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"time"

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
	Dims     []spec.Value
	Measures []spec.Value
	Final    bool
}

// group is one group of a view with its open windows: few at a time (one,
// or size/hop for hopping windows, plus those waiting out lateness), so one
// map lookup per event finds them all.
type group struct {
	dims   []spec.Value
	starts []int64 // wins[i].start, kept apart so the search reads one cache line
	wins   []*window
}

// addWindow adds an open window to the group.
func (g *group) addWindow(w *window) {
	g.starts = append(g.starts, w.start)
	g.wins = append(g.wins, w)
}

// window is one open window of one group.
type window struct {
	start int64
	dims  []spec.Value // the group's
	acc   spec.Accumulator
	dirty bool
}

type viewState struct {
	v        *spec.View
	groups   map[string]*group // dims key -> group
	minStart int64             // of any open window; MaxInt64 when none
	dirty    []*window
	row      spec.Row
	starts   []int64
	late     uint64
	horizon  int64 // size + lateness, microseconds
}

// Operator is the speed layer's pure state machine for one stream: it
// validates events, tracks the watermark, folds events into the windows of
// every view of the stream, and says which windows changed or closed. It
// does no I/O and is not safe for concurrent use; Processor drives it.
//
// Event time semantics: the watermark is the largest event time seen minus
// the stream's out-of-orderness bound. A window [start, end) of a view closes
// once the watermark reaches end + the view's lateness; an event whose
// windows have all closed is late and left for the batch layer. An event
// whose id was already applied, while a window holding it is still open, is
// a duplicate and not counted again.
type Operator struct {
	st    *spec.Stream
	views []*viewState
	ooo   int64 // out-of-orderness, microseconds

	Seq       uint64 // last stream sequence applied
	MaxEvent  int64  // largest event time seen, UTC microseconds
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

	keyBuf []byte
	open   int // windows held, over every view
}

// NewOperator returns the empty state for the stream and its views.
func NewOperator(st *spec.Stream) *Operator {
	op := &Operator{
		st: st, ooo: st.OutOfOrderness.Microseconds(),
		MaxEvent: math.MinInt64, Watermark: math.MinInt64,
		seen: map[uint64]struct{}{}, seenByTime: map[int64][]uint64{}, seenSeq: map[int64]uint64{},
		MaxCheckpointIDs: 1_000_000,
	}
	for _, v := range st.Views {
		vs := &viewState{v: v, groups: map[string]*group{}, minStart: math.MaxInt64, horizon: (v.Size + v.Lateness).Microseconds()}
		op.views = append(op.views, vs)
		op.forget = max(op.forget, vs.horizon)
	}
	return op
}

// Apply processes one message. received is the broker's timestamp.
func (op *Operator) Apply(data []byte, seq uint64, received time.Time) (Outcome, error) {
	if seq > op.Seq {
		op.Seq = seq
	}
	ev, err := op.st.Contract.Decode(data, received)
	if err != nil {
		return Invalid, err
	}
	return op.ApplyEvent(ev), nil
}

// ApplyEvent folds a valid event into every view.
func (op *Operator) ApplyEvent(ev spec.Event) Outcome {
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
	if ts > op.MaxEvent {
		op.MaxEvent = ts
		if wm := ts - op.ooo; wm > op.Watermark {
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
		vs.starts = vs.v.Assign(ts, vs.starts[:0])
		var g *group
		for _, start := range vs.starts {
			if op.closed(vs, start) {
				continue
			}
			if g == nil {
				op.keyBuf = appendDimsKey(op.keyBuf[:0], vs.v, row)
				if g = vs.groups[string(op.keyBuf)]; g == nil { // no allocation for the lookup
					g = &group{dims: vs.v.Dims(row)}
					vs.groups[string(op.keyBuf)] = g
				}
			}
			op.add(vs, g, start, row)
		}
		here := g != nil
		if here {
			applied = true
		} else {
			vs.late++
			late = true
		}
	}
	if !applied {
		delete(op.seen, id)
		if late {
			return Late
		}
		return Filtered
	}
	op.remember(id, ts/1e6)
	return Applied
}

func (op *Operator) remember(id uint64, sec int64) {
	op.seenByTime[sec] = append(op.seenByTime[sec], id)
	if cur, ok := op.seenSeq[sec]; !ok || op.Seq < cur {
		op.seenSeq[sec] = op.Seq
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
	ev, err := op.st.Contract.Decode(data, received)
	if err != nil {
		return
	}
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
	saved := op.Seq
	op.Seq = seq
	op.remember(id, sec)
	op.Seq = saved
}

// closed reports whether the window starting at start has closed.
func (op *Operator) closed(vs *viewState, start int64) bool {
	return op.Watermark != math.MinInt64 && start+vs.horizon <= op.Watermark
}

func (op *Operator) add(vs *viewState, g *group, start int64, row spec.Row) {
	var w *window
	for i, x := range g.starts {
		if x == start {
			w = g.wins[i]
			break
		}
	}
	if w == nil {
		w = &window{start: start, dims: g.dims, acc: vs.v.NewAccumulator()}
		g.addWindow(w)
		vs.minStart = min(vs.minStart, start)
		op.open++
	}
	vs.v.Add(w.acc, row)
	if !w.dirty {
		w.dirty = true
		vs.dirty = append(vs.dirty, w)
	}
}

// appendDimsKey encodes a row's group-by values as a map key.
func appendDimsKey(b []byte, v *spec.View, row spec.Row) []byte {
	for _, c := range v.GroupBy {
		x := row[c.Index]
		if x.Null {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		switch c.Type {
		case spec.TypeString:
			b = binary.AppendUvarint(b, uint64(len(x.Str)))
			b = append(b, x.Str...)
		case spec.TypeBool:
			if x.Bool {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		default:
			b = binary.AppendVarint(b, x.Int)
		}
	}
	return b
}

func idHash(v spec.Value, t spec.Type) uint64 {
	if t == spec.TypeInt {
		return xxhash.Sum64String(strconv.FormatInt(v.Int, 10))
	}
	return xxhash.Sum64String(v.Str)
}

func idKey(v spec.Value, t spec.Type) string {
	if t == spec.TypeInt {
		return strconv.FormatInt(v.Int, 10)
	}
	return v.Str
}

// Tick advances the watermark on idle: once no event has arrived for the
// stream's idle timeout, event time is taken to pass with wall time since
// the last arrival. lastArrival is the wall time of the last event.
func (op *Operator) Tick(now, lastArrival time.Time) {
	idle := now.Sub(lastArrival)
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
	for _, vs := range op.views {
		for _, w := range vs.dirty {
			w.dirty = false
			if op.closed(vs, w.start) {
				continue // reported below as final
			}
			out = append(out, Update{View: vs.v, Start: w.start, Dims: w.dims, Measures: vs.v.Values(w.acc)})
		}
		vs.dirty = vs.dirty[:0]
		if vs.minStart == math.MaxInt64 || !op.closed(vs, vs.minStart) {
			continue
		}
		first := len(out)
		vs.minStart = math.MaxInt64
		for key, g := range vs.groups {
			open, starts := g.wins[:0], g.starts[:0]
			for _, w := range g.wins {
				if op.closed(vs, w.start) {
					out = append(out, Update{View: vs.v, Start: w.start, Dims: w.dims, Measures: vs.v.Values(w.acc), Final: true})
					op.open--
				} else {
					open, starts = append(open, w), append(starts, w.start)
					vs.minStart = min(vs.minStart, w.start)
				}
			}
			clear(g.wins[len(open):])
			if g.wins, g.starts = open, starts; len(open) == 0 {
				delete(vs.groups, key)
			}
		}
		slices.SortStableFunc(out[first:], func(a, b Update) int { return cmp.Compare(a.Start, b.Start) })
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

// OpenWindows counts the windows held in memory.
func (op *Operator) OpenWindows() int { return op.open }

// LateEvents returns late events counted per view since the start.
func (op *Operator) LateEvents() map[string]uint64 {
	out := map[string]uint64{}
	for _, vs := range op.views {
		out[vs.v.Name] = vs.late
	}
	return out
}

// dimsHash is a short stable name for a group, used in KV keys.
func dimsHash(dims []spec.Value) string {
	h := fnv.New64a()
	var b [8]byte
	for _, d := range dims {
		if d.Null {
			h.Write([]byte{0})
			continue
		}
		h.Write([]byte{1})
		h.Write([]byte(d.Str))
		binary.LittleEndian.PutUint64(b[:], uint64(d.Int))
		h.Write(b[:])
		if d.Bool {
			h.Write([]byte{1})
		}
	}
	return strconv.FormatUint(h.Sum64(), 16)
}
