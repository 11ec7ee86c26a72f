package worker

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	sdkworker "go.temporal.io/sdk/worker"

	"tideline/activities"
	"tideline/examples/payments"
	"tideline/internal/devstack"
	"tideline/internal/oracle"
	"tideline/internal/stacktest"
	"tideline/lake"
	"tideline/spec"
	"tideline/stream"
	"tideline/workflows"
)

// harness is the whole batch layer on real servers: embedded NATS with the
// speed layer running, the Temporal dev server with a worker, and MinIO.
type harness struct {
	t     *testing.T
	spec  *spec.Spec
	stack *devstack.Stack
	js    jetstream.JetStream
	store lake.Store
	tc    client.Client
	db    *sql.DB // DuckDB for reading what the lake holds
	proc  *stream.Processor
	outs  []string // generator --out files so far
	// stopSpeed stops the speed layer startSpeed started.
	stopSpeed func()
}

var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func startHarness(t *testing.T) *harness {
	t.Helper()
	ctx := t.Context()
	h := &harness{t: t, spec: stacktest.FastSpec(t)}
	h.stack = devstack.StartForTest(t, devstack.All)
	nc, err := nats.Connect(h.stack.NATS.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if h.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if err := stream.Setup(ctx, h.js, h.spec, stream.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	m := h.stack.MinIO
	if h.store, err = lake.Open(ctx, "s3://tideline/lake", lake.S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey}, lake.Options{}); err != nil {
		t.Fatal(err)
	}
	if h.tc, err = client.Dial(client.Options{HostPort: h.stack.Temporal.HostPort, Logger: tlog.NewStructuredLogger(quiet)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.tc.Close)
	if err := EnsureSearchAttributes(ctx, h.tc, "default"); err != nil {
		t.Fatal(err)
	}
	if h.db, err = lake.OpenDuckDB(ctx, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.db.Close() })

	// The speed layer, so advances have speed values to correct.
	h.startSpeed(h.spec)
	return h
}

// startSpeed runs the speed layer over the payments stream of s until the
// test ends or stopSpeed is called.
func (h *harness) startSpeed(s *spec.Spec) {
	nc, err := nats.Connect(h.stack.NATS.URL)
	if err != nil {
		h.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		h.t.Fatal(err)
	}
	h.proc = stream.NewProcessor(nc, js, s.Stream("payments"), stream.ProcessorOptions{Log: quiet})
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.proc.Run(pctx) }()
	stopped := false
	h.stopSpeed = func() {
		if stopped {
			return
		}
		stopped = true
		stop()
		if err := <-done; err != nil {
			h.t.Errorf("speed layer: %v", err)
		}
		nc.Close()
	}
	h.t.Cleanup(h.stopSpeed)
}

// startWorker runs an in-process worker until the test ends.
func (h *harness) startWorker() *activities.Activities {
	acts, _ := h.startWorkerWith(h.spec)
	return acts
}

// startWorkerWith runs an in-process worker with spec s until the test
// ends or stop is called.
func (h *harness) startWorkerWith(s *spec.Spec) (acts *activities.Activities, stop func()) {
	h.t.Helper()
	db, err := lake.OpenDuckDB(h.t.Context(), "")
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { db.Close() })
	cache, err := lake.NewCache(h.t.TempDir(), 1<<30)
	if err != nil {
		h.t.Fatal(err)
	}
	acts, err = activities.New(activities.Config{Spec: s, Store: h.store, JS: h.js, DB: db, Cache: cache,
		Temporal: h.tc, TmpDir: h.t.TempDir(), ChunkMessages: 5000, Log: quiet})
	if err != nil {
		h.t.Fatal(err)
	}
	// Few slots, as a real worker has (tideline worker --activities 4): a
	// step that waits while holding one, for another that needs one,
	// deadlocks here as it would there.
	w := New(h.tc, acts, sdkworker.Options{MaxConcurrentActivityExecutionSize: 2})
	if err := w.Start(); err != nil {
		h.t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(w.Stop) }
	h.t.Cleanup(stop)
	return acts, stop
}

var genStart = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// spread stretches event time 20-fold, so 20,000 events cover about 7
// one-minute partitions; disorder and lateness keep their offsets.
func spread(r *rand.Rand, i int, ts time.Time) map[string]any {
	return payments.Payment(r, i, ts.Add(time.Duration(i)*19*time.Millisecond))
}

