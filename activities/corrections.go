package activities

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"tideline/lake"
	"tideline/spec"
)

// Corrections are true only if the view commit they were drawn for lands:
// an advance's move over the partitions whose speed values batch replaces,
// or a recompute's replacement of a batch file below the tideline. Of two
// advances that read a partition differently, the one whose move loses must
// leave no corrections behind, and the winner's must all stand.
//
// So a correction file is staged first: written to the store under a key of
// its own and named, with its metadata, in a property of the view commit
// (lake.PropStagedCorrection + key). Once that commit has landed, the file is
// committed to the view's corrections table and its property unset. A commit
// that does not land names nothing, and its staged files are deleted. A
// crash between the two leaves the name in the view table, and the next
// advance, or the retry, records it.

// stageCorrections writes each partition's correction rows to the store
// and returns the properties that name them, for the view commit that makes
// them true.
func (a *Activities) stageCorrections(ctx context.Context, v *spec.View, kind string, rows map[string]*lake.Rows) (map[string]string, error) {
	props := map[string]string{}
	for _, p := range slices.Sorted(maps.Keys(rows)) {
		if rows[p].Len() == 0 {
			continue
		}
		key := fmt.Sprintf("%s/%s/%s-%s-%s.parquet", lake.CorrectionsTable(v.Name), p, kind,
			a.Now().UTC().Format("20060102T150405"), strings.ToLower(rand.Text()[:10]))
		f, err := lake.PutParquet(ctx, a.Store, key, p, rows[p], lake.WriteOptions{SortBy: "window_start"})
		if err != nil {
			a.dropStaged(ctx, props)
			return nil, fromLake(fmt.Errorf("cannot write corrections %s: %w", key, err))
		}
		js, err := json.Marshal(f)
		if err != nil {
			a.dropStaged(ctx, props)
			return nil, err
		}
		props[lake.PropStagedCorrection+key] = string(js)
	}
	return props, nil
}

// dropStaged deletes the staged files of a view commit that did not land.
// It is best effort: a file left behind is named by no commit and read by
// nothing.
func (a *Activities) dropStaged(ctx context.Context, props map[string]string) {
	for k := range props {
		if key, ok := strings.CutPrefix(k, lake.PropStagedCorrection); ok {
			if err := a.Store.Delete(ctx, key); err != nil {
				a.Log.Warn("cannot delete a staged corrections file its commit did not keep; nothing reads it", "key", key, "err", err)
			}
		}
	}
}

// recordStaged commits to the corrections table every correction file a
// view snapshot names, then unsets their names. It is idempotent, and safe
// to run in any number of activities at once.
func (a *Activities) recordStaged(ctx context.Context, v *spec.View, snap *lake.Snapshot) error {
	var files []lake.File
	unset := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(snap.Props)) {
		if !strings.HasPrefix(k, lake.PropStagedCorrection) {
			continue
		}
		var f lake.File
		if err := json.Unmarshal([]byte(snap.Props[k]), &f); err != nil {
			return fmt.Errorf("cannot read property %s of view table %s (version %d): %w; it names a corrections file to record", k, v.Name, snap.Version, err)
		}
		files = append(files, f)
		unset[k] = ""
	}
	if len(files) == 0 {
		return nil
	}
	// Another activity may be recording some of the same files at once:
	// then what is left is committed on top of it.
	tbl := a.table(lake.CorrectionsTable(v.Name))
	for attempt := 1; ; attempt++ {
		corr, err := tbl.Snapshot(ctx)
		if err != nil {
			return fromLake(err)
		}
		commit := lake.Commit{Op: "correct"}
		for _, f := range files {
			if _, ok := corr.Files[f.Key]; !ok {
				commit.Add = append(commit.Add, f)
			}
		}
		if len(commit.Add) == 0 {
			break
		}
		_, err = tbl.Commit(ctx, commit)
		if err == nil || errors.Is(err, lake.ErrAlreadyCommitted) {
			break
		}
		if !errors.Is(err, lake.ErrConflict) || attempt == 3 {
			return fromLake(err)
		}
	}
	if _, err := a.viewTable(v).Commit(ctx, lake.Commit{Op: "corrections recorded", Props: unset}); err != nil {
		return fromLake(err)
	}
	return nil
}

// commitWithCorrections commits c to the view table with the correction
// rows, by partition, that it makes true, and returns the snapshot it
// produced; the caller records them with recordStaged. If c does not land,
// its error is returned and its corrections are gone.
func (a *Activities) commitWithCorrections(ctx context.Context, v *spec.View, c lake.Commit, kind string, rows map[string]*lake.Rows) (*lake.Snapshot, error) {
	staged, err := a.stageCorrections(ctx, v, kind, rows)
	if err != nil {
		return nil, err
	}
	if c.Props == nil {
		c.Props = map[string]string{}
	}
	maps.Copy(c.Props, staged)
	snap, err := a.viewTable(v).Commit(ctx, c)
	if err != nil {
		// Only a commit known not to have landed gives its files up: one
		// that failed otherwise (the store unreachable) may have landed,
		// and names them.
		if errors.Is(err, lake.ErrConflict) || errors.Is(err, lake.ErrAlreadyCommitted) {
			a.dropStaged(ctx, staged)
		}
		return nil, fromLake(err)
	}
	return snap, nil
}

// batchCorrections is what replacing a partition's batch files (old) with
// newFile changes: the corrections of a recompute below the tideline.
func (a *Activities) batchCorrections(ctx context.Context, v *spec.View, old []lake.File, newFile lake.File, p lake.Partition) (*lake.Rows, int, error) {
	before, err := a.readBatch(ctx, v, old, p.Start, p.End())
	if err != nil {
		return nil, 0, err
	}
	after, err := a.readBatch(ctx, v, []lake.File{newFile}, p.Start, p.End())
	if err != nil {
		return nil, 0, err
	}
	rows, touched := diff(v, KindBatch, before, after, a.Now(), a.Now())
	return rows, touched, nil
}
