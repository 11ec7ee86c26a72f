package activities

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"tideline/lake"
	"tideline/spec"
)

// The lake's lifecycle: Optimize rewrites each sealed raw partition's
// files into one, Retention drops partitions older than the spec keeps,
// and Vacuum deletes what no snapshot inside its retention references and
// truncates the table logs. Each is idempotent and heartbeats; a killed
// worker's attempt is retried and finds its own work done.

// StreamInput names a stream.
type StreamInput struct {
	Stream string `json:"stream"`
}

// OptimizeResult says what Optimize rewrote.
type OptimizeResult struct {
	Stream     string   `json:"stream"`
	Partitions []string `json:"partitions"` // rewritten
	FilesIn    int      `json:"files_in"`
	Rows       int64    `json:"rows"`
	// Conflicts are partitions a compaction committed to meanwhile; the
	// next run rewrites them.
	Conflicts []string `json:"conflicts,omitempty"`
}

// rawSealedAt is when, in broker time, no view can need a raw partition to
// change any more: the latest its views seal it.
func rawSealedAt(st *spec.Stream, p lake.Partition) time.Time {
	at := p.End().Add(st.OutOfOrderness + st.IdleTimeout)
	for _, v := range st.Views {
		if s := SealedAt(v, p); s.After(at) {
			at = s
		}
	}
	return at
}

// Optimize rewrites every sealed raw partition of a stream that has more
// than one file into one file, sorted by event time then stream sequence,
// with each row's sequence kept (so first-by-sequence dedup is unchanged),
// in the spec's contract columns. Each is one commit that must remove
// exactly the files it read: a compaction landing in the partition
// meanwhile makes it a conflict, left to the next run.
func (a *Activities) Optimize(ctx context.Context, in StreamInput) (OptimizeResult, error) {
	defer a.observe("optimize", time.Now())
	st, err := a.stream(in.Stream)
	if err != nil {
		return OptimizeResult{}, err
	}
	res := OptimizeResult{Stream: st.Name}
	tbl := a.rawTable(st)
	snap, err := tbl.Snapshot(ctx)
	if err != nil {
		return res, fromLake(err)
	}
	// The rewrite is in the spec's columns: only if they can hold every
	// row the lake has.
	if err := lake.CheckContract(snap, st.Name, st.Contract); err != nil {
		return res, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeSpec, err)
	}
	covered := timeProp(snap, lake.PropCovered)
	files := byPartition(snap)
	for _, path := range slices.Sorted(maps.Keys(files)) {
		if len(files[path]) < 2 {
			continue
		}
		p, err := lake.ParsePartition(path, st.Partition)
		if err != nil {
			return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot read raw table of stream %s: %v", st.Name, err), ErrTypeBadData, err)
		}
		if covered.Before(rawSealedAt(st, p)) {
			continue
		}
		activity.RecordHeartbeat(ctx, path)
		err = heartbeating(ctx, path, func() error { return a.optimize(ctx, st, tbl, p, files[path]) })
		switch {
		case errors.Is(err, lake.ErrConflict):
			res.Conflicts = append(res.Conflicts, path)
			continue
		case err != nil:
			return res, err
		}
		res.Partitions = append(res.Partitions, path)
		res.FilesIn += len(files[path])
		for _, f := range files[path] {
			res.Rows += f.Rows
		}
	}
	a.Metrics.Optimized.WithLabelValues(st.Name).Add(float64(len(res.Partitions)))
	a.Log.Info("optimized", "stream", st.Name, "partitions", len(res.Partitions), "files_in", res.FilesIn, "rows", res.Rows, "conflicts", len(res.Conflicts))
	return res, nil
}

