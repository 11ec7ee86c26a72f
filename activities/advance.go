package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tideline/lake"
)

// AdvanceResult says how far a view's tideline moved.
type AdvanceResult struct {
	View string    `json:"view"`
	From time.Time `json:"from"` // the tideline before
	To   time.Time `json:"to"`   // and after
	// Passed counts the partitions the tideline moved over.
	Passed int `json:"passed"`
	// Corrections counts windows whose speed value batch replaced.
	Corrections int `json:"corrections"`
	// Waiting says what holds the tideline where it is.
	Waiting string `json:"waiting,omitempty"`
}

// Advance moves a view's tideline over every partition after it that is
// sealed and whose batch result is current, stopping at the first that is
// not. For each window it passes that the speed layer served with another
// value, it records a correction; windows from before the speed layer held
// the view (a view newer than them) are history, not corrections. The move
// is compare-and-swap on the view table, so of two racing advances one
// lands and the other retries.
func (a *Activities) Advance(ctx context.Context, in ViewInput) (AdvanceResult, error) {
	defer a.observe("advance", time.Now())
	s, err := a.readView(ctx, in.View)
	if err != nil {
		return AdvanceResult{}, err
	}
	v := s.view
	// Corrections of an earlier move that landed, if its activity stopped
	// before it recorded them.
	if err := a.recordStaged(ctx, v, s.batch); err != nil {
		return AdvanceResult{}, err
	}
	res := AdvanceResult{View: v.Name, From: s.tideline, To: s.tideline}
	if len(s.parts) == 0 {
		res.Waiting = "no raw data yet"
		return res, nil
	}
	t := s.tideline
	if t.IsZero() {
		t = s.parts[0].Start
	}
	// Data partitions in order; the empty ones between them pass when
	// sealed, and so do the empty ones after the last, up to the seal
	// frontier.
	frontier := s.sealedThrough()
	var passed []lake.Partition
	blocked := false
	for _, p := range s.parts {
		if p.Start.Before(t) {
			continue
		}
		if !p.Start.Before(frontier) {
			ps := s.state(p)
			res.Waiting = fmt.Sprintf("partition %s is not sealed: compaction has covered the stream to %s, it needs %s", ps.Partition, formatTime(s.covered), formatTime(ps.SealedAt))
			break
		}
		if ps := s.state(p); !ps.Current {
			res.Waiting = fmt.Sprintf("partition %s needs a recompute", ps.Partition)
			t, blocked = p.Start, true
			break
		}
		passed = append(passed, p)
		t = p.End()
	}
	if !blocked && frontier.After(t) {
		t = frontier
	}
	res.To, res.Passed = t, len(passed)
	if t.Equal(s.tideline) {
		return res, nil
	}
	// The corrections of each partition passed, recorded with the move.
	corrections := map[string]*lake.Rows{}
	watermark, written, since, err := a.speedWatermark(ctx, v)
	if err != nil {
		return res, err
	}
	// A running speed layer closes every window of a partition before the
	// tideline passes it, so what it served is final and the corrections
	// are exactly what late data changed; one behind (restarting, catching
	// up) would otherwise be corrected for what it had not read yet, or
	// not at all for windows it had not reached. One that has not written
	// its watermark for SpeedGrace is taken as stopped.
	speedRunning := !written.IsZero() && a.Now().Sub(written) < a.SpeedGrace
	held := -1
	// Reading batch and speed windows can take long on a busy machine; the
	// heartbeat must not wait for a whole partition.
	err = heartbeating(ctx, "correcting", func() error {
		for i, p := range passed {
			batchFiles := s.batchFiles[p.Path()]
			if len(batchFiles) == 0 {
				continue
			}
			batch, err := a.readBatch(ctx, v, batchFiles, p.Start, p.End())
			if err != nil {
				return err
			}
			if need := lastClose(v, batch); speedRunning && watermark.Before(need) {
				held = i
				wm := "it has closed none"
				if !watermark.IsZero() {
					wm = "its watermark is " + formatTime(watermark)
				}
				res.Waiting = fmt.Sprintf("partition %s: the speed layer has not closed its windows yet (%s, it needs %s)", p.Path(), wm, formatTime(need))
				return nil
			}
			speed, err := a.readSpeed(ctx, v, p.Start, p.End())
			if err != nil {
				return err
			}
			if !since.IsZero() {
				dropBefore(speed, since)
				dropBefore(batch, since)
			}
			rows, touched := diff(v, KindSpeed, speed, batch, watermark, a.Now())
			if touched > 0 {
				corrections[p.Path()] = rows
				res.Corrections += touched
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if held >= 0 {
		t = passed[held].Start
		passed = passed[:held]
		res.To, res.Passed = t, len(passed)
		if t.Equal(s.tideline) {
			return res, nil
		}
	}
	// The move is conditional on the tideline and on the batch files of
	// every partition it passes being the ones the corrections were drawn
	// from: a recompute landing in between (late data) would otherwise
	// pass unrecorded, served from batch while corrected for older values.
	// The corrections stand only if the move lands: another advance that
	// read the partitions earlier (an older watermark, older batch files)
	// draws other corrections, and its move loses.
	read := map[string][]string{}
	for _, p := range passed {
		read[p.Path()] = []string{}
		for _, f := range s.batchFiles[p.Path()] {
			read[p.Path()] = append(read[p.Path()], f.Key)
		}
	}
	snap, err := a.commitWithCorrections(ctx, v, lake.Commit{Op: "advance",
		Props:   map[string]string{lake.PropTideline: formatTime(t)},
		IfProps: map[string]string{lake.PropTideline: s.batch.Props[lake.PropTideline]},
		IfFiles: read}, KindSpeed, corrections)
	if errors.Is(err, lake.ErrConflict) {
		return res, fmt.Errorf("cannot move the tideline of view %s: another advance or a recompute changed it first; retrying reads it again: %w", v.Name, err)
	}
	if err != nil {
		return res, err
	}
	a.Metrics.Corrections.WithLabelValues(v.Name, KindSpeed).Add(float64(res.Corrections))
	a.Metrics.Tideline.WithLabelValues(v.Name).Set(float64(t.Unix()))
	a.Log.Info("tideline advanced", "view", v.Name, "from", formatTime(s.tideline), "to", formatTime(t), "partitions", len(passed), "corrections", res.Corrections, "waiting", res.Waiting)
	return res, a.recordStaged(ctx, v, snap)
}
