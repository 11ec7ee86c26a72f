package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"tideline/lake"
	"tideline/spec"
)

// ErrTypeNotSealed is a retryable error: compaction has not covered the
// partition yet, so computing it now would use half the data.
const ErrTypeNotSealed = "NotSealed"

// ViewInput names a view.
type ViewInput struct {
	View string `json:"view"`
}

// PendingResult lists a view's partitions by what they need.
type PendingResult struct {
	View     string    `json:"view"`
	Tideline time.Time `json:"tideline"`
	Covered  time.Time `json:"covered"`
	// Stale are sealed partitions whose batch result is missing or out of
	// date: what a recompute should run for now.
	Stale []string `json:"stale"`
	// Unsealed are partitions compaction has not covered yet.
	Unsealed []string `json:"unsealed"`
}

// Pending reports which partitions of a view are sealed and stale. It only
// reads, so workflows run it as a local activity.
func (a *Activities) Pending(ctx context.Context, in ViewInput) (PendingResult, error) {
	s, err := a.readView(ctx, in.View)
	if err != nil {
		return PendingResult{}, err
	}
	res := PendingResult{View: in.View, Tideline: s.tideline, Covered: s.covered}
	for _, p := range s.parts {
		switch ps := s.state(p); {
		case !ps.Sealed:
			res.Unsealed = append(res.Unsealed, ps.Partition)
		case !ps.Current:
			res.Stale = append(res.Stale, ps.Partition)
		}
	}
	return res, nil
}

// PartitionInput names one partition of a view.
type PartitionInput struct {
	View      string `json:"view"`
	Partition string `json:"partition"` // dt=YYYY-MM-DD/hr=HH[/min=MM]
}

// Partition reports the state of one view partition.
func (a *Activities) Partition(ctx context.Context, in PartitionInput) (PartitionState, error) {
	s, err := a.readView(ctx, in.View)
	if err != nil {
		return PartitionState{}, err
	}
	p, err := a.parsePartition(s.view, in.Partition)
	if err != nil {
		return PartitionState{}, err
	}
	return s.state(p), nil
}

