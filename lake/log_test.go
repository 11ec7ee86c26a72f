package lake

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"
)

func dataFile(key string, rows int64) File {
	return File{Key: key, Partition: "dt=2026-11-25/hr=12", Rows: rows}
}

func TestTableCommitRules(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			tbl := OpenTable(s, "raw/rules")
			snap, err := tbl.Snapshot(ctx)
			if err != nil || snap.Version != 0 || len(snap.Files) != 0 {
				t.Fatalf("empty table: %+v, %v", snap, err)
			}
			c1 := Commit{Op: "compact", Add: []File{dataFile("f1", 10)}, Source: &SeqRange{1, 100}}
			snap, err = tbl.Commit(ctx, c1)
			if err != nil || snap.Version != 1 || snap.HighSeq != 100 || snap.Rows() != 10 {
				t.Fatalf("commit 1: %+v, %v", snap, err)
			}
			// The same range again, as a retry would send it.
			if _, err := tbl.Commit(ctx, c1); !errors.Is(err, ErrAlreadyCommitted) {
				t.Errorf("same range twice: %v, want ErrAlreadyCommitted", err)
			}
			if _, err := tbl.Commit(ctx, Commit{Op: "compact", Add: []File{dataFile("f2", 1)}, Source: &SeqRange{50, 150}}); !errors.Is(err, ErrConflict) {
				t.Errorf("overlapping range: %v, want ErrConflict", err)
			}
			if _, err := tbl.Commit(ctx, Commit{Op: "recompute", Add: []File{dataFile("f1", 10)}}); !errors.Is(err, ErrAlreadyCommitted) {
				t.Errorf("same file twice: %v, want ErrAlreadyCommitted", err)
			}
			// Replace f1 by f2, then a stale writer tries to replace f1 again.
			snap, err = tbl.Commit(ctx, Commit{Op: "recompute", Add: []File{dataFile("f2", 12)}, Remove: []string{"f1"}, Partitions: []string{"p"}, Meta: map[string]string{"mark": "raw@1"}})
			if err != nil || len(snap.Files) != 1 || snap.Files["f2"].Rows != 12 || snap.Marks["p"] != "raw@1" {
				t.Fatalf("replace: %+v, %v", snap, err)
			}
			if _, err := tbl.Commit(ctx, Commit{Op: "recompute", Add: []File{dataFile("f3", 1)}, Remove: []string{"f1"}}); !errors.Is(err, ErrConflict) {
				t.Errorf("stale remove: %v, want ErrConflict", err)
			}
			// Replace: two writers both saw partition q empty; the second
			// would leave q with two files, so it must lose.
			q := func(key string) File { return File{Key: key, Partition: "q", Rows: 1} }
			if _, err := tbl.Commit(ctx, Commit{Op: "recompute", Add: []File{q("q1")}, Partitions: []string{"q"}, Replace: true}); err != nil {
				t.Fatalf("first replace of q: %v", err)
			}
			if _, err := tbl.Commit(ctx, Commit{Op: "recompute", Add: []File{q("q2")}, Partitions: []string{"q"}, Replace: true}); !errors.Is(err, ErrConflict) {
				t.Errorf("second replace of q from a stale view: %v, want ErrConflict", err)
			}
			if snap, err = tbl.Commit(ctx, Commit{Op: "recompute", Add: []File{q("q2")}, Remove: []string{"q1"}, Partitions: []string{"q"}, Replace: true}); err != nil || len(snap.In("q")) != 1 {
				t.Fatalf("replace of q that removes q1: %+v, %v", snap, err)
			}
			// Properties are compare-and-swap with IfProps.
			if snap, err = tbl.Commit(ctx, Commit{Op: "advance", Props: map[string]string{"tideline": "10"}, IfProps: map[string]string{"tideline": ""}}); err != nil || snap.Props["tideline"] != "10" {
				t.Fatalf("set tideline: %+v, %v", snap, err)
			}
			if _, err := tbl.Commit(ctx, Commit{Op: "advance", Props: map[string]string{"tideline": "5"}, IfProps: map[string]string{"tideline": ""}}); !errors.Is(err, ErrConflict) {
				t.Errorf("stale tideline move: %v, want ErrConflict", err)
			}
			// IfFiles: a conclusion drawn from a partition's files lands only
			// while they are what is live there (q holds q2; r holds none).
			if _, err := tbl.Commit(ctx, Commit{Op: "advance", Props: map[string]string{"tideline": "20"}, IfFiles: map[string][]string{"q": {"q1"}}}); !errors.Is(err, ErrConflict) {
				t.Errorf("advance over a partition recomputed since: %v, want ErrConflict", err)
			}
			if _, err := tbl.Commit(ctx, Commit{Op: "advance", Props: map[string]string{"tideline": "20"}, IfFiles: map[string][]string{"q": {}}}); !errors.Is(err, ErrConflict) {
				t.Errorf("advance over a partition read empty that has a file since: %v, want ErrConflict", err)
			}
			if snap, err = tbl.Commit(ctx, Commit{Op: "advance", Props: map[string]string{"tideline": "20", "staged": "x"}, IfFiles: map[string][]string{"q": {"q2"}, "r": {}}}); err != nil || snap.Props["tideline"] != "20" {
				t.Fatalf("advance over partitions as read: %+v, %v", snap, err)
			}
			// An empty value unsets a property.
			if snap, err = tbl.Commit(ctx, Commit{Op: "unstage", Props: map[string]string{"staged": ""}}); err != nil || len(snap.Props) != 1 {
				t.Fatalf("unset a property: %+v, %v; want only the tideline left", snap.Props, err)
			}
			// A fresh reader, in another process say, sees the same table.
			again, err := OpenTable(s, "raw/rules").Snapshot(ctx)
			if err != nil || again.Version != snap.Version || len(again.Files) != 2 || again.HighSeq != 100 || !maps.Equal(again.Props, map[string]string{"tideline": "20"}) {
				t.Errorf("fresh reader: %+v, %v; want version %d", again, err, snap.Version)
			}
		})
	}
}

