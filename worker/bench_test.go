package worker

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	sdkworker "go.temporal.io/sdk/worker"

	"tideline/activities"
	"tideline/internal/devstack"
	"tideline/lake"
	"tideline/spec"
	"tideline/workflows"
)

const (
	backfillPartitions = 24
	backfillPerPart    = 840_000 // 20.16M payments in all
)

var backfillStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// backfillBench is 24 five-minute partitions of raw payments in a lake on
// MinIO, written by DuckDB and committed to the raw table, and the same
// files on local disk for the anchor.
type backfillBench struct {
	spec  *spec.Spec
	stack *devstack.Stack
	store lake.Store
	local []string // the raw files, on local disk
}

var (
	backfillOnce  sync.Once
	backfillFiles []string // the raw files, generated once per process
	backfillErr   error
)

// generateBackfill writes the 24 raw partitions with DuckDB, once per test
// process, into a directory TestMain removes.
func generateBackfill(st *spec.Stream) ([]string, error) {
	backfillOnce.Do(func() {
		db, err := sql.Open("duckdb", "")
		if err != nil {
			backfillErr = err
			return
		}
		defer db.Close()
		for k := range backfillPartitions {
			p := lake.PartitionOf(backfillStart.Add(time.Duration(k)*st.Partition).UnixMicro(), st.Partition)
			path := filepath.Join(benchDir, fmt.Sprintf("part-%02d.parquet", k))
			first := int64(k*backfillPerPart + 1)
			q := fmt.Sprintf(`COPY (SELECT 'pay-' || (%[1]d + i) AS payment_id,
					make_timestamptz(%[2]d + i * %[3]d // %[4]d) AS ts,
					'card-' || lpad(CAST(hash(i, 1) %% 5000 AS VARCHAR), 5, '0') AS card_id,
					'm-' || lpad(CAST(hash(i, 2) %% 200 AS VARCHAR), 4, '0') AS merchant_id,
					['US', 'US', 'US', 'GB', 'DE', 'FR', 'BR', 'JP'][CAST(1 + hash(i, 3) %% 8 AS BIGINT)] AS country,
					CAST(100 + hash(i, 4) %% 50000 AS BIGINT) AS amount,
					['USD', 'EUR', 'GBP', 'JPY', 'BRL'][CAST(1 + hash(i, 5) %% 5 AS BIGINT)] AS currency,
					['pos', 'ecom', 'moto'][CAST(1 + hash(i, 6) %% 3 AS BIGINT)] AS channel,
					hash(i, 7) %% 2 = 0 AS card_present,
					CAST(%[1]d + i AS BIGINT) AS _seq,
					make_timestamptz(%[2]d + i * %[3]d // %[4]d) AS _received
				FROM range(%[4]d) AS t(i)) TO %[5]s (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 524288)`,
				first, p.Start.UnixMicro(), st.Partition.Microseconds(), backfillPerPart, spec.QuoteString(path))
			if _, err := db.Exec(q); err != nil {
				backfillErr = err
				return
			}
			backfillFiles = append(backfillFiles, path)
		}
	})
	return backfillFiles, backfillErr
}

var (
	sharedOnce  sync.Once
	shared      *backfillBench
	sharedErr   error // the stack did not start
	uploadErr   error
	sharedStop  func() // TestMain calls it
	sharedRuns  int    // backfills run on the shared stack, for workflow ids
	sharedWarm  bool   // the worker's cache holds the raw files
	sharedCache string // the worker's cache, kept warm across runs
)

// sharedBackfillBench is the benchmark's stack, lake and raw files, made
// once per process: -count runs it again, and starting Temporal, NATS and
// MinIO and uploading 20M rows each time is most of the package's time.
func sharedBackfillBench(b *testing.B) *backfillBench {
	b.Helper()
	sharedOnce.Do(func() {
		dir := filepath.Join(benchDir, "stack")
		sharedCache = filepath.Join(benchDir, "cache")
		stack, err := devstack.Start(context.Background(), devstack.Options{Dir: dir, Parts: devstack.All})
		if err != nil {
			sharedErr = err
			return
		}
		sharedStop = func() { _ = stack.Stop() }
		shared, uploadErr = uploadBackfill(stack)
	})
	if sharedErr != nil {
		b.Skipf("cannot start the stack (run `make tools`): %v", sharedErr)
	}
	if uploadErr != nil {
		b.Fatal(uploadErr)
	}
	return shared
}

func startBackfillBench(b *testing.B, parts devstack.Parts) *backfillBench {
	b.Helper()
	if parts.MinIO {
		return sharedBackfillBench(b)
	}
	bb, err := uploadBackfill(nil)
	if err != nil {
		b.Fatal(err)
	}
	return bb
}

