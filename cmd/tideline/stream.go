package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"tideline/stream"
)

func streamCmd() *cobra.Command {
	var c commonFlags
	var h httpFlags
	var setupOnly bool
	var replicas int
	var o stream.ProcessorOptions
	var g stream.GroupOptions
	cmd := &cobra.Command{
		Use:   "stream",
		Short: "Create the JetStream streams and run the speed layer: a processor per stream, or a share of a partitioned stream's partitions",
		Long: `stream creates or updates, idempotently, the JetStream stream and dead-letter
stream of every stream in the spec, a KV bucket per view and the checkpoint
bucket, then runs one processor per stream until interrupted.

Every tideline stream process running at once is a member of one group
per stream: each partition of a stream with partitions (partitions: N in
the spec), or an unpartitioned stream whole, is processed by one member,
and when a member stops or dies, or another joins, partitions move and
resume from their checkpoints. Give each member a distinct --member name
(the default is <host>-<pid>).

Its HTTP server has /metrics (Prometheus), /healthz and, as serve does too,
POST /v1/ingest/{stream} for NDJSON.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			s, err := c.spec()
			if err != nil {
				return err
			}
			nc, js, err := c.connect("stream")
			if err != nil {
				return err
			}
			defer nc.Close()
			if err := stream.Setup(ctx, js, s, stream.SetupOptions{Replicas: replicas}); err != nil {
				return err
			}
			slog.Info("streams ready", "streams", len(s.Streams), "views", len(s.Views), "nats", c.natsURL)
			if setupOnly {
				return nil
			}
			reg := newRegistry()
			o.Metrics = stream.NewMetrics(reg)
			mux := opsMux(reg)
			mux.Handle("POST /v1/ingest/{stream}", stream.NewIngester(js, s, o.Metrics))
			stop, err := h.serveOps(ctx, mux)
			if err != nil {
				return err
			}
			defer stop()

			var wg sync.WaitGroup
			errs := make([]error, len(s.Streams))
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			for i, st := range s.Streams {
				// Every stream runs as a group, so several processes can
				// run: each partition, or an unpartitioned stream whole,
				// is processed by one of them.
				g.Processor = o
				grp := stream.NewGroup(nc, js, st, g)
				wg.Go(func() {
					if errs[i] = grp.Run(ctx); errs[i] != nil {
						slog.Error("processor stopped", "stream", st.Name, "err", errs[i])
						cancel() // one stream failing stops the process, so a supervisor restarts it whole
					}
				})
			}
			wg.Wait()
			return errors.Join(errs...)
		},
	}
	f := cmd.Flags()
	c.register(f)
	h.register(f, "TIDELINE_STREAM_HTTP", "127.0.0.1:8081", "/metrics, /healthz and ingest", true)
	f.BoolVar(&setupOnly, "setup-only", false, "create or update the streams and buckets, then exit")
	f.IntVar(&replicas, "replicas", envInt("TIDELINE_REPLICAS", 1), "JetStream replicas of every stream and bucket: 3 on a 3-node NATS cluster (env TIDELINE_REPLICAS)")
	f.DurationVar(&o.FlushEvery, "flush-every", 25*time.Millisecond, "how often changed windows are published")
	f.DurationVar(&o.CheckpointEvery, "checkpoint-every", time.Second, "checkpoint at least this often")
	f.IntVar(&o.CheckpointEvents, "checkpoint-events", 100_000, "checkpoint at least every this many events")
	f.StringVar(&g.Name, "member", os.Getenv("TIDELINE_MEMBER"), "this process's name in the group of a partitioned stream, unique in it (default <host>-<pid>; env TIDELINE_MEMBER)")
	f.DurationVar(&g.LeaseTTL, "lease-ttl", 5*time.Second, "how long a partition waits for a member that stopped beating before another takes it")
	return cmd
}
