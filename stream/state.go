package stream

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"maps"
	"math"
	"sort"

	"github.com/klauspost/compress/zstd"

	"tideline/spec"
)

// state is an Operator's checkpoint: everything needed to resume as if the
// process had never stopped, tied to the last sequence applied.
type state struct {
	Stream    string
	Seq       uint64
	MaxEvent  int64
	Watermark int64
	Views     []viewSnapshot
	Seen      map[int64][]uint64 // event-time second -> id hashes
	// SeenFromSeq replaces Seen when there are too many ids: they are
	// rebuilt by reading the stream from this sequence up to Seq.
	SeenFromSeq uint64
	SeenSeq     map[int64]uint64 // event-time second -> lowest sequence of its ids
	// Sketches are the approx_count_distinct sketches the windows' cells
	// name.
	Sketches *spec.Sketches
	// Part is the partition the state is of, plus one (Operator.Part).
	Part int
}

type viewSnapshot struct {
	Name string
	Late uint64
	// Since is viewState.since, plus one so that a checkpoint written
	// before it existed (zero) reads as "from the start".
	Since int64
	// Groups holds the open windows a group at a time, as the operator
	// keeps them (group.wins): Stride words each.
	Groups []groupSnapshot
	Stride int
	// Windows is how checkpoints written before Groups held them: read
	// still, so an upgrade resumes; never written.
	Windows []windowSnapshot
}

type groupSnapshot struct {
	Dims []spec.Value
	Wins []int64
}

type windowSnapshot struct {
	Start int64
	Dims  []spec.Value
	Acc   spec.Accumulator
}

var (
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	zdec, _ = zstd.NewReader(nil)
)

// Checkpoint encodes the operator's state (compressed). Call it after Drain,
// so no update is pending.
func (op *Operator) Checkpoint() ([]byte, error) { return op.Snapshot().Encode() }

// Snapshot is the operator's state at one moment, taken cheaply so a caller
// holding the operator's lock can encode it after releasing it.
type Snapshot struct{ s state }

// Snapshot copies what Apply and Drain change (the accumulators, and the
// dedup index's map, whose slices are only appended to). Call it after
// Drain, so no update is pending.
func (op *Operator) Snapshot() Snapshot {
	s := state{Stream: op.st.Name, Part: op.Part, Seq: op.Seq, MaxEvent: op.MaxEvent, Watermark: op.Watermark}
	if op.sketches.Len() > 0 {
		s.Sketches = op.sketches.Clone()
	}
	words := 0
	for _, vs := range op.views {
		words += vs.open * vs.stride
	}
	flat := make([]int64, 0, words) // one allocation for every window: this runs under the processor's lock
	for _, vs := range op.views {
		snap := viewSnapshot{Name: vs.v.Name, Late: vs.late, Since: vs.since + 1, Stride: vs.stride, Groups: make([]groupSnapshot, 0, len(vs.groups))}
		for _, g := range vs.groups {
			n := len(flat)
			flat = append(flat, g.wins...)
			snap.Groups = append(snap.Groups, groupSnapshot{Dims: g.dims, Wins: flat[n:len(flat):len(flat)]})
		}
		s.Views = append(s.Views, snap)
	}
	s.SeenSeq = maps.Clone(op.seenSeq)
	if len(op.seen) <= op.MaxCheckpointIDs {
		s.Seen = make(map[int64][]uint64, len(op.seenByTime))
		for sec, ids := range op.seenByTime {
			s.Seen[sec] = ids[:len(ids):len(ids)]
		}
	} else {
		s.SeenFromSeq = op.Seq
		for _, seq := range op.seenSeq {
			s.SeenFromSeq = min(s.SeenFromSeq, seq)
		}
	}
	return Snapshot{s}
}

// Since is Operator.Since of one view when the snapshot was taken.
func (s Snapshot) Since(view string) int64 {
	for _, v := range s.s.Views {
		if v.Name == view {
			return v.Since - 1
		}
	}
	return math.MinInt64
}

// Seq is the last stream sequence the snapshot holds.
func (s Snapshot) Seq() uint64 { return s.s.Seq }

// Encode serializes and compresses the snapshot; it may run beside Apply.
func (s Snapshot) Encode() ([]byte, error) {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&s.s); err != nil {
		return nil, fmt.Errorf("cannot encode checkpoint of stream %s: %w", s.s.Stream, err)
	}
	return zenc.EncodeAll(buf.Bytes(), nil), nil
}

