package lake

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MinVacuumRetention is the shortest retention Vacuum takes: a reader's
// snapshot (and a Table's cached one, which re-reads the checkpoint
// pointer every snapshotRecheck) must outlive what Vacuum deletes.
const MinVacuumRetention = 10 * time.Minute

// snapshotRecheck is how often a Table holding a snapshot looks at the
// checkpoint pointer again, in case Vacuum truncated the log after it.
const snapshotRecheck = time.Minute

// VacuumResult says what Vacuum deleted from one table.
type VacuumResult struct {
	Table        string `json:"table"`
	Files        int    `json:"files"` // data objects deleted
	Bytes        int64  `json:"bytes"`
	LogObjects   int    `json:"log_objects"`  // commits and checkpoints deleted
	Kept         int    `json:"kept"`         // unreferenced objects younger than the retention
	Live         int    `json:"live"`         // data objects the newest snapshot references
	Checkpointed int64  `json:"checkpointed"` // the version the log was checkpointed at
}

// Vacuum deletes what no reader inside the retention can need:
//
//   - data objects that the newest snapshot does not reference, that no
//     commit inside the retention removed, that keep does not claim (staged
//     files another table names), and that were written before the
//     retention (so a file written for a commit still to come stays);
//   - log objects: the log is checkpointed at its newest version, and the
//     commits and checkpoints before it, written before the retention, go.
//
// A reader holding a snapshot made inside the retention keeps every file of
// it. Vacuum is idempotent, and safe beside writers: it deletes nothing a
// commit can still add (commits add files they wrote, which are younger
// than any retention of at least MinVacuumRetention).
func (t *Table) Vacuum(ctx context.Context, retention time.Duration, now time.Time, keep func(key string) bool) (VacuumResult, error) {
	res := VacuumResult{Table: t.Name}
	if retention < MinVacuumRetention {
		return res, fmt.Errorf("cannot vacuum %s with a retention of %s: it must be at least %s, so running readers keep their files", t.Name, retention, MinVacuumRetention)
	}
	cutoff := now.Add(-retention)
	snap, err := t.Snapshot(ctx)
	if err != nil {
		return res, err
	}
	// Files removed inside the retention: a snapshot before their removal
	// may still be read.
	protected := map[string]bool{}
	for v := snap.Version; v > 0; v-- {
		c, err := t.readCommit(ctx, v)
		if errors.Is(err, ErrNotFound) {
			break // truncated before: older than the retention
		}
		if err != nil {
			return res, err
		}
		if c.Time.Before(cutoff) {
			break
		}
		for _, k := range c.Remove {
			protected[k] = true
		}
	}
	objects, err := t.store.List(ctx, t.Name+"/")
	if err != nil {
		return res, err
	}
	logDir := t.Name + "/_log/"
	var logObjects []Info
	for _, o := range objects {
		if strings.HasPrefix(o.Key, logDir) {
			logObjects = append(logObjects, o)
			continue
		}
		if _, live := snap.Files[o.Key]; live {
			res.Live++
			continue
		}
		if protected[o.Key] || !o.Modified.Before(cutoff) || (keep != nil && keep(o.Key)) {
			res.Kept++
			continue
		}
		if err := t.store.Delete(ctx, o.Key); err != nil {
			return res, err
		}
		res.Files++
		res.Bytes += o.Size
	}
	if snap.Version == 0 {
		return res, nil
	}
	// The log: a checkpoint at the newest version, then what is before it.
	if err := t.putCheckpoint(ctx, snap); err != nil {
		return res, err
	}
	res.Checkpointed = snap.Version
	for _, o := range logObjects {
		v, ok := logVersion(strings.TrimPrefix(o.Key, logDir))
		if !ok || v >= snap.Version || !o.Modified.Before(cutoff) {
			continue
		}
		if err := t.store.Delete(ctx, o.Key); err != nil {
			return res, err
		}
		res.LogObjects++
	}
	return res, nil
}

// logVersion is the version of a commit or checkpoint object's name.
func logVersion(name string) (int64, bool) {
	digits, _, _ := strings.Cut(name, ".")
	if len(digits) != 20 {
		return 0, false
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	return v, err == nil
}

// putCheckpoint stores s as a checkpoint and points readers at it.
func (t *Table) putCheckpoint(ctx context.Context, s *Snapshot) error {
	t.writeCheckpoint(ctx, s)
	ptr, err := t.get(ctx, lastCheckpointKey(t.Name))
	if err != nil {
		return fmt.Errorf("cannot checkpoint %s at version %d: %w", t.Name, s.Version, err)
	}
	if v, _ := strconv.ParseInt(strings.TrimSpace(string(ptr)), 10, 64); v < s.Version {
		return fmt.Errorf("cannot checkpoint %s at version %d: the pointer says %d", t.Name, s.Version, v)
	}
	return nil
}

// TableStats describes what a table holds in the store.
type TableStats struct {
	Table             string `json:"table"`
	Version           int64  `json:"version"`
	LiveFiles         int    `json:"live_files"`
	LiveBytes         int64  `json:"live_bytes"`
	Unreferenced      int    `json:"unreferenced"` // data objects no live snapshot names
	UnreferencedBytes int64  `json:"unreferenced_bytes"`
	LogObjects        int    `json:"log_objects"`
	Oldest            string `json:"oldest,omitempty"` // partitions with live files
	Newest            string `json:"newest,omitempty"`
	RetainedFrom      string `json:"retained_from,omitempty"`
}

// Stats reads a table's newest snapshot and lists its objects.
func Stats(ctx context.Context, store Store, table string) (TableStats, error) {
	st := TableStats{Table: table}
	snap, err := OpenTable(store, table).Snapshot(ctx)
	if err != nil {
		return st, err
	}
	st.Version, st.RetainedFrom = snap.Version, snap.Props[PropRetainedFrom]
	if parts := snap.Partitions(); len(parts) > 0 {
		st.Oldest, st.Newest = parts[0], parts[len(parts)-1]
	}
	objs, err := store.List(ctx, table+"/")
	if err != nil {
		return st, err
	}
	for _, o := range objs {
		switch _, live := snap.Files[o.Key]; {
		case strings.HasPrefix(o.Key, table+"/_log/"):
			st.LogObjects++
		case live:
			st.LiveFiles++
			st.LiveBytes += o.Size
		default:
			st.Unreferenced++
			st.UnreferencedBytes += o.Size
		}
	}
	return st, nil
}