func (a *Activities) optimize(ctx context.Context, st *spec.Stream, tbl *lake.Table, p lake.Partition, files []lake.File) error {
	var rows int64
	keys := make([]string, len(files))
	for i, f := range files {
		rows += f.Rows
		keys[i] = f.Key
	}
	paths, err := a.fetch(ctx, files)
	if err != nil {
		return err
	}
	defer a.Cache.Unpin(paths)
	c := st.Contract
	sel, err := lake.SelectFiles(ctx, a.DB, lake.RawSchema(c), paths)
	if err != nil {
		return fromQuery(fmt.Errorf("cannot read the raw files of partition %s of stream %s: %w", p, st.Name, err))
	}
	tmp, err := os.CreateTemp(a.TmpDir, "tideline-optimize-*.parquet")
	if err != nil {
		return fmt.Errorf("cannot stage the optimized file of %s %s: %w", st.Name, p, err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	q := fmt.Sprintf("COPY (%s ORDER BY %s, %s) TO %s (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE %d)",
		sel, spec.QuoteIdent(c.Fields[c.Time].Name), lake.SeqColumn, spec.QuoteString(tmp.Name()), lake.DefaultRowGroupRows)
	if _, err := a.DB.ExecContext(ctx, q); err != nil {
		return fromQuery(fmt.Errorf("cannot rewrite partition %s of stream %s: %w", p, st.Name, err))
	}
	got, err := lake.CheckParquet(tmp.Name())
	if err != nil {
		return fmt.Errorf("cannot read back the optimized file of %s %s: %w", st.Name, p, err)
	}
	if got != rows {
		a.Metrics.DataQuality.WithLabelValues("optimize").Inc()
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot commit the optimized partition %s of stream %s: it holds %d rows, its %d files %d",
			p, st.Name, got, len(files), rows), ErrTypeDataQuality, nil)
	}
	f, err := os.Open(tmp.Name())
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	key := lake.OptimizedFileKey(st.Name, p, keys)
	info, err := a.Store.Put(ctx, key, f, fi.Size())
	if err != nil {
		return fmt.Errorf("cannot write optimized file %s: %w", key, err)
	}
	snap, err := tbl.Snapshot(ctx)
	if err != nil {
		return fromLake(err)
	}
	fp, props := lake.ContractProps(snap, c)
	_, err = tbl.Commit(ctx, lake.Commit{Op: "optimize", Partitions: []string{p.Path()}, Replace: true, Remove: keys,
		Add:   []lake.File{{Key: key, Partition: p.Path(), Rows: got, Bytes: fi.Size(), ETag: info.ETag}},
		Meta:  map[string]string{lake.MetaContract: fp, "files": strconv.Itoa(len(files))},
		Props: props})
	if errors.Is(err, lake.ErrAlreadyCommitted) {
		return nil // a retry of a commit that landed
	}
	if errors.Is(err, lake.ErrConflict) {
		_ = a.Store.Delete(ctx, key) // named by no commit
	}
	return fromLake(err)
}

// RetentionResult says what Retention dropped.
type RetentionResult struct {
	Stream string          `json:"stream"`
	Tables []TableRetained `json:"tables,omitempty"`
}

// TableRetained is what Retention dropped from one table.
type TableRetained struct {
	Table      string    `json:"table"`
	From       time.Time `json:"from"` // partitions before it are gone
	Partitions int       `json:"partitions"`
	Files      int       `json:"files"`
}

// Retention drops, in one commit per table, the partitions older than the
// spec keeps: the stream's raw partitions before now - lake_retention, and
// each view's batch and corrections partitions before now - its
// retention. The tables record where they now start (PropRetainedFrom),
// which never moves back, so reads of the range say it expired. Vacuum
// deletes the files.
func (a *Activities) Retention(ctx context.Context, in StreamInput) (RetentionResult, error) {
	defer a.observe("retention", time.Now())
	st, err := a.stream(in.Stream)
	if err != nil {
		return RetentionResult{}, err
	}
	res := RetentionResult{Stream: st.Name}
	now := a.Now()
	expire := func(tbl *lake.Table, keep time.Duration) error {
		if keep <= 0 {
			return nil
		}
		from := lake.PartitionOf(now.Add(-keep).UnixMicro(), st.Partition).Start
		r, err := a.expire(ctx, tbl, st.Partition, from)
		if err == nil && r.Files+r.Partitions > 0 {
			res.Tables = append(res.Tables, r)
		}
		return err
	}
	if err := expire(a.rawTable(st), st.LakeRetention); err != nil {
		return res, err
	}
	for _, v := range st.Views {
		if err := expire(a.viewTable(v), v.Retention); err != nil {
			return res, err
		}
		if err := expire(a.table(lake.CorrectionsTable(v.Name)), v.Retention); err != nil {
			return res, err
		}
	}
	for _, t := range res.Tables {
		a.Log.Info("retention dropped partitions", "table", t.Table, "before", formatTime(t.From), "partitions", t.Partitions, "files", t.Files)
	}
	return res, nil
}