// generate publishes a generated mix and remembers its --out file.
func (h *harness) generate(o stream.GenOptions) stream.GenStats {
	h.t.Helper()
	return h.generateWith(o, spread)
}

// generateWith is generate with events made by newEvent, from o.Start
// (genStart if zero).
func (h *harness) generateWith(o stream.GenOptions, newEvent stream.EventFunc) stream.GenStats {
	h.t.Helper()
	out := filepath.Join(h.t.TempDir(), fmt.Sprintf("out-%d.ndjson", len(h.outs)))
	f, err := os.Create(out)
	if err != nil {
		h.t.Fatal(err)
	}
	o.Out = f
	if o.Start.IsZero() {
		o.Start = genStart
	}
	stats, err := stream.Generate(h.t.Context(), h.js, h.spec.Stream("payments"), newEvent, o)
	f.Close()
	if err != nil {
		h.t.Fatal(err)
	}
	h.outs = append(h.outs, out)
	return stats
}

// republish publishes the first n valid events of the first run again,
// under new message ids.
func (h *harness) republish(n int) int {
	h.t.Helper()
	data, err := os.ReadFile(h.outs[0])
	if err != nil {
		h.t.Fatal(err)
	}
	done := 0
	for line := range strings.Lines(string(data)) {
		var l stream.OutLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			h.t.Fatal(err)
		}
		if l.Kind != "valid" {
			continue
		}
		m := nats.NewMsg(l.Subject)
		m.Data = []byte(l.Data)
		if _, err := h.js.PublishMsg(h.t.Context(), m, jetstream.WithMsgID("again-"+l.MsgID)); err != nil {
			h.t.Fatal(err)
		}
		if done++; done == n {
			break
		}
	}
	return done
}

// oracle loads every generated event so far into a fresh DuckDB.
func (h *harness) oracle() *sql.DB {
	h.t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { db.Close() })
	if err := oracle.Load(h.t.Context(), db, h.spec.Stream("payments"), h.outs...); err != nil {
		h.t.Fatal(err)
	}
	return db
}

// waitSpeed waits until the speed layer has applied the whole stream and
// closed its windows, and returns its late counts per view.
func (h *harness) waitSpeed() map[string]uint64 {
	h.t.Helper()
	s, err := h.js.Stream(h.t.Context(), "payments")
	if err != nil {
		h.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		info, err := s.Info(h.t.Context())
		if err != nil {
			h.t.Fatal(err)
		}
		var seq uint64
		var open int
		var late map[string]uint64
		h.proc.Operator(func(op *stream.Operator) { seq, open, late = op.Seq, op.OpenWindows(), op.LateEvents() })
		if seq >= info.State.LastSeq && open == 0 {
			time.Sleep(2 * time.Second) // a checkpoint writes the final windows to KV
			return late
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("speed layer at sequence %d of %d with %d windows open after 60s", seq, info.State.LastSeq, open)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *harness) run(id string, wf any, in any, out any) error {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 10*time.Minute)
	defer cancel()
	run, err := h.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL}, wf, in)
	if err != nil {
		h.t.Fatal(err)
	}
	return run.Get(ctx, out)
}

// saveHistory writes a workflow's history to workflows/testdata for the
// replay test, when TIDELINE_SAVE_HISTORY=1.
func (h *harness) saveHistory(id, name string) {
	h.t.Helper()
	if os.Getenv("TIDELINE_SAVE_HISTORY") != "1" {
		return
	}
	var hist historypb.History
	it := h.tc.GetWorkflowHistory(h.t.Context(), id, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			h.t.Fatal(err)
		}
		hist.Events = append(hist.Events, e)
	}
	data, err := temporalproto.CustomJSONMarshalOptions{}.Marshal(&hist)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("../workflows/testdata", name+".json"), data, 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) compact(id string) workflows.CompactionResult {
	h.t.Helper()
	var res workflows.CompactionResult
	if err := h.run(id, workflows.Compaction, workflows.CompactionInput{Stream: "payments"}, &res); err != nil {
		h.t.Fatalf("compaction %s: %v", id, err)
	}
	return res
}

