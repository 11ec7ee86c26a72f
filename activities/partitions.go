package activities

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"

	"tideline/lake"
	"tideline/spec"
)

func timeProp(s *lake.Snapshot, key string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s.Props[key])
	return t
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// inputEnd is the end of the event times a view partition reads: a window
// starting in the partition's last hop ends size-hop after it.
func inputEnd(v *spec.View, p lake.Partition) time.Time { return p.End().Add(v.Reach()) }

// inputStart is the start of the event times a view partition reads: an
// event less than a session's gap before the partition decides whether a
// session starts in it.
func inputStart(v *spec.View, p lake.Partition) time.Time { return p.Start.Add(-v.Lookback()) }

// SealedAt is when, in broker time, a view partition is sealed: the speed
// layer has closed every window starting in it, and compaction covering
// this instant has every event it received for them.
func SealedAt(v *spec.View, p lake.Partition) time.Time { return p.End().Add(v.SealDelay()) }

// viewPartitions are the partitions of v whose windows the events of the
// raw partitions given can change: a window starting in a partition before
// a raw one can hold its events, and an event near a partition's end
// decides whether a session starts in the next.
func viewPartitions(v *spec.View, raw []string) ([]lake.Partition, error) {
	size := v.Stream.Partition
	set := map[time.Time]lake.Partition{}
	for _, path := range raw {
		q, err := lake.ParsePartition(path, size)
		if err != nil {
			return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot read raw table of stream %s: %v", v.Stream.Name, err), ErrTypeBadData, err)
		}
		first := lake.PartitionOf(q.Start.Add(-v.Reach()).UnixMicro(), size)
		for p := first; p.Start.Before(q.End().Add(v.Lookback())); p = lake.PartitionOf(p.End().UnixMicro(), size) {
			set[p.Start] = p
		}
	}
	out := make([]lake.Partition, 0, len(set))
	for _, p := range set {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b lake.Partition) int { return a.Start.Compare(b.Start) })
	return out, nil
}

// byPartition indexes a snapshot's live files by partition, in key order.
func byPartition(s *lake.Snapshot) map[string][]lake.File {
	out := map[string][]lake.File{}
	for _, f := range s.List() {
		out[f.Partition] = append(out[f.Partition], f)
	}
	return out
}

// inputs are the raw files a view partition reads, in key order.
func (s *viewState) inputs(p lake.Partition) []lake.File {
	size := s.view.Stream.Partition
	end := inputEnd(s.view, p)
	var out []lake.File
	for q := lake.PartitionOf(inputStart(s.view, p).UnixMicro(), size); q.Start.Before(end); q = lake.PartitionOf(q.End().UnixMicro(), size) {
		out = append(out, s.rawFiles[q.Path()]...)
	}
	return out
}

// mark identifies the input of a view partition's recompute: the view's SQL
// and the raw files it reads. A batch file whose mark differs is stale.
func mark(v *spec.View, files []lake.File) string {
	h := sha256.New()
	h.Write([]byte(v.SQL("input")))
	for _, f := range files {
		h.Write([]byte{0})
		h.Write([]byte(f.Key))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// PartitionState is what the batch layer knows of one view partition.
type PartitionState struct {
	Partition string    `json:"partition"`
	Start     time.Time `json:"start"`
	SealedAt  time.Time `json:"sealed_at"`
	Sealed    bool      `json:"sealed"`
	Inputs    int       `json:"inputs"`   // raw files it reads
	Computed  bool      `json:"computed"` // it has a batch file
	Current   bool      `json:"current"`  // its batch result reflects the raw files there now
}

// viewState is a consistent read of a view and its stream's raw table.
type viewState struct {
	view       *spec.View
	raw        *lake.Snapshot
	batch      *lake.Snapshot
	covered    time.Time
	tideline   time.Time
	parts      []lake.Partition // with raw data, in order
	rawFiles   map[string][]lake.File
	batchFiles map[string][]lake.File
}

func (a *Activities) readView(ctx context.Context, name string) (*viewState, error) {
	v, err := a.view(name)
	if err != nil {
		return nil, err
	}
	// The view first: a raw commit landing in between only makes the view
	// look staler than it is, never fresher.
	batch, err := a.viewTable(v).Snapshot(ctx)
	if err != nil {
		return nil, fromLake(err)
	}
	raw, err := a.rawTable(v.Stream).Snapshot(ctx)
	if err != nil {
		return nil, fromLake(err)
	}
	parts, err := viewPartitions(v, raw.Partitions())
	if err != nil {
		return nil, err
	}
	// Partitions the view's retention dropped stay dropped, whatever raw
	// data the stream keeps for them.
	if from := timeProp(batch, lake.PropRetainedFrom); !from.IsZero() {
		parts = slices.DeleteFunc(parts, func(p lake.Partition) bool { return !p.End().After(from) })
	}
	return &viewState{view: v, raw: raw, batch: batch, covered: timeProp(raw, lake.PropCovered), tideline: timeProp(batch, lake.PropTideline),
		parts: parts, rawFiles: byPartition(raw), batchFiles: byPartition(batch)}, nil
}

func (s *viewState) state(p lake.Partition) PartitionState {
	in := s.inputs(p)
	sealedAt := SealedAt(s.view, p)
	computed := len(s.batchFiles[p.Path()]) > 0
	got := s.batch.Marks[p.Path()]
	return PartitionState{
		Partition: p.Path(), Start: p.Start, SealedAt: sealedAt,
		Sealed:   !s.covered.IsZero() && !s.covered.Before(sealedAt),
		Inputs:   len(in),
		Computed: computed,
		Current:  len(in) == 0 || (computed && got == mark(s.view, in)),
	}
}

// sealedThrough is the end of the sealed partitions: every partition
// starting before it is sealed, the one starting at it is not.
func (s *viewState) sealedThrough() time.Time {
	if s.covered.IsZero() {
		return time.Time{}
	}
	size := s.view.Stream.Partition
	// p is sealed once covered >= p.End() + SealDelay.
	return lake.PartitionOf(s.covered.Add(-(size + s.view.SealDelay())).UnixMicro(), size).End()
}
