package worker

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"tideline/internal/stacktest"
	"tideline/lake"
	"tideline/stream"
	"tideline/workflows"
)

// workerProcess runs `tideline worker` as a child process against the
// harness's servers.
func (h *harness) workerProcess(bin, dir string) func() {
	h.t.Helper()
	specPath := filepath.Join(dir, "tideline.yaml")
	if err := os.WriteFile(specPath, []byte(stacktest.FastSpecYAML(h.t)), 0o644); err != nil {
		h.t.Fatal(err)
	}
	m := h.stack.MinIO
	env := []string{"TIDELINE_S3_ENDPOINT=" + m.Endpoint, "TIDELINE_S3_ACCESS_KEY=" + m.AccessKey, "TIDELINE_S3_SECRET_KEY=" + m.SecretKey}
	cmd := stacktest.Start(h.t, bin, filepath.Join(dir, "worker.log"), env, "worker",
		"--spec", specPath, "--nats", h.stack.NATS.URL, "--temporal", h.stack.Temporal.HostPort,
		"--lake", "s3://tideline/lake", "--cache", filepath.Join(dir, "cache"), "--http", "127.0.0.1:0",
		"--no-schedules", "--chunk", "1000", "--activities", "2")
	return func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
}

// waitFor polls cond until it holds, failing after a minute.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			h.t.Fatalf("waited a minute for %s", what)
		}
	}
}

func (h *harness) snapshot(table string) *lake.Snapshot {
	h.t.Helper()
	s, err := lake.OpenTable(h.store, table).Snapshot(h.t.Context())
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// TestWorkerKilledMidCompactionAndMidBackfill kills -9 the real worker
// process between compaction commits and again between backfill
// recomputes, restarts it, and checks the workflows complete with the lake
// holding every valid event exactly once and every view equal to the
// oracle.
func TestWorkerKilledMidCompactionAndMidBackfill(t *testing.T) {
	h := startHarness(t)
	ctx := t.Context()
	bin := stacktest.BuildTideline(t)
	dir := t.TempDir()
	stats := h.generate(stream.GenOptions{Count: 40000 / scale, OOO: 0.05, Late: 0.01, Dup: 0.01, Invalid: 0.005, Seed: 3})
	h.waitSpeed()

	// Mid-compaction: at least one chunk committed, not all.
	kill := h.workerProcess(bin, dir)
	run, err := h.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "recover-compact", TaskQueue: workflows.TaskQueue}, workflows.Compaction, workflows.CompactionInput{Stream: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	h.waitFor("a compaction commit", func() bool { return h.snapshot(lake.RawTable("payments")).HighSeq > 0 })
	kill()
	at := h.snapshot(lake.RawTable("payments")).HighSeq
	if at >= uint64(stats.Published) {
		t.Fatalf("the kill came after compaction committed everything (sequence %d)", at)
	}
	t.Logf("killed the worker with compaction committed to sequence %d", at)
	kill = h.workerProcess(bin, dir)
	var res workflows.CompactionResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("compaction after the restart: %v", err)
	}
	// The raw table has each valid event once: no sequence twice, none
	// missing.
	_, raw := h.lakeFiles(lake.RawTable("payments"))
	var rows, seqs int64
	if err := h.db.QueryRowContext(ctx, "SELECT count(*), count(DISTINCT _seq) FROM "+readParquet(raw)).Scan(&rows, &seqs); err != nil {
		t.Fatal(err)
	}
	if rows != int64(stats.Valid) || seqs != rows {
		t.Errorf("raw table has %d rows with %d distinct sequences; the generator published %d valid events", rows, seqs, stats.Valid)
	}
	db := h.oracle()
	var wantSum, gotSum int64
	if err := db.QueryRowContext(ctx, "SELECT sum(amount) FROM events").Scan(&wantSum); err != nil {
		t.Fatal(err)
	}
	if err := h.db.QueryRowContext(ctx, "SELECT sum(amount) FROM "+readParquet(raw)).Scan(&gotSum); err != nil {
		t.Fatal(err)
	}
	if gotSum != wantSum {
		t.Errorf("raw table sums amount to %d, the oracle to %d", gotSum, wantSum)
	}
	h.checkBatch(db)

	// Mid-backfill: lose every batch file of a view, backfill them one at
	// a time, and kill after the first lands.
	tbl := lake.OpenTable(h.store, lake.ViewTable("merchant_minute"))
	snap := h.snapshot(lake.ViewTable("merchant_minute"))
	var keys []string
	for _, f := range snap.List() {
		keys = append(keys, f.Key)
	}
	if _, err := tbl.Commit(ctx, lake.Commit{Op: "test", Remove: keys}); err != nil {
		t.Fatal(err)
	}
	before := h.snapshot(lake.ViewTable("merchant_minute")).Version
	in := workflows.BackfillInput{View: "merchant_minute", From: genStart.Add(-time.Hour), To: genStart.Add(time.Hour), Parallelism: 1}
	brun, err := h.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "recover-backfill", TaskQueue: workflows.TaskQueue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL}, workflows.Backfill, in)
	if err != nil {
		t.Fatal(err)
	}
	h.waitFor("a backfill recompute", func() bool { return h.snapshot(lake.ViewTable("merchant_minute")).Version > before })
	kill()
	if n := len(h.snapshot(lake.ViewTable("merchant_minute")).Files); n >= len(keys) {
		t.Fatalf("the kill came after the backfill recomputed everything (%d files)", n)
	}
	h.workerProcess(bin, dir)
	var prog workflows.BackfillProgress
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := brun.Get(bctx, &prog); err != nil {
		t.Fatalf("backfill after the restart: %v", err)
	}
	if prog.Done != len(keys) || prog.Failed != 0 {
		t.Errorf("backfill %+v, want %d partitions done", prog, len(keys))
	}
	h.checkBatch(db)
}