// Restore replaces the operator's state with a checkpoint's.
func (op *Operator) Restore(data []byte) error {
	raw, err := zdec.DecodeAll(data, nil)
	if err != nil {
		return fmt.Errorf("cannot decompress checkpoint of stream %s: %w", op.st.Name, err)
	}
	var s state
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&s); err != nil {
		return fmt.Errorf("cannot decode checkpoint of stream %s: %w", op.st.Name, err)
	}
	if s.Stream != op.st.Name {
		return fmt.Errorf("cannot restore checkpoint of stream %s into stream %s", s.Stream, op.st.Name)
	}
	if s.Part != op.Part {
		return fmt.Errorf("cannot restore the checkpoint of partition %d of stream %s into partition %d: delete the checkpoint to start the partition over", s.Part-1, op.st.Name, op.Part-1)
	}
	fresh := NewOperator(op.st)
	fresh.Part = op.Part
	fresh.Seq, fresh.MaxEvent, fresh.Watermark = s.Seq, s.MaxEvent, s.Watermark
	fresh.MaxCheckpointIDs, fresh.replayFrom = op.MaxCheckpointIDs, s.SeenFromSeq
	for sec, seq := range s.SeenSeq {
		fresh.seenSeq[sec] = seq
	}
	if s.Sketches != nil {
		fresh.sketches = s.Sketches
	}
	byName := map[string]*viewState{}
	for _, vs := range fresh.views {
		byName[vs.v.Name] = vs
	}
	restored := map[string]bool{}
	for _, snap := range s.Views {
		vs := byName[snap.Name]
		if vs == nil {
			continue // a view removed from the spec since
		}
		restored[snap.Name] = true
		vs.late = snap.Late
		if snap.Since != 0 {
			vs.since = snap.Since - 1
		}
		changed := fmt.Errorf("cannot restore view %s of stream %s: its measures or group-by changed since the checkpoint; delete the checkpoint to start the view afresh", snap.Name, op.st.Name)
		if len(snap.Groups) > 0 && snap.Stride != vs.stride {
			return changed
		}
		for _, gs := range snap.Groups {
			if len(gs.Dims) != len(vs.v.GroupBy) || len(gs.Wins)%vs.stride != 0 {
				return changed
			}
			g := vs.group(gs.Dims)
			for at := 0; at < len(gs.Wins); at += vs.stride {
				w := gs.Wins[at : at+vs.stride]
				w[winFlags] &^= flagDirty // a change since the last Drain was not published: it is not pending after a restart
				vs.restoreWindow(g, w)
			}
		}
		for _, w := range snap.Windows {
			if len(w.Acc) != len(vs.v.Measures) || len(w.Dims) != len(vs.v.GroupBy) {
				return changed
			}
			rec := make([]int64, vs.stride)
			rec[winStart] = w.Start
			for i, c := range w.Acc {
				rec[winCells+2*i], rec[winCells+2*i+1] = c.N, c.V
			}
			vs.restoreWindow(vs.group(w.Dims), rec)
		}
	}
	// A view the checkpoint does not have is new: it has seen no event up
	// to the latest applied, and holds the windows after it.
	for _, vs := range fresh.views {
		if !restored[vs.v.Name] && s.MaxEvent != math.MinInt64 {
			vs.since = s.MaxEvent + 1
		}
	}
	for sec, ids := range s.Seen {
		fresh.seenByTime[sec] = ids
		for _, id := range ids {
			fresh.seen[id] = struct{}{}
		}
	}
	*op = *fresh
	return nil
}

// group returns the view's group of dims, made if new; Restore's lookup.
func (vs *viewState) group(dims []spec.Value) *group {
	key := string(vs.v.AppendGroupKey(nil, dims))
	g := vs.groups[key]
	if g == nil {
		g = &group{key: key, dims: dims}
		vs.groups[key] = g
		if vs.v.Session() {
			vs.due = append(vs.due, dueEntry{math.MinInt64, g}) // the first Drain looks at it; all equal, so a heap
		}
	}
	return g
}

// restoreWindow adds a window of a checkpoint, its words as group.wins
// holds them, to a group.
func (vs *viewState) restoreWindow(g *group, w []int64) {
	g.wins = append(g.wins, w...)
	if w[winFlags]&flagFinal == 0 {
		vs.open++
	}
	vs.minStart = min(vs.minStart, w[winStart])
}

// Windows lists the open windows of a view, ordered by start, for tests and
// status pages.
func (op *Operator) Windows(view string) []Update {
	var out []Update
	for _, vs := range op.views {
		if vs.v.Name != view {
			continue
		}
		for _, g := range vs.groups {
			for at := 0; at < len(g.wins); at += vs.stride {
				if g.wins[at+winFlags]&flagFinal != 0 {
					continue
				}
				out = append(out, Update{View: vs.v, Start: g.wins[at+winStart], End: vs.end(g, at), Dims: g.dims, Measures: vs.v.Values(vs.cells(g, at), op.sketches)})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}
