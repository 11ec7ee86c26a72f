package lake

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lakeWithPartitions writes and commits one raw payments file per partition
// to a fresh table on MinIO, returning the table and rows per partition.
func lakeWithPartitions(t *testing.T, bucket string, parts int, perPart int) (Store, *Table, map[string]int64) {
	t.Helper()
	ctx := t.Context()
	s := minioStore(t, "s3://"+bucket+"/lake")
	tbl := OpenTable(s, RawTable("payments"))
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	want := map[string]int64{}
	for i := range parts {
		p := PartitionOf(base.Add(time.Duration(i)*5*time.Minute).UnixMicro(), 5*time.Minute)
		from := int64(i*perPart + 1)
		rows := genPayments(t, perPart, uint64(i+10), p.Start, p.Size, from)
		key := RawFileKey("payments", p, uint64(from), uint64(from)+uint64(perPart)-1)
		f, err := PutParquet(ctx, s, key, p.Path(), rows, WriteOptions{SortBy: "ts"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tbl.Commit(ctx, Commit{Op: "compact", Add: []File{f}, Partitions: []string{p.Path()}, Source: &SeqRange{uint64(from), uint64(from) + uint64(perPart) - 1}}); err != nil {
			t.Fatal(err)
		}
		want[p.Path()] = int64(perPart)
	}
	return s, tbl, want
}

func TestCacheFetch(t *testing.T) {
	ctx := t.Context()
	s, tbl, _ := lakeWithPartitions(t, "cache", 3, 2000)
	snap, err := tbl.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	files := snap.List()
	c, err := NewCache(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	path, err := c.Fetch(ctx, s, files[0])
	if err != nil {
		t.Fatal(err)
	}
	if n, err := CheckParquet(path); err != nil || n != files[0].Rows {
		t.Fatalf("cached copy: %d rows, %v", n, err)
	}
	// A second fetch is served locally: it works with the object gone.
	if err := s.Delete(ctx, files[0].Key); err != nil {
		t.Fatal(err)
	}
	if again, err := c.Fetch(ctx, s, files[0]); err != nil || again != path {
		t.Fatalf("second fetch: %s, %v", again, err)
	}
	// An object overwritten after its commit is refused, naming its key.
	garbage := []byte("PAR1 not really")
	if _, err := s.Put(ctx, files[1].Key, strings.NewReader(string(garbage)), int64(len(garbage))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(ctx, s, files[1]); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), files[1].Key) {
		t.Errorf("overwritten object: %v, want ErrCorrupt naming %s", err, files[1].Key)
	}
	// A corrupt object whose commit agrees with it (no ETag recorded) still
	// fails the Parquet check, naming its key.
	bad := files[1]
	bad.ETag, bad.Bytes = "", int64(len(garbage))
	if _, err := c.Fetch(ctx, s, bad); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad.Key) {
		t.Errorf("garbage Parquet: %v, want ErrCorrupt naming %s", err, bad.Key)
	}
}

func TestCacheEviction(t *testing.T) {
	ctx := t.Context()
	s, tbl, _ := lakeWithPartitions(t, "evict", 4, 3000)
	snap, _ := tbl.Snapshot(ctx)
	files := snap.List()
	one := files[0].Bytes
	c, err := NewCache(t.TempDir(), 2*one+one/2) // room for two files
	if err != nil {
		t.Fatal(err)
	}
	p0, _ := c.Fetch(ctx, s, files[0])
	c.Pin([]string{p0})
	var paths []string
	for _, f := range files[1:] {
		p, err := c.Fetch(ctx, s, f)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	if _, err := os.Stat(p0); err != nil {
		t.Errorf("pinned file was evicted: %v", err)
	}
	if _, err := os.Stat(paths[0]); err == nil {
		t.Errorf("least recently used unpinned file was kept")
	}
	if _, err := os.Stat(paths[len(paths)-1]); err != nil {
		t.Errorf("newest file was evicted: %v", err)
	}
	if c.Size() > 2*one+one/2 {
		t.Errorf("cache holds %d bytes, bound %d", c.Size(), 2*one+one/2)
	}
	// A new Cache on the same directory adopts what is there.
	c2, err := NewCache(c.dir, 1<<30)
	if err != nil || c2.Size() != c.Size() {
		t.Errorf("reopened cache: %d bytes, %v; want %d", c2.Size(), err, c.Size())
	}
}

func TestCatalog(t *testing.T) {
	ctx := t.Context()
	s, tbl, want := lakeWithPartitions(t, "catalog", 3, 5000)
	db, err := OpenDuckDB(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cache, err := NewCache(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	cat := NewCatalog(db, s, cache)
	schema := RawSchema(paymentsSpec(t).Stream("payments").Contract)
	name := RawViewName("payments")

	// Before any commit the view exists, empty, with the right columns.
	empty := OpenTable(s, RawTable("nothing"))
	esnap, _ := empty.Snapshot(ctx)
	if _, err := cat.Refresh(ctx, "raw_nothing", schema, esnap); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM raw_nothing WHERE amount > 0 AND ts IS NOT NULL`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("empty view: %d, %v", n, err)
	}

	snap, _ := tbl.Snapshot(ctx)
	if problems, err := cat.Refresh(ctx, name, schema, snap); err != nil || len(problems) != 0 {
		t.Fatalf("refresh: %v %v", problems, err)
	}
	got := countByPartition(t, cat, name)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows by partition %v, want %v", got, want)
	}

	// Corrupt one object behind the catalog's back, in a fresh cache: the
	// refresh names it and the other partitions stay readable.
	files := snap.List()
	if _, err := s.Put(ctx, files[1].Key, strings.NewReader("truncated"), 9); err != nil {
		t.Fatal(err)
	}
	cache2, _ := NewCache(t.TempDir(), 1<<30)
	cat2 := NewCatalog(db, s, cache2)
	problems, err := cat2.Refresh(ctx, name, schema, snap)
	if err != nil || len(problems) != 1 || !strings.Contains(problems[0].Error(), files[1].Key) {
		t.Fatalf("refresh over a corrupt object: problems %v, err %v; want one naming %s", problems, err, files[1].Key)
	}
	got = countByPartition(t, cat2, name)
	delete(want, files[1].Partition)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after leaving out the corrupt file: %v, want %v", got, want)
	}
}

func countByPartition(t *testing.T, cat *Catalog, view string) map[string]int64 {
	t.Helper()
	rows, err := cat.DB().QueryContext(t.Context(), `SELECT strftime(time_bucket(INTERVAL 5 MINUTE, ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AT TIME ZONE 'UTC', 'dt=%Y-%m-%d/hr=%H/min=%M'), count(*) FROM `+view+` GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var p string
		var n int64
		if err := rows.Scan(&p, &n); err != nil {
			t.Fatal(err)
		}
		out[p] = n
	}
	return out
}

// TestCatalogRefreshUnderReaders swaps a view while readers query it: no
// query fails, and each sees a whole snapshot, never a mix.
func TestCatalogRefreshUnderReaders(t *testing.T) {
	ctx := t.Context()
	s := minioStore(t, "s3://swap/lake")
	tbl := OpenTable(s, RawTable("payments"))
	db, _ := OpenDuckDB(ctx, "")
	defer db.Close()
	cache, _ := NewCache(t.TempDir(), 1<<30)
	cat := NewCatalog(db, s, cache)
	schema := RawSchema(paymentsSpec(t).Stream("payments").Contract)
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	valid := map[int64]bool{0: true}
	var mu sync.Mutex
	snap, _ := tbl.Snapshot(ctx)
	if _, err := cat.Refresh(ctx, "raw_payments", schema, snap); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var queries atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				var n int64
				if err := db.QueryRowContext(ctx, "SELECT count(*) FROM raw_payments").Scan(&n); err != nil {
					t.Errorf("query during refresh: %v", err)
					return
				}
				mu.Lock()
				ok := valid[n]
				mu.Unlock()
				if !ok {
					t.Errorf("query saw %d rows, which is no snapshot's count", n)
					return
				}
				queries.Add(1)
			}
		})
	}
	total := int64(0)
	for i := range 10 {
		p := PartitionOf(base.Add(time.Duration(i)*5*time.Minute).UnixMicro(), 5*time.Minute)
		rows := genPayments(t, 1000, uint64(100+i), p.Start, p.Size, int64(i*1000+1))
		f, err := PutParquet(ctx, s, RawFileKey("payments", p, uint64(i*1000+1), uint64(i*1000+1000)), p.Path(), rows, WriteOptions{SortBy: "ts"})
		if err != nil {
			t.Fatal(err)
		}
		snap, err := tbl.Commit(ctx, Commit{Op: "compact", Add: []File{f}, Source: &SeqRange{uint64(i*1000 + 1), uint64(i*1000 + 1000)}})
		if err != nil {
			t.Fatal(err)
		}
		total += 1000
		mu.Lock()
		valid[total] = true
		mu.Unlock()
		if _, err := cat.Refresh(ctx, "raw_payments", schema, snap); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if queries.Load() < 10 {
		t.Errorf("only %d queries ran during the refreshes", queries.Load())
	}
	if v := cat.Version("raw_payments"); v != 10 {
		t.Errorf("catalog at version %d, want 10", v)
	}
}

// TestViewSchemaMatchesViewSQL holds the batch table schema to what the
// view's SQL returns in DuckDB: same columns, same types, same order.
func TestViewSchemaMatchesViewSQL(t *testing.T) {
	ctx := t.Context()
	s := paymentsSpec(t)
	raw := filepath.Join(t.TempDir(), "raw.parquet")
	if _, err := WriteParquet(raw, genPayments(t, 1000, 3, time.Now(), time.Hour, 1), WriteOptions{SortBy: "ts"}); err != nil {
		t.Fatal(err)
	}
	db, err := OpenDuckDB(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE TABLE events AS SELECT * FROM read_parquet(?)", raw); err != nil {
		t.Fatal(err)
	}
	for _, v := range s.Stream("payments").Views {
		rows, err := db.QueryContext(ctx, "DESCRIBE "+v.SQL("events"))
		if err != nil {
			t.Fatalf("view %s: %v", v.Name, err)
		}
		var got []string
		for rows.Next() {
			var name, typ string
			var null, key, def, extra any
			if err := rows.Scan(&name, &typ, &null, &key, &def, &extra); err != nil {
				t.Fatal(err)
			}
			got = append(got, name+" "+typ)
		}
		rows.Close()
		var want []string
		for _, f := range ViewSchema(v).Fields() {
			want = append(want, f.Name+" "+strings.ReplaceAll(DuckDBType(f.Type), "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("view %s:\n SQL    %v\n schema %v", v.Name, got, want)
		}
	}
}

func TestS3ConfigFromEnv(t *testing.T) {
	t.Setenv("TIDELINE_S3_ENDPOINT", "127.0.0.1:9000")
	t.Setenv("TIDELINE_S3_ACCESS_KEY", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "aws-key")
	t.Setenv("TIDELINE_S3_SECRET_KEY", "secret")
	t.Setenv("TIDELINE_S3_SECURE", "true")
	got := S3ConfigFromEnv()
	if got.Endpoint != "127.0.0.1:9000" || got.AccessKey != "aws-key" || got.SecretKey != "secret" || !got.Secure {
		t.Errorf("S3ConfigFromEnv = %+v", got)
	}
}
