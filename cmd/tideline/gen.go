package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"tideline/examples/payments"
	"tideline/stream"
)

func genCmd() *cobra.Command {
	var c commonFlags
	var o stream.GenOptions
	var streamName, out, start, profile string
	cmd := &cobra.Command{
		Use:   "gen",
		Short: "Publish generated payments, with chosen disorder, lateness, duplicates and malformed events",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			s, err := c.spec()
			if err != nil {
				return err
			}
			st := s.Stream(streamName)
			if st == nil {
				return fmt.Errorf("cannot generate: the spec has no stream %q", streamName)
			}
			if start != "" {
				if o.Start, err = time.Parse(time.RFC3339, start); err != nil {
					return fmt.Errorf("cannot parse --start %q: write RFC 3339, like 2026-01-01T00:00:00Z", start)
				}
			}
			if out != "" {
				f, err := os.Create(out)
				if err != nil {
					return fmt.Errorf("cannot create --out file: %w", err)
				}
				defer f.Close()
				o.Out = f
			}
			newEvent := payments.Payment
			switch profile {
			case "payments":
			case "fraud":
				newEvent = payments.Fraud(0.005, 0.001)
			default:
				return fmt.Errorf("unknown --profile %q: use payments or fraud", profile)
			}
			nc, js, err := c.connect("gen")
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, stopProgress := context.WithCancel(ctx)
			go progress(ctx, nc)
			stats, err := stream.Generate(ctx, js, st, newEvent, o)
			stopProgress()
			slog.Info("generator done", "published", stats.Published, "valid", stats.Valid, "ooo", stats.OOO, "late", stats.Late,
				"dup", stats.Dup, "invalid", stats.Invalid, "elapsed", stats.Elapsed.Round(time.Millisecond))
			if err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	c.register(f)
	f.StringVar(&streamName, "stream", "payments", "stream to publish to")
	f.StringVar(&profile, "profile", "payments", "payments (ordinary), or fraud: with card-testing bursts and amount spikes, each payment labelled")
	f.Float64Var(&o.Rate, "rate", 100, "events per second (0: as fast as possible)")
	f.IntVar(&o.Count, "count", 0, "events to publish (0: until interrupted)")
	f.Float64Var(&o.OOO, "ooo", 0, "fraction of events out of order, within the stream's bound")
	f.Float64Var(&o.Late, "late", 0, "fraction of events later than the views' allowed lateness")
	f.Float64Var(&o.Dup, "dup", 0, "fraction of events published twice with the same id")
	f.Float64Var(&o.Invalid, "invalid", 0, "fraction of events malformed")
	f.Uint64Var(&o.Seed, "seed", uint64(time.Now().UnixNano()), "random seed, for a repeatable run")
	f.StringVar(&start, "start", "", "event time of the first event (RFC 3339); later ones follow at --rate. Default: the wall clock")
	f.StringVar(&out, "out", "", "write every published message to this NDJSON file, for oracles")
	return cmd
}

// progress logs what the connection has published, every few seconds.
func progress(ctx context.Context, nc *nats.Conn) {
	const every = 5 * time.Second
	t := time.NewTicker(every)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n := nc.Stats().OutMsgs
			slog.Info("publishing", "messages", n, "per_second", float64(n-last)/every.Seconds())
			last = n
		}
	}
}