// TestRacingCommitters races 8 writers on one table: every version has
// exactly one winner, and the final snapshot holds every file exactly once.
func TestRacingCommitters(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			const writers, each = 8, 15
			var mu sync.Mutex
			won := map[int64]string{}
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					tbl := OpenTable(s, "raw/race", WithCheckpointEvery(7), WithWriter(fmt.Sprint("w", w)))
					for i := range each {
						key := fmt.Sprintf("w%d-%d", w, i)
						snap, err := tbl.Commit(ctx, Commit{Op: "test", Add: []File{dataFile(key, 1)}})
						if err != nil {
							t.Errorf("writer %d commit %d: %v", w, i, err)
							return
						}
						mu.Lock()
						if prev, dup := won[snap.Version]; dup {
							t.Errorf("version %d won by %s and %s", snap.Version, prev, key)
						}
						won[snap.Version] = key
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			snap, err := OpenTable(s, "raw/race").Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if snap.Version != writers*each || len(won) != writers*each {
				t.Fatalf("version %d with %d winners, want %d", snap.Version, len(won), writers*each)
			}
			for v, key := range won {
				if _, ok := snap.Files[key]; !ok {
					t.Errorf("file %s of version %d is lost", key, v)
				}
			}
			if len(snap.Files) != writers*each {
				t.Errorf("snapshot has %d files, want %d", len(snap.Files), writers*each)
			}
			// Each version's log entry names exactly the file its winner committed.
			tbl := OpenTable(s, "raw/race")
			for v := int64(1); v <= snap.Version; v++ {
				c, err := tbl.readCommit(ctx, v)
				if err != nil || len(c.Add) != 1 || c.Add[0].Key != won[v] {
					t.Errorf("log version %d: %+v, %v; winner %s", v, c, err, won[v])
				}
			}
		})
	}
}

