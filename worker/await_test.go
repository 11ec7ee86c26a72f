package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"tideline/examples/payments"
	"tideline/stream"
	"tideline/workflows"
)

// TestTwoBackfillsOfAnUnsealedRange starts the same backfill twice at once
// over the current minute, which compaction has not sealed yet, on a
// worker with 2 activity slots. The second backfill waits for the
// partitions the first one started; compaction must still get a slot to
// seal them, or nothing ever finishes (the fault suite's stall: the waits
// held every slot).
func TestTwoBackfillsOfAnUnsealedRange(t *testing.T) {
	h := startHarness(t)
	h.startWorker()
	ctx := t.Context()
	now := time.Now().UTC()
	if _, err := stream.Generate(ctx, h.js, h.spec.Stream("payments"), payments.Payment, stream.GenOptions{Count: 200, Start: now, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	h.compact("unsealed-first") // the plan finds raw data; the minute is not over, so not sealed
	from := now.Truncate(time.Minute)
	in := workflows.BackfillInput{View: "*", From: from, To: from.Add(time.Minute), Mode: "all", Parallelism: 2}
	var runs []client.WorkflowRun
	for i := range 2 {
		run, err := h.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprint("unsealed-", i), TaskQueue: workflows.TaskQueue}, workflows.Backfill, in)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, run)
		time.Sleep(time.Second) // the second finds the first's partitions running
	}
	// Compact as the schedule would, until both backfills are done.
	done := make(chan error, len(runs))
	for _, run := range runs {
		go func() {
			var p workflows.BackfillProgress
			err := run.Get(ctx, &p)
			if err == nil && (p.Done != p.Total || p.Total == 0) {
				err = fmt.Errorf("progress %+v", p)
			}
			done <- err
		}()
	}
	deadline := time.Now().Add(3 * time.Minute)
	for finished := 0; finished < len(runs); {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("backfill: %v", err)
			}
			finished++
			continue
		case <-time.After(3 * time.Second):
		}
		if time.Now().After(deadline) {
			t.Fatal("the two backfills did not finish within 3 minutes: is an activity slot held while waiting?")
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		run, err := h.tc.ExecuteWorkflow(cctx, client.StartWorkflowOptions{ID: fmt.Sprint("unsealed-compact-", time.Now().UnixNano()), TaskQueue: workflows.TaskQueue},
			workflows.Compaction, workflows.CompactionInput{Stream: "payments"})
		if err == nil {
			err = run.Get(cctx, nil)
		}
		cancel()
		if err != nil {
			t.Fatalf("compaction while two backfills wait for sealing: %v (every activity slot taken by a wait?)", err)
		}
	}
}