// expire drops the partitions of tbl that end at or before from.
func (a *Activities) expire(ctx context.Context, tbl *lake.Table, size time.Duration, from time.Time) (TableRetained, error) {
	res := TableRetained{Table: tbl.Name, From: from}
	for attempt := 1; ; attempt++ {
		snap, err := tbl.Snapshot(ctx)
		if err != nil {
			return res, fromLake(err)
		}
		if !timeProp(snap, lake.PropRetainedFrom).Before(from) {
			res.From = timeProp(snap, lake.PropRetainedFrom)
			return res, nil // as far already
		}
		commit := lake.Commit{Op: "retention",
			Props:   map[string]string{lake.PropRetainedFrom: formatTime(from)},
			IfProps: map[string]string{lake.PropRetainedFrom: snap.Props[lake.PropRetainedFrom]}}
		parts := map[string]bool{}
		for _, f := range snap.List() {
			p, err := lake.ParsePartition(f.Partition, size)
			if err != nil {
				return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot read table %s: %v", tbl.Name, err), ErrTypeBadData, err)
			}
			if p.End().After(from) {
				continue
			}
			commit.Remove = append(commit.Remove, f.Key)
			parts[f.Partition] = true
		}
		commit.Partitions = slices.Sorted(maps.Keys(parts))
		_, err = tbl.Commit(ctx, commit)
		if errors.Is(err, lake.ErrConflict) && attempt < 5 {
			continue // a recompute or another retention moved first
		}
		if err != nil {
			return res, fromLake(err)
		}
		res.Partitions, res.Files = len(parts), len(commit.Remove)
		return res, nil
	}
}

// VacuumInput names a stream whose tables to vacuum.
type VacuumInput struct {
	Stream string `json:"stream"`
	// Retention is how long unreferenced files and old log entries are
	// kept (default 1h, at least lake.MinVacuumRetention): a query or a
	// snapshot younger than it stays readable.
	Retention time.Duration `json:"retention,omitempty"`
}

// VacuumResult says what Vacuum deleted, per table.
type VacuumResult struct {
	Stream string              `json:"stream"`
	Tables []lake.VacuumResult `json:"tables"`
}

// DefaultVacuumRetention is Vacuum's retention when its input gives none.
const DefaultVacuumRetention = time.Hour

// Vacuum deletes, from the stream's raw table and its views' batch and
// corrections tables, the files no snapshot inside the retention
// references, staged corrections of activities that died before their
// commit, and log entries a checkpoint covers (lake.Table.Vacuum).
func (a *Activities) Vacuum(ctx context.Context, in VacuumInput) (VacuumResult, error) {
	defer a.observe("vacuum", time.Now())
	st, err := a.stream(in.Stream)
	if err != nil {
		return VacuumResult{}, err
	}
	if in.Retention == 0 {
		in.Retention = DefaultVacuumRetention
	}
	if in.Retention < lake.MinVacuumRetention {
		return VacuumResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot vacuum stream %s with a retention of %s: give at least %s", st.Name, in.Retention, lake.MinVacuumRetention), ErrTypeBadInput, nil)
	}
	res := VacuumResult{Stream: st.Name}
	now := a.Now()
	run := func(tbl *lake.Table, keep func(string) bool) error {
		activity.RecordHeartbeat(ctx, tbl.Name)
		var r lake.VacuumResult
		err := heartbeating(ctx, tbl.Name, func() (err error) { r, err = tbl.Vacuum(ctx, in.Retention, now, keep); return err })
		if err != nil {
			return fromLake(fmt.Errorf("cannot vacuum table %s: %w", tbl.Name, err))
		}
		res.Tables = append(res.Tables, r)
		a.Metrics.Vacuumed.WithLabelValues(tbl.Name).Add(float64(r.Files + r.LogObjects))
		return nil
	}
	if err := run(a.rawTable(st), nil); err != nil {
		return res, err
	}
	for _, v := range st.Views {
		// A correction file a view commit names is not in the corrections
		// table until recordStaged commits it: keep it till then.
		view, err := a.viewTable(v).Snapshot(ctx)
		if err != nil {
			return res, fromLake(err)
		}
		if err := run(a.viewTable(v), nil); err != nil {
			return res, err
		}
		if err := run(a.table(lake.CorrectionsTable(v.Name)), func(key string) bool {
			_, named := view.Props[lake.PropStagedCorrection+key]
			return named
		}); err != nil {
			return res, err
		}
	}
	var files, logs int
	for _, t := range res.Tables {
		files, logs = files+t.Files, logs+t.LogObjects
	}
	a.Log.Info("vacuumed", "stream", st.Name, "files", files, "log_objects", logs, "retention", in.Retention)
	return res, nil
}
