package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"tideline/activities"
	"tideline/lake"
	"tideline/worker"
	"tideline/workflows"
)

func workerCmd() *cobra.Command {
	var c commonFlags
	var l lakeFlags
	var t temporalFlags
	var h httpFlags
	var noSchedules bool
	var activitiesAtOnce, chunk int
	var speedGrace time.Duration
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run the batch layer: a Temporal worker for compaction, backfill and tideline advance",
		Long: `worker registers tideline's workflows and activities on task queue "tideline",
adds the search attributes backfills report progress in, creates or updates one
compaction Schedule per stream (every compact_every of the spec), and runs
until interrupted. Any number of workers may run at once.

Its HTTP server has /metrics (Prometheus) and /healthz.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			d, err := openData(ctx, &c, &l, "worker")
			if err != nil {
				return err
			}
			defer d.nc.Close()
			s, js, store := d.spec, d.js, d.store
			db, err := lake.OpenDuckDB(ctx, "")
			if err != nil {
				return err
			}
			defer db.Close()
			cache, err := lake.NewCache(l.cacheDir, l.cacheBytes)
			if err != nil {
				return err
			}
			tc, err := t.dial(ctx)
			if err != nil {
				return err
			}
			defer tc.Close()
			reg := newRegistry()
			acts, err := activities.New(activities.Config{
				Spec: s, Store: store, JS: js, DB: db, Cache: cache, Temporal: tc, ChunkMessages: chunk, SpeedGrace: speedGrace,
				Metrics: activities.NewMetrics(reg), Log: slog.Default(),
			})
			if err != nil {
				return err
			}
			if err := worker.EnsureSearchAttributes(ctx, tc, t.namespace); err != nil {
				return err
			}
			if !noSchedules {
				if err := worker.EnsureSchedules(ctx, tc, s, slog.Default()); err != nil {
					return err
				}
			}
			mux := opsMux(reg)
			stop, err := h.serveOps(ctx, mux)
			if err != nil {
				return err
			}
			defer stop()
			w := worker.New(tc, acts, sdkworker.Options{
				MaxConcurrentActivityExecutionSize: activitiesAtOnce,
				EnableSessionWorker:                false,
			})
			slog.Info("worker running", "task_queue", workflows.TaskQueue, "temporal", t.hostPort, "lake", store.String())
			return w.Run(ctxInterrupt(ctx))
		},
	}
	f := cmd.Flags()
	c.register(f)
	l.register(f)
	t.register(f)
	h.register(f, "TIDELINE_WORKER_HTTP", "127.0.0.1:8082", "/metrics and /healthz", true)
	f.BoolVar(&noSchedules, "no-schedules", false, "do not create or update the compaction schedules")
	f.IntVar(&activitiesAtOnce, "activities", 4, "most activities this worker runs at once")
	f.IntVar(&chunk, "chunk", 250_000, "messages compaction commits at once")
	f.DurationVar(&speedGrace, "speed-grace", 2*time.Minute, "how long the tideline waits for a speed layer that has stopped writing its watermark before passing partitions it has not closed")
	return cmd
}

// ctxInterrupt turns ctx's end into the channel worker.Run stops on.
func ctxInterrupt(ctx context.Context) <-chan any {
	ch := make(chan any)
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch
}

func compactCmd() *cobra.Command {
	var t temporalFlags
	var streamName string
	var wait bool
	cmd := &cobra.Command{
		Use:   "compact",
		Short: "Start a compaction run of a stream now (the worker's schedule also runs it)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if streamName == "" {
				return errors.New("cannot compact: name the stream with --stream")
			}
			tc, err := t.dial(ctx)
			if err != nil {
				return err
			}
			defer tc.Close()
			run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
				ID: "compact/" + streamName + "/manual", TaskQueue: workflows.TaskQueue,
				WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
			}, workflows.Compaction, workflows.CompactionInput{Stream: streamName})
			if err != nil {
				return fmt.Errorf("cannot start compaction of %s: %w", streamName, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "compaction of %s started: workflow %s, run %s\n", streamName, run.GetID(), run.GetRunID())
			if !wait {
				return nil
			}
			var res workflows.CompactionResult
			err = run.Get(ctx, &res)
			printJSON(out, res)
			return err
		},
	}
	f := cmd.Flags()
	t.register(f)
	f.StringVar(&streamName, "stream", "", "the stream to compact")
	f.BoolVar(&wait, "wait", false, "wait for the run and print its result")
	return cmd
}

func backfillCmd() *cobra.Command {
	var t temporalFlags
	var in workflows.BackfillInput
	var from, to string
	var wait bool
	cmd := &cobra.Command{
		Use:   "backfill",
		Short: "Recompute a range of a view's partitions (the same Backfill workflow the Temporal UI starts)",
		Example: `  tideline backfill --view merchant_minute --from 2026-11-25T00:00:00Z --to 2026-11-26T00:00:00Z --wait
  tideline backfill --view '*' --from 2026-11-25T00:00:00Z --to 2026-11-26T00:00:00Z --mode failed`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var err error
			if in.From, err = time.Parse(time.RFC3339, from); err != nil {
				return fmt.Errorf("cannot parse --from %q: write RFC 3339, like 2026-11-25T00:00:00Z", from)
			}
			if in.To, err = time.Parse(time.RFC3339, to); err != nil {
				return fmt.Errorf("cannot parse --to %q: write RFC 3339, like 2026-11-26T00:00:00Z", to)
			}
			tc, err := t.dial(ctx)
			if err != nil {
				return err
			}
			defer tc.Close()
			// The same range and mode started twice at once is one run.
			id := fmt.Sprintf("backfill/%s/%s/%s/%s", in.View, in.From.UTC().Format(time.RFC3339), in.To.UTC().Format(time.RFC3339), in.Mode)
			run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
				ID: id, TaskQueue: workflows.TaskQueue,
				WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
			}, workflows.Backfill, in)
			if err != nil {
				return fmt.Errorf("cannot start backfill: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "backfill started: workflow %s, run %s\n", run.GetID(), run.GetRunID())
			if !wait {
				return nil
			}
			return waitBackfill(ctx, tc, run, out)
		},
	}
	f := cmd.Flags()
	t.register(f)
	f.StringVar(&in.View, "view", "", `the view, or "*" for all`)
	f.StringVar(&from, "from", "", "first partition start, RFC 3339")
	f.StringVar(&to, "to", "", "end of the range (exclusive), RFC 3339")
	f.StringVar(&in.Mode, "mode", activities.ModeMissing, "missing (no batch result), failed (last run failed) or all")
	f.IntVar(&in.Parallelism, "parallelism", 4, "partitions at once")
	f.BoolVar(&wait, "wait", false, "wait, showing progress, and print the result")
	return cmd
}

// waitBackfill shows a progress bar from the progress query until the run
// (and the runs it continues as) ends.
func waitBackfill(ctx context.Context, tc client.Client, run client.WorkflowRun, out io.Writer) error {
	done := make(chan error, 1)
	var res workflows.BackfillProgress
	go func() { done <- run.Get(ctx, &res) }() // follows continue-as-new
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			fmt.Fprintln(out)
			printJSON(out, res)
			return err
		case <-tick.C:
			v, err := tc.QueryWorkflow(ctx, run.GetID(), "", workflows.ProgressQuery)
			if err != nil {
				continue // between runs of a continue-as-new
			}
			var p workflows.BackfillProgress
			if v.Get(&p) == nil {
				fmt.Fprintf(out, "\r%s", progressBar(p))
			}
		}
	}
}

func progressBar(p workflows.BackfillProgress) string {
	const width = 30
	n := 0
	if p.Total > 0 {
		n = (p.Done + p.Failed) * width / p.Total
	}
	return fmt.Sprintf("[%s%s] %d/%d done, %d running, %d failed, %d left", strings.Repeat("#", n), strings.Repeat(".", width-n), p.Done, p.Total, p.Running, p.Failed, p.Left)
}

func printJSON(w io.Writer, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(w, string(b))
}