func TestCheckpoints(t *testing.T) {
	s := stores(t)["file"]
	ctx := t.Context()
	tbl := OpenTable(s, "raw/cp", WithCheckpointEvery(10))
	for i := range 25 {
		if _, err := tbl.Commit(ctx, Commit{Op: "t", Add: []File{dataFile(fmt.Sprint("f", i), 1)}, Source: &SeqRange{uint64(i*10 + 1), uint64(i*10 + 10)}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, s, lastCheckpointKey("raw/cp")); got != "20" {
		t.Errorf("checkpoint pointer = %q, want 20", got)
	}
	// A new reader starts from checkpoint 20 and replays 21..25; removing
	// the early log entries proves it does not read them.
	for v := int64(1); v <= 20; v++ {
		if err := s.Delete(ctx, logKey("raw/cp", v)); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := OpenTable(s, "raw/cp").Snapshot(ctx)
	if err != nil || snap.Version != 25 || len(snap.Files) != 25 || snap.HighSeq != 250 {
		t.Fatalf("from checkpoint: version %d, %d files, high %d, %v", snap.Version, len(snap.Files), snap.HighSeq, err)
	}
}

func TestCorruptLogEntry(t *testing.T) {
	s := stores(t)["file"]
	ctx := t.Context()
	tbl := OpenTable(s, "raw/bad")
	for i := range 3 {
		if _, err := tbl.Commit(ctx, Commit{Op: "t", Add: []File{dataFile(fmt.Sprint("f", i), 1)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ctx, logKey("raw/bad", 2), strings.NewReader("{not json"), 9); err != nil {
		t.Fatal(err)
	}
	_, err := OpenTable(s, "raw/bad").Snapshot(ctx)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), logKey("raw/bad", 2)) {
		t.Fatalf("corrupt entry: %v, want ErrCorrupt naming %s", err, logKey("raw/bad", 2))
	}
	// Another table in the same store is unaffected.
	if _, err := OpenTable(s, "raw/other").Commit(ctx, Commit{Op: "t", Add: []File{dataFile("x", 1)}}); err != nil {
		t.Fatalf("other table: %v", err)
	}
}

func TestPartitionKeys(t *testing.T) {
	p := PartitionOf(1764072305123456, 5*60*1e6*1000) // 2025-11-25T12:05:05Z in a 5m partition
	if got := p.Path(); got != "dt=2025-11-25/hr=12/min=05" {
		t.Errorf("Path = %s", got)
	}
	back, err := ParsePartition(p.Path(), p.Size)
	if err != nil || !back.Start.Equal(p.Start) {
		t.Errorf("ParsePartition(%s) = %v, %v", p.Path(), back, err)
	}
	if _, err := ParsePartition("dt=2025-11-25/hr=12/min=03", p.Size); err == nil {
		t.Error("misaligned partition accepted")
	}
	if got := RawFileKey("payments", p, 1, 500); got != "raw/payments/dt=2025-11-25/hr=12/min=05/seq-00000000000000000001-00000000000000000500.parquet" {
		t.Errorf("RawFileKey = %s", got)
	}
}

func FuzzParsePartition(f *testing.F) {
	f.Add("dt=2026-11-25/hr=12/min=05", int64(5))
	f.Add("dt=2026-11-25/hr=00", int64(60))
	f.Add("dt=1999-01-01/hr=23", int64(1440))
	f.Fuzz(func(t *testing.T, path string, minutes int64) {
		if minutes <= 0 || (24*60)%minutes != 0 {
			return
		}
		size := time.Duration(minutes) * time.Minute
		p, err := ParsePartition(path, size)
		if err != nil {
			return
		}
		// Whatever parses prints back to itself and contains its own start.
		if p.Path() != path {
			t.Fatalf("ParsePartition(%q).Path() = %q", path, p.Path())
		}
		if q := PartitionOf(p.Start.UnixMicro(), size); !q.Start.Equal(p.Start) {
			t.Fatalf("partition %s does not contain its start", path)
		}
	})
}
