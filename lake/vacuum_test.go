package lake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestVacuumKeepsWhatReadersCanNeed: a file removed inside the retention
// stays for a reader holding the snapshot before the removal, an
// unreferenced file written inside it stays (its commit may come), and
// both go once older; the log is truncated behind a checkpoint, and a
// Table holding a snapshot from before the truncation reads on.
func TestVacuumKeepsWhatReadersCanNeed(t *testing.T) {
	ctx := context.Background()
	store, err := Open(ctx, "file://"+t.TempDir(), S3Config{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string) File {
		t.Helper()
		data := []byte("data of " + key)
		info, err := store.Put(ctx, key, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		return File{Key: key, Partition: "p", Rows: 1, Bytes: int64(len(data)), ETag: info.ETag}
	}
	tbl := OpenTable(store, "views/v")
	for i := range 5 {
		if _, err := tbl.Commit(ctx, Commit{Op: "add", Add: []File{put(fmt.Sprintf("views/v/p/%d", i))}}); err != nil {
			t.Fatal(err)
		}
	}
	stale := OpenTable(store, "views/v")
	held, err := stale.Snapshot(ctx) // a reader's snapshot, before the removal
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tbl.Commit(ctx, Commit{Op: "remove", Remove: []string{"views/v/p/0"}}); err != nil {
		t.Fatal(err)
	}
	put("views/v/p/orphan") // written for a commit that never came
	now := time.Now()
	res, err := tbl.Vacuum(ctx, 10*time.Minute, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 0 || res.Kept != 2 || res.Live != 4 {
		t.Errorf("vacuum inside the retention: %+v, want nothing deleted, 2 kept, 4 live", res)
	}
	if st, err := Stats(ctx, store, "views/v"); err != nil || st.Unreferenced != 2 || st.LiveFiles != 4 || st.LogObjects != 8 { // 6 commits, a checkpoint and its pointer
		t.Errorf("stats inside the retention: %+v, %v", st, err)
	}
	if _, _, err := store.Get(ctx, held.Files["views/v/p/0"].Key); err != nil {
		t.Errorf("a file of a held snapshot is gone: %v", err)
	}
	if _, err := tbl.Vacuum(ctx, time.Minute, now, nil); err == nil {
		t.Error("a retention shorter than MinVacuumRetention was taken")
	}
	// An hour on, both are older than the retention.
	res, err = tbl.Vacuum(ctx, 10*time.Minute, now.Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 2 || res.Live != 4 || res.LogObjects == 0 || res.Checkpointed != 6 {
		t.Errorf("vacuum after the retention: %+v, want 2 deleted, 4 live, the log cut at version 6", res)
	}
	for _, k := range []string{"views/v/p/0", "views/v/p/orphan"} {
		if _, err := store.Stat(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s outlived the vacuum: %v", k, err)
		}
	}
	if st, err := Stats(ctx, store, "views/v"); err != nil || st.Unreferenced != 0 || st.LiveFiles != 4 {
		t.Errorf("stats after the vacuum: %+v, %v", st, err)
	}
	if _, err := store.Stat(ctx, logKey("views/v", 1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("commit 1 outlived the truncation: %v", err)
	}
	// The Table holding version 5 finds version 6 and goes on: its commit
	// is version 7, never a second version 6 or 1.
	stale.checked = time.Time{}
	snap, err := stale.Commit(ctx, Commit{Op: "add", Add: []File{put("views/v/p/new")}})
	if err != nil || snap.Version != 7 || len(snap.Files) != 5 {
		t.Fatalf("a commit through the held table: version %d, %d files, %v; want 7, 5", snap.Version, len(snap.Files), err)
	}
	fresh, err := OpenTable(store, "views/v").Snapshot(ctx)
	if err != nil || fresh.Version != 7 || len(fresh.Files) != 5 {
		t.Errorf("a fresh reader: version %d, %d files, %v", fresh.Version, len(fresh.Files), err)
	}
	// A lost checkpoint with the log before it vacuumed is an error naming
	// it, not an empty table.
	if err := store.Delete(ctx, checkpointKey("views/v", 6)); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenTable(store, "views/v").Snapshot(ctx); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a table whose checkpoint is lost after a vacuum: %v, want ErrCorrupt", err)
	}
}