func (a *Activities) parsePartition(v *spec.View, path string) (lake.Partition, error) {
	p, err := lake.ParsePartition(path, v.Stream.Partition)
	if err != nil {
		return lake.Partition{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot use partition of view %s: %v", v.Name, err), ErrTypeBadInput, err)
	}
	return p, nil
}

// RecomputeResult says what a recompute wrote.
type RecomputeResult struct {
	View       string `json:"view"`
	Partition  string `json:"partition"`
	Current    bool   `json:"current,omitempty"` // nothing to do: the batch result was current
	Inputs     int    `json:"inputs"`            // raw files read
	Rows       int64  `json:"rows"`              // windows written
	Events     int64  `json:"events"`            // valid, distinct events counted
	RawVersion int64  `json:"raw_version"`
	Key        string `json:"key,omitempty"`
	// Corrections counts windows below the tideline whose batch value
	// changed.
	Corrections int `json:"corrections,omitempty"`
}

// Recompute computes a sealed view partition exactly from its raw files
// with DuckDB: repeated ids dropped (the first by stream sequence kept), then
// the view's SQL from spec. It replaces the partition's batch file in one
// commit, and checks that the windows count the partition's valid, distinct
// events. Below the tideline, what changed is recorded as corrections.
//
// An error no retry can fix (the view's SQL cannot run over the partition's
// files, a count check failed, a lake file is corrupt) is non-retryable and
// recorded on the view table (PropFailed + partition), where /v1/status,
// the backfill's progress and the dashboard show it, until a recompute of
// the partition succeeds.
func (a *Activities) Recompute(ctx context.Context, in PartitionInput) (RecomputeResult, error) {
	defer a.observe("recompute", time.Now())
	res, err := a.recompute(ctx, in)
	if err != nil {
		a.recordFailure(ctx, in, err)
	}
	return res, err
}

func (a *Activities) recompute(ctx context.Context, in PartitionInput) (RecomputeResult, error) {
	s, err := a.readView(ctx, in.View)
	if err != nil {
		return RecomputeResult{}, err
	}
	v := s.view
	p, err := a.parsePartition(v, in.Partition)
	if err != nil {
		return RecomputeResult{}, err
	}
	ps := s.state(p)
	res := RecomputeResult{View: v.Name, Partition: ps.Partition, Inputs: ps.Inputs, RawVersion: s.raw.Version}
	if !ps.Sealed {
		return res, temporal.NewApplicationError(fmt.Sprintf("cannot recompute partition %s of view %s yet: compaction has covered the stream to %s, it needs %s",
			ps.Partition, v.Name, formatTime(s.covered), formatTime(ps.SealedAt)), ErrTypeNotSealed)
	}
	if ps.Current {
		res.Current = true
		return res, a.recordStaged(ctx, v, s.batch)
	}
	in2 := s.inputs(p)
	m := mark(v, in2)
	var paths []string
	if err := heartbeating(ctx, "fetching", func() (err error) { paths, err = a.fetch(ctx, in2); return err }); err != nil {
		return res, err
	}
	defer a.Cache.Unpin(paths)
	activity.RecordHeartbeat(ctx, "fetched")

	tmp, err := os.CreateTemp(a.TmpDir, "tideline-view-*.parquet")
	if err != nil {
		return res, fmt.Errorf("cannot stage the batch file of %s %s: %w", v.Name, ps.Partition, err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	sel, err := lake.SelectFiles(ctx, a.DB, lake.RawSchema(v.Stream.Contract), paths)
	if err != nil {
		return res, fromQuery(fmt.Errorf("cannot read the raw files of partition %s of view %s: %w", ps.Partition, v.Name, err))
	}
	q := recomputeSQL(v, sel, p)
	var want int64
	if err := heartbeating(ctx, "counting", func() (err error) { want, err = a.countEvents(ctx, &q, ps.Partition, &res); return err }); err != nil {
		return res, err
	}
	err = heartbeating(ctx, "computing", func() error {
		_, err := a.DB.ExecContext(ctx, "COPY ("+q.view+") TO "+spec.QuoteString(tmp.Name())+" (FORMAT parquet, COMPRESSION zstd)")
		return err
	})
	if err != nil {
		return res, fromQuery(fmt.Errorf("cannot compute partition %s of view %s from %d raw file(s): %w", ps.Partition, v.Name, len(in2), err))
	}
	activity.RecordHeartbeat(ctx, "computed")
	if res.Rows, err = lake.CheckParquet(tmp.Name()); err != nil {
		return res, fmt.Errorf("cannot read back the batch file of %s %s: %w", v.Name, ps.Partition, err)
	}
	if err := a.checkCount(ctx, v, want, tmp.Name(), ps.Partition); err != nil {
		return res, err
	}
	st, err := os.Stat(tmp.Name())
	if err != nil {
		return res, err
	}
	f, err := os.Open(tmp.Name())
	if err != nil {
		return res, err
	}
	defer f.Close()
	res.Key = lake.ViewFileKey(v.Name, p, s.raw.Version, m)
	info, err := a.Store.Put(ctx, res.Key, f, st.Size())
	if err != nil {
		return res, fmt.Errorf("cannot write batch file %s: %w", res.Key, err)
	}
	newFile := lake.File{Key: res.Key, Partition: ps.Partition, Rows: res.Rows, Bytes: st.Size(), ETag: info.ETag}

	// Below the tideline the partition is served from batch (nothing, if
	// the tideline passed it empty), so what changes is a correction. The
	// commit is conditional on the tideline read, which decided that, and
	// replaces the files read, from which the corrections were drawn.
	old := s.batchFiles[ps.Partition]
	corrections := map[string]*lake.Rows{}
	if p.Start.Before(s.tideline) {
		rows, touched, err := a.batchCorrections(ctx, v, old, newFile, p)
		if err != nil {
			return res, err
		}
		corrections[ps.Partition], res.Corrections = rows, touched
	}
	commit := lake.Commit{Op: "recompute", Add: []lake.File{newFile}, Partitions: []string{ps.Partition}, Replace: true,
		Meta:    map[string]string{"mark": m, "raw_version": strconv.FormatInt(s.raw.Version, 10), "events": strconv.FormatInt(res.Events, 10)},
		IfProps: map[string]string{lake.PropTideline: s.batch.Props[lake.PropTideline]}}
	if _, failed := s.batch.Props[lake.PropFailed+ps.Partition]; failed {
		commit.Props = map[string]string{lake.PropFailed + ps.Partition: ""}
	}
	for _, f := range old {
		commit.Remove = append(commit.Remove, f.Key)
	}
	snap, err := a.commitWithCorrections(ctx, v, commit, KindBatch, corrections)
	switch {
	case errors.Is(err, lake.ErrAlreadyCommitted):
		// A retry of a commit that landed: it named its own corrections.
		res.Corrections = 0
		if snap, err = a.viewTable(v).Snapshot(ctx); err != nil {
			return res, fromLake(err)
		}
	case err != nil:
		return res, err // a conflict retries from a fresh read
	}
	a.Metrics.Corrections.WithLabelValues(v.Name, KindBatch).Add(float64(res.Corrections))
	if err := a.recordStaged(ctx, v, snap); err != nil {
		return res, err
	}
	a.Metrics.Recomputes.WithLabelValues(v.Name).Inc()
	a.Log.Info("recomputed", "view", v.Name, "partition", ps.Partition, "inputs", len(in2), "rows", res.Rows, "events", res.Events)
	return res, nil
}

type recomputeQuery struct {
	v     *spec.View
	read  string // the raw rows of the partition's event times
	input string // the partition's valid, distinct events
	lo    int64  // the partition's start and end, UTC microseconds
	hi    int64
	inEnd int64 // end of the event times read
	view  string
}

// recomputeSQL builds the queries of a view partition over sel, the raw
// files it reads in the contract's columns (lake.SelectFiles).
func recomputeSQL(v *spec.View, sel string, p lake.Partition) recomputeQuery {
	c := v.Stream.Contract
	ts := spec.QuoteIdent(c.Fields[c.Time].Name)
	q := recomputeQuery{v: v, lo: p.Start.UnixMicro(), hi: p.End().UnixMicro(), inEnd: inputEnd(v, p).UnixMicro()}
	q.read = fmt.Sprintf("SELECT * FROM (%s) WHERE %s >= make_timestamptz(%d) AND %s < make_timestamptz(%d)",
		sel, ts, inputStart(v, p).UnixMicro(), ts, q.inEnd)
	q.setInput("(" + q.read + " QUALIFY row_number() OVER (PARTITION BY " + spec.QuoteIdent(c.Fields[c.ID].Name) + " ORDER BY _seq) = 1)")
	return q
}

// setInput makes input the relation the view is computed over.
func (q *recomputeQuery) setInput(input string) {
	q.input = input
	q.view = fmt.Sprintf("SELECT * FROM (%s) WHERE window_start >= make_timestamptz(%d) AND window_start < make_timestamptz(%d) ORDER BY ALL",
		q.v.SQL(input), q.lo, q.hi)
}

// countEvents counts the partition's valid, distinct events, and how many
// window memberships (event, window of the partition) they make: what the
// view's count measure must add up to. It does so without the view's SQL:
// window memberships by arithmetic on each event's time, not by grouping.
// When no id repeats (one pass says so) the view reads the raw rows as
// they are, skipping the sort that dropping repeats takes.
func (a *Activities) countEvents(ctx context.Context, q *recomputeQuery, partition string, res *RecomputeResult) (int64, error) {
	v := q.v
	c := v.Stream.Contract
	id := spec.QuoteIdent(c.Fields[c.ID].Name)
	filter := "true"
	if v.Filter != nil {
		filter = v.Filter.SQL()
	}
	// Which sessions start in the partition takes the sessions themselves:
	// there is no count to hold a session view to (-1).
	memberships := "-1"
	if !v.Session() {
		memberships = fmt.Sprintf("coalesce(sum(%s) FILTER (WHERE %s), 0)",
			v.MembershipsSQL(spec.QuoteIdent(c.Fields[c.Time].Name), q.lo, q.hi), filter)
	}
	var rows, distinct, want int64
	if err := a.DB.QueryRowContext(ctx, fmt.Sprintf("SELECT count(*), count(DISTINCT %s), %s FROM (%s)", id, memberships, q.read)).Scan(&rows, &distinct, &want); err != nil {
		return 0, fromQuery(fmt.Errorf("cannot count the events of partition %s of view %s: %w", partition, v.Name, err))
	}
	res.Events = distinct
	if rows == distinct {
		q.setInput("(" + q.read + ")")
		return want, nil
	}
	// Repeated ids: count the first row of each, chosen by GROUP BY rather
	// than the view input's window function.
	err := a.DB.QueryRowContext(ctx, fmt.Sprintf(`WITH src AS (%s)
		SELECT %s FROM src WHERE _seq IN (SELECT min(_seq) FROM src GROUP BY %s)`, q.read, memberships, id)).Scan(&want)
	if err != nil {
		return 0, fromQuery(fmt.Errorf("cannot count the events of partition %s of view %s: %w", partition, v.Name, err))
	}
	return want, nil
}

// checkCount holds the view's count measure, read back from the file
// written, to the window memberships counted before.
func (a *Activities) checkCount(ctx context.Context, v *spec.View, want int64, file, partition string) error {
	count := -1
	for i, m := range v.Measures {
		if m.Kind == spec.Count {
			count = i
			break
		}
	}
	if count < 0 || want < 0 {
		return nil // no count measure to hold to it, or no count to hold it to
	}
	var got int64
	if err := a.DB.QueryRowContext(ctx, fmt.Sprintf("SELECT coalesce(sum(%s), 0) FROM read_parquet(%s)",
		spec.QuoteIdent(v.Measures[count].Name), spec.QuoteString(file))).Scan(&got); err != nil {
		return fmt.Errorf("cannot read back the batch file of %s %s: %w", v.Name, partition, err)
	}
	if got != want {
		a.Metrics.DataQuality.WithLabelValues("recompute").Inc()
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"cannot commit partition %s of view %s: its windows count %d events, the raw files hold %d valid, distinct events in them",
			partition, v.Name, got, want), ErrTypeDataQuality, nil)
	}
	return nil
}