// uploadBackfill generates the raw files and, with a stack, commits them to
// a lake on its MinIO.
func uploadBackfill(stack *devstack.Stack) (*backfillBench, error) {
	ctx := context.Background()
	s, err := spec.Load("../examples/payments/tideline.yaml")
	if err != nil {
		return nil, err
	}
	st := s.Stream("payments")
	bb := &backfillBench{spec: s}
	if bb.local, err = generateBackfill(st); err != nil {
		return nil, err
	}
	if stack == nil {
		return bb, nil
	}
	bb.stack = stack
	m := stack.MinIO
	if bb.store, err = lake.Open(ctx, "s3://bench/lake", lake.S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey}, lake.Options{}); err != nil {
		return nil, err
	}
	tbl := lake.OpenTable(bb.store, lake.RawTable(st.Name))
	for k, path := range bb.local {
		p := lake.PartitionOf(backfillStart.Add(time.Duration(k)*st.Partition).UnixMicro(), st.Partition)
		first := int64(k*backfillPerPart + 1)
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		fi, _ := f.Stat()
		key := lake.RawFileKey(st.Name, p, uint64(first), uint64(first+backfillPerPart-1))
		info, err := bb.store.Put(ctx, key, f, fi.Size())
		f.Close()
		if err != nil {
			return nil, err
		}
		commit := lake.Commit{Op: "compact", Source: &lake.SeqRange{From: uint64(first), To: uint64(first + backfillPerPart - 1)},
			Add:   []lake.File{{Key: key, Partition: p.Path(), Rows: backfillPerPart, Bytes: fi.Size(), ETag: info.ETag}},
			Props: map[string]string{lake.PropCovered: time.Now().UTC().Format(time.RFC3339Nano)}}
		if _, err := tbl.Commit(ctx, commit); err != nil {
			return nil, err
		}
	}
	return bb, nil
}

// BenchmarkBackfill24 runs the Backfill workflow (mode all, parallelism 4)
// over 24 partitions holding 20.16M payments, from no batch results, on the
// dev server, with MinIO as the lake and the worker's cache warm.
func BenchmarkBackfill24(b *testing.B) {
	bb := startBackfillBench(b, devstack.All)
	ctx := context.Background()
	nc, err := nats.Connect(bb.stack.NATS.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	quietLog := slog.New(slog.NewTextHandler(io.Discard, nil))
	tc, err := client.Dial(client.Options{HostPort: bb.stack.Temporal.HostPort, Logger: tlog.NewStructuredLogger(quietLog)})
	if err != nil {
		b.Fatal(err)
	}
	defer tc.Close()
	if err := EnsureSearchAttributes(ctx, tc, "default"); err != nil {
		b.Fatal(err)
	}
	db, err := lake.OpenDuckDB(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	cache, _ := lake.NewCache(sharedCache, 8<<30)
	tmp := b.TempDir()
	// startWorker starts a worker whose activities know nothing of the
	// lake yet, as after a restart: the runs delete the view's objects
	// behind its back.
	startWorker := func() sdkworker.Worker {
		acts, err := activities.New(activities.Config{Spec: bb.spec, Store: bb.store, JS: js, DB: db, Cache: cache, Temporal: tc, TmpDir: tmp, Log: quietLog})
		if err != nil {
			b.Fatal(err)
		}
		w := New(tc, acts, sdkworker.Options{MaxConcurrentActivityExecutionSize: 4})
		if err := w.Start(); err != nil {
			b.Fatal(err)
		}
		return w
	}
	backfill := func() {
		b.StopTimer()
		sharedRuns++
		run := sharedRuns
		// From nothing: no batch files, no tideline, no corrections.
		for _, prefix := range []string{"views/", "corrections/"} {
			objs, err := bb.store.List(ctx, prefix)
			if err != nil {
				b.Fatal(err)
			}
			for _, o := range objs {
				if err := bb.store.Delete(ctx, o.Key); err != nil {
					b.Fatal(err)
				}
			}
		}
		w := startWorker()
		b.StartTimer()
		in := workflows.BackfillInput{View: "merchant_minute", From: backfillStart, To: backfillStart.Add(24 * time.Hour), Mode: "all", Parallelism: 4}
		wr, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprint("bench-", run), TaskQueue: workflows.TaskQueue}, workflows.Backfill, in)
		if err != nil {
			b.Fatal(err)
		}
		var p workflows.BackfillProgress
		if err := wr.Get(ctx, &p); err != nil || p.Done != backfillPartitions {
			b.Fatalf("backfill: %+v, %v", p, err)
		}
		b.StopTimer()
		w.Stop()
		snap, err := lake.OpenTable(bb.store, lake.ViewTable("merchant_minute")).Snapshot(ctx)
		if err != nil || len(snap.Files) != backfillPartitions {
			b.Fatalf("after the backfill the view has %d batch files (%v), want %d", len(snap.Files), err, backfillPartitions)
		}
		b.StartTimer()
	}
	if !sharedWarm {
		backfill() // warms the worker's cache, as a running worker's would be
		sharedWarm = true
	}
	for b.Loop() {
		backfill()
	}
	b.ReportMetric(float64(backfillPartitions*backfillPerPart)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkBackfill24AnchorDuckDB is DuckDB's own SQL over the same files on
// local disk, with no orchestration: repeated ids dropped, the view's SQL,
// the result written to Parquet.
func BenchmarkBackfill24AnchorDuckDB(b *testing.B) {
	bb := startBackfillBench(b, devstack.Parts{})
	v := bb.spec.View("merchant_minute")
	db, err := sql.Open("duckdb", "")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	files := make([]string, len(bb.local))
	for i, f := range bb.local {
		files[i] = spec.QuoteString(f)
	}
	out := filepath.Join(b.TempDir(), "out.parquet")
	input := "(SELECT * FROM read_parquet([" + strings.Join(files, ", ") + "]) QUALIFY row_number() OVER (PARTITION BY payment_id ORDER BY _seq) = 1)"
	q := "COPY (" + v.SQL(input) + ") TO " + spec.QuoteString(out) + " (FORMAT parquet, COMPRESSION zstd)"
	for b.Loop() {
		if _, err := db.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(backfillPartitions*backfillPerPart)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