// lakeFiles copies a table's live files out of the store and returns
// their paths.
func (h *harness) lakeFiles(table string) (*lake.Snapshot, []string) {
	h.t.Helper()
	snap, err := lake.OpenTable(h.store, table).Snapshot(h.t.Context())
	if err != nil {
		h.t.Fatal(err)
	}
	dir := h.t.TempDir()
	var paths []string
	for i, f := range snap.List() {
		r, _, err := h.store.Get(h.t.Context(), f.Key)
		if err != nil {
			h.t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("%d.parquet", i))
		w, _ := os.Create(p)
		if _, err := w.ReadFrom(r); err != nil {
			h.t.Fatal(err)
		}
		w.Close()
		r.Close()
		paths = append(paths, p)
	}
	return snap, paths
}

func readParquet(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = spec.QuoteString(p)
	}
	return "read_parquet([" + strings.Join(q, ", ") + "])"
}

// checkBatch holds every view's batch table to the oracle, exactly.
func (h *harness) checkBatch(db *sql.DB) {
	h.t.Helper()
	for _, v := range h.spec.Stream("payments").Views {
		want, err := oracle.ViewRows(h.t.Context(), db, v, "")
		if err != nil {
			h.t.Fatal(err)
		}
		_, paths := h.lakeFiles(lake.ViewTable(v.Name))
		if len(paths) == 0 {
			h.t.Fatalf("view %s has no batch files", v.Name)
		}
		got, err := oracle.QueryRows(h.t.Context(), h.db, v, "SELECT * FROM "+readParquet(paths))
		if err != nil {
			h.t.Fatal(err)
		}
		if d := oracle.Diff(got, want); d != "" {
			h.t.Errorf("batch view %s differs from the oracle (%d windows, want %d):\n%s", v.Name, len(got), len(want), d)
		}
	}
}

