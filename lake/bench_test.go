package lake

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

var benchBase = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// BenchmarkParquetWrite writes 1M payment rows (sorted by event time) with
// the lake's writer.
func BenchmarkParquetWrite(b *testing.B) {
	const n = 1_000_000
	rows := genPayments(b, n, 1, benchBase, time.Hour, 1)
	path := filepath.Join(b.TempDir(), "w.parquet")
	var size int64
	b.ReportAllocs()
	for b.Loop() {
		meta, err := WriteParquet(path, rows, WriteOptions{SortBy: "ts", Unique: []string{"payment_id"}})
		if err != nil {
			b.Fatal(err)
		}
		size = meta.Bytes
	}
	b.SetBytes(size)
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkParquetWriteAnchorDuckDBCopy is DuckDB's own COPY ... TO parquet
// of the same rows, sorted and compressed the same way.
func BenchmarkParquetWriteAnchorDuckDBCopy(b *testing.B) {
	const n = 1_000_000
	rows := genPayments(b, n, 1, benchBase, time.Hour, 1)
	dir := b.TempDir()
	src := filepath.Join(dir, "src.parquet")
	if _, err := WriteParquet(src, rows, WriteOptions{}); err != nil {
		b.Fatal(err)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE t AS SELECT * FROM read_parquet(?)", src); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "copy.parquet")
	for b.Loop() {
		if _, err := db.ExecContext(ctx, fmt.Sprintf("COPY (SELECT * FROM t ORDER BY ts) TO '%s' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE %d)", out, DefaultRowGroupRows)); err != nil {
			b.Fatal(err)
		}
	}
	st, _ := os.Stat(out)
	b.SetBytes(st.Size())
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

var (
	snapStoreOnce sync.Once
	snapStore     Store
	snapStoreErr  error
)

// tenThousandCommits builds, once per process, a file-store table with
// 10,000 commits through the real Commit path.
func tenThousandCommits(b *testing.B) Store {
	snapStoreOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lake-bench-log-")
		if err != nil {
			snapStoreErr = err
			return
		}
		s, err := Open(context.Background(), "file://"+dir, S3Config{}, Options{})
		if err != nil {
			snapStoreErr = err
			return
		}
		tbl := OpenTable(s, "raw/bench")
		for i := range 10_000 {
			p := PartitionOf(benchBase.Add(time.Duration(i)*time.Second).UnixMicro(), 5*time.Minute)
			from := uint64(i*100 + 1)
			f := File{Key: RawFileKey("bench", p, from, from+99), Partition: p.Path(), Rows: 100, Bytes: 4096, ETag: "0123456789abcdef0123456789abcdef"}
			if _, err := tbl.Commit(context.Background(), Commit{Op: "compact", Add: []File{f}, Partitions: []string{p.Path()}, Source: &SeqRange{from, from + 99}}); err != nil {
				snapStoreErr = err
				return
			}
		}
		snapStore = s
	})
	if snapStoreErr != nil {
		b.Fatal(snapStoreErr)
	}
	return snapStore
}

// BenchmarkSnapshotRead10k reads a table of 10,000 commits from scratch, as
// a new process would: the checkpoint, then the commits after it.
func BenchmarkSnapshotRead10k(b *testing.B) {
	s := tenThousandCommits(b)
	for b.Loop() {
		snap, err := OpenTable(s, "raw/bench").Snapshot(context.Background())
		if err != nil || snap.Version != 10_000 || len(snap.Files) != 10_000 {
			b.Fatalf("snapshot: %v", err)
		}
	}
}

// BenchmarkSnapshotRead10kAnchorCheckpointOnly reads and decodes only the
// newest checkpoint: the floor under any snapshot read.
func BenchmarkSnapshotRead10kAnchorCheckpointOnly(b *testing.B) {
	s := tenThousandCommits(b)
	t := OpenTable(s, "raw/bench")
	for b.Loop() {
		snap, err := t.loadCheckpoint(context.Background(), -1)
		if err != nil || snap.Version == 0 {
			b.Fatalf("checkpoint: %v", err)
		}
	}
}

var (
	bigLakeOnce sync.Once
	bigLake     struct {
		db    *sql.DB
		files string // glob of the cached files
		err   error
	}
)

// twentyMillionRows writes 20M payment rows as 20 lake files on a local
// store and defines the catalog view raw_payments over them, once.
func twentyMillionRows(b *testing.B) (*sql.DB, string) {
	bigLakeOnce.Do(func() {
		ctx := context.Background()
		dir, err := os.MkdirTemp("", "lake-bench-20m-")
		if err != nil {
			bigLake.err = err
			return
		}
		s, err := Open(ctx, "file://"+filepath.Join(dir, "lake"), S3Config{}, Options{})
		if err != nil {
			bigLake.err = err
			return
		}
		tbl := OpenTable(s, RawTable("payments"))
		const files, per = 20, 1_000_000
		// Written on every core (it is most of the package's bench time),
		// committed in sequence order.
		contract := paymentsSpec(b).Stream("payments").Contract
		written := make([]File, files)
		errs := make([]error, files)
		var wg sync.WaitGroup
		next := make(chan int)
		for range runtime.GOMAXPROCS(0) {
			wg.Go(func() {
				for i := range next {
					p := PartitionOf(benchBase.Add(time.Duration(i)*5*time.Minute).UnixMicro(), 5*time.Minute)
					from := uint64(i*per + 1)
					rows, err := genPaymentRows(contract, per, uint64(i), p.Start, p.Size, int64(from))
					if err != nil {
						errs[i] = err
						continue
					}
					written[i], errs[i] = PutParquet(ctx, s, RawFileKey("payments", p, from, from+per-1), p.Path(), rows, WriteOptions{SortBy: "ts"})
				}
			})
		}
		for i := range files {
			next <- i
		}
		close(next)
		wg.Wait()
		for i, f := range written {
			from := uint64(i*per + 1)
			err := errs[i]
			if err == nil {
				_, err = tbl.Commit(ctx, Commit{Op: "compact", Add: []File{f}, Source: &SeqRange{from, from + per - 1}})
			}
			if err != nil {
				bigLake.err = err
				return
			}
		}
		snap, _ := tbl.Snapshot(ctx)
		cache, err := NewCache(filepath.Join(dir, "cache"), 1<<40)
		if err != nil {
			bigLake.err = err
			return
		}
		db, err := OpenDuckDB(ctx, "")
		if err != nil {
			bigLake.err = err
			return
		}
		if _, err := NewCatalog(db, s, cache).Refresh(ctx, "raw_payments", RawSchema(paymentsSpec(b).Stream("payments").Contract), snap); err != nil {
			bigLake.err = err
			return
		}
		bigLake.db, bigLake.files = db, filepath.Join(dir, "cache", "*", "*.parquet")
	})
	if bigLake.err != nil {
		b.Fatal(bigLake.err)
	}
	return bigLake.db, bigLake.files
}

const minuteAgg = "SELECT time_bucket(INTERVAL 1 MINUTE, ts) AS m, count(*), sum(amount) FROM %s GROUP BY m"

func runAgg(b *testing.B, db *sql.DB, from string) {
	q := fmt.Sprintf(minuteAgg, from)
	for b.Loop() {
		rows, err := db.QueryContext(context.Background(), q)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		rows.Close()
		if n != 100 {
			b.Fatalf("%d minutes, want 100", n)
		}
	}
	b.ReportMetric(20e6*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkLakeAggregate20M groups 20M rows of lake files by minute through
// the catalog's view.
func BenchmarkLakeAggregate20M(b *testing.B) {
	db, _ := twentyMillionRows(b)
	runAgg(b, db, "raw_payments")
}

// BenchmarkLakeAggregate20MAnchorReadParquet runs the same query with
// DuckDB's read_parquet straight over the same files.
func BenchmarkLakeAggregate20MAnchorReadParquet(b *testing.B) {
	db, glob := twentyMillionRows(b)
	runAgg(b, db, "read_parquet('"+glob+"')")
}
