package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"tideline/examples/payments"
	"tideline/lake"
	"tideline/score"
)

func scoreCmd() *cobra.Command {
	var c commonFlags
	var l lakeFlags
	var h httpFlags
	var loadEvery time.Duration
	cmd := &cobra.Command{
		Use:   "score",
		Short: "Run the fraud scorer: decide every payment, publish decisions, answer payments.score",
		Long: `score scores every payment of the spec's scoring stream with its rules,
from speed features (the card's recent payments, kept by the scorer), batch
features (the card's 30 days, from the lake's card_country_minute view) and
the merchant table in the lake (seeded with the example's merchants when
missing). Each decision goes to the decisions stream; a client can also send
a payment by NATS request-reply to payments.score and get its decision.

When the lake is unreachable, rules needing history do not hold and
decisions say fallback: true. /metrics and /healthz are on --http.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			d, err := openData(ctx, &c, &l, "score")
			if err != nil {
				return err
			}
			defer d.nc.Close()
			if d.spec.Scoring == nil {
				return fmt.Errorf("the spec %s has no scoring section; see examples/payments/tideline.yaml", c.specPath)
			}
			if err := score.CheckBatchView(d.spec); err != nil {
				return err
			}
			if err := score.SeedMerchants(ctx, d.store, exampleMerchants()); err != nil {
				slog.Warn("cannot seed the merchant table; scoring without it until the lake answers", "err", err)
			}
			db, err := lake.OpenDuckDB(ctx, "")
			if err != nil {
				return err
			}
			defer db.Close()
			cache, err := lake.NewCache(filepath.Join(l.cacheDir, "score"), l.cacheBytes)
			if err != nil {
				return err
			}
			reg := newRegistry()
			mux := opsMux(reg)
			stop, err := h.serveOps(ctx, mux)
			if err != nil {
				return err
			}
			defer stop()
			scorer, err := score.New(d.spec.Scoring)
			if err != nil {
				return fmt.Errorf("cannot score with %s:\n%w", c.specPath, err)
			}
			r := &score.Runner{
				Scorer: scorer, NC: d.nc, JS: d.js,
				Loader:    &score.Loader{Spec: d.spec, Catalog: lake.NewCatalog(db, d.store, cache), Store: d.store},
				LoadEvery: loadEvery, Metrics: score.NewMetrics(reg), Log: slog.Default(),
			}
			return r.Run(ctx)
		},
	}
	f := cmd.Flags()
	c.register(f)
	l.register(f)
	h.register(f, "TIDELINE_SCORE_HTTP", "127.0.0.1:8083", "/metrics and /healthz", true)
	f.DurationVar(&loadEvery, "load-every", 15*time.Second, "how often the lake's features are checked for change")
	return cmd
}

// exampleMerchants is the payments example's merchant table, which the
// scorer seeds into a lake that has none.
func exampleMerchants() map[string]score.Merchant {
	out := map[string]score.Merchant{}
	for _, m := range payments.MerchantTable() {
		out[m.ID] = score.Merchant{Category: m.Category, Risk: m.Risk}
	}
	return out
}