// corrected sums the count delta the view's corrections of kind record.
func (h *harness) corrected(view, kind string) int64 {
	h.t.Helper()
	_, paths := h.lakeFiles(lake.CorrectionsTable(view))
	if len(paths) == 0 {
		return 0
	}
	var n int64
	q := fmt.Sprintf("SELECT coalesce(sum(delta), 0) FROM %s WHERE kind = %s AND measure = 'payments'", readParquet(paths), spec.QuoteString(kind))
	if err := h.db.QueryRowContext(h.t.Context(), q).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// TestBatchLayerMatchesOracle runs compaction, recompute, advance and
// backfills on real NATS, Temporal and MinIO, with the speed layer running,
// and holds the batch tables to DuckDB's answer from the generator's files.
func TestBatchLayerMatchesOracle(t *testing.T) {
	h := startHarness(t)
	h.startWorker()
	ctx := t.Context()

	// Round 1: disorder, lateness beyond the allowed, duplicates, invalid.
	stats := h.generate(stream.GenOptions{Count: 20000 / scale, OOO: 0.05, Late: 0.02, Dup: 0.01, Invalid: 0.005, Seed: 1})
	late := h.waitSpeed()
	res := h.compact("round-1")
	h.saveHistory("round-1", "compaction")
	if res.Compact.Rows != int64(stats.Valid) || res.Compact.Rejected != int64(stats.Invalid) || res.Compact.Messages != int64(stats.Valid+stats.Invalid) {
		t.Errorf("compaction %+v; generator published %+v", res.Compact, stats)
	}
	if len(res.Failed) > 0 || len(res.Recomputed) == 0 {
		t.Fatalf("round 1: recomputed %d, failed %v", len(res.Recomputed), res.Failed)
	}
	h.checkBatch(h.oracle())
	// The speed layer left the late events to batch; the corrections of
	// the tumbling and session views account for exactly those.
	for _, v := range []string{"merchant_minute", "country_minute", "card_sessions"} {
		if got := h.corrected(v, activities.KindSpeed); got != int64(late[v]) || got == 0 {
			t.Errorf("view %s: speed corrections add %d events, the speed layer counted %d late", v, got, late[v])
		}
	}
	for _, adv := range res.Advanced {
		if adv.To.Before(genStart.Add(7 * time.Minute / scale)) {
			t.Errorf("view %s: tideline at %s, want past the generated data (%s)", adv.View, adv.To, adv.Waiting)
		}
	}

	// Compacting again with nothing new changes nothing (I4).
	again := h.compact("round-1-again")
	if again.Compact.Messages != 0 || len(again.Recomputed) != 0 {
		t.Errorf("a second run with nothing new compacted %d messages, recomputed %d partitions", again.Compact.Messages, len(again.Recomputed))
	}

	// Round 2: more events in the same, sealed time range: all late for
	// the speed layer, so batch recomputes below the tideline and records
	// batch corrections for exactly what they add.
	stats2 := h.generate(stream.GenOptions{Count: 3000 / scale, OOO: 0.05, Dup: 0.01, Invalid: 0.01, Seed: 2})
	// And 200 of round 1's events again under new message ids, which
	// JetStream cannot drop: batch must count each id once.
	republished := h.republish(200 / scale)
	h.waitSpeed()
	res2 := h.compact("round-2")
	if res2.Compact.Rows != int64(stats2.Valid+republished) || len(res2.Failed) > 0 {
		t.Errorf("round 2 compaction %+v, failed %v; generator %+v", res2.Compact, res2.Failed, stats2)
	}
	h.checkBatch(h.oracle())
	if got := h.corrected("merchant_minute", activities.KindBatch); got != int64(stats2.Valid) {
		t.Errorf("batch corrections add %d events, round 2 published %d valid ones", got, stats2.Valid)
	}

	// Backfills.
	backfill := func(id string, in workflows.BackfillInput) (workflows.BackfillProgress, error) {
		var p workflows.BackfillProgress
		err := h.run(id, workflows.Backfill, in, &p)
		return p, err
	}
	from, to := genStart.Add(-time.Hour), genStart.Add(time.Hour)
	if p, err := backfill("nothing-missing", workflows.BackfillInput{View: "*", From: from, To: to}); err != nil || p.Total != 0 || p.Note == "" {
		t.Errorf("backfill with nothing missing: %+v, %v", p, err)
	}
	if p, err := backfill("no-data", workflows.BackfillInput{View: "*", From: from.AddDate(-1, 0, 0), To: to.AddDate(-1, 0, 0)}); err != nil || !strings.Contains(p.Note, "no raw data") {
		t.Errorf("backfill of a range with no data: %+v, %v", p, err)
	}
	if _, err := backfill("bad-view", workflows.BackfillInput{View: "nope", From: from, To: to}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("backfill of an unknown view: %v", err)
	}
	// Lose two batch files of a view; mode missing recomputes just those.
	tbl := lake.OpenTable(h.store, lake.ViewTable("merchant_minute"))
	snap, err := tbl.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost := snap.List()[1:3]
	if _, err := tbl.Commit(ctx, lake.Commit{Op: "test", Remove: []string{lost[0].Key, lost[1].Key}}); err != nil {
		t.Fatal(err)
	}
	// Two identical backfills at once: each partition is computed once.
	errs := make(chan error, 2)
	progs := make(chan workflows.BackfillProgress, 2)
	for i := range 2 {
		go func() {
			p, err := backfill(fmt.Sprint("missing-", i), workflows.BackfillInput{View: "merchant_minute", From: from, To: to, Mode: "missing", Parallelism: 2})
			progs <- p
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("backfill of missing partitions: %v", err)
		}
		if p := <-progs; p.Done != 2 || p.Failed != 0 {
			t.Errorf("backfill of missing partitions: %+v, want 2 done", p)
		}
	}
	h.checkBatch(h.oracle())
	// The Temporal UI's list shows progress in the search attributes.
	d, err := h.tc.DescribeWorkflow(ctx, "missing-0", "")
	if err != nil {
		t.Fatal(err)
	}
	if done, ok := d.TypedSearchAttributes.GetInt64(workflows.AttrDone); !ok || done != 2 {
		t.Errorf("search attribute TidelineDone = %d (%v), want 2", done, ok)
	}
	h.saveHistory("missing-0", "backfill")
	h.saveHistory("backfill/merchant_minute/"+lost[0].Partition, "backfill-partition")
	if p, err := backfill("all", workflows.BackfillInput{View: "merchant_minute", From: from, To: to, Mode: "all", Parallelism: 3}); err != nil || p.Done != p.Total || p.Total < 7/scale {
		t.Errorf("backfill mode all: %+v, %v", p, err)
	}
	var bad workflows.BackfillProgress
	if err := h.run("bad-mode", workflows.Backfill, workflows.BackfillInput{View: "*", From: from, To: to, Mode: "some"}, &bad); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Errorf("backfill with a bad mode: %v", err)
	}
	if !errors.Is(ctx.Err(), nil) {
		t.Fatal(ctx.Err())
	}
}
