package main

import (
	"log/slog"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"tideline/serve"
	"tideline/stream"
)

func serveCmd() *cobra.Command {
	var c commonFlags
	var l lakeFlags
	var cfg serve.Config
	var h httpFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the merged views: HTTP API, read-only SQL, live updates and ingest",
		Long: `serve keeps one DuckDB view per spec view, batch-exact below the view's
tideline and speed-fresh above it, following new lake commits and the speed
layer's windows, and answers on --http:

  GET  /v1/views/{view}?from=&to=&<dim>=<value>   windows of a view, with their source
  GET  /v1/views/{view}/live                      server-sent window updates
  POST /v1/query {"sql": "SELECT ..."}            one read-only SELECT, time and row limited
  GET  /v1/status                                 tideline, watermark, compaction, corrections per view
  POST /v1/ingest/{stream}                        NDJSON events, validated line by line
  /healthz, /readyz, /metrics`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			d, err := openData(ctx, &c, &l, "serve")
			if err != nil {
				return err
			}
			defer d.nc.Close()
			s, nc, js, store := d.spec, d.nc, d.js, d.store
			reg := newRegistry()
			cfg.Spec, cfg.Store, cfg.NC, cfg.JS, cfg.Registry, cfg.Log = s, store, nc, js, reg, slog.Default()
			if cfg.Token, err = h.token(); err != nil {
				return err
			}
			cfg.CacheDir, cfg.CacheBytes = filepath.Join(l.cacheDir, "serve"), l.cacheBytes
			cfg.TempDir = filepath.Join(l.cacheDir, "serve-tmp")
			srv, err := serve.Open(ctx, cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			stop, err := serveHTTP(ctx, h.addr, srv.Handler(stream.NewIngester(js, s, stream.NewMetrics(reg)), reg))
			if err != nil {
				return err
			}
			defer stop()
			slog.Info("serving", "http", h.addr, "lake", store.String(), "views", len(s.Views))
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	c.register(f)
	l.register(f)
	h.register(f, "TIDELINE_SERVE_HTTP", "127.0.0.1:8080", "the API and the dashboard", false)
	f.DurationVar(&cfg.QueryTimeout, "query-timeout", 5*time.Second, "longest a query may run")
	f.IntVar(&cfg.MaxRows, "max-rows", 100_000, "most rows a query may return")
	f.Int64Var(&cfg.MaxResponseBytes, "max-response-bytes", serve.DefaultMaxResponseBytes, "most bytes of JSON one query's answer may take; the answer is cut there with an error")
	f.IntVar(&cfg.MaxQueries, "max-queries", serve.DefaultMaxQueries, "SQL queries running at once; past it a query gets 429 at once")
	f.Int64Var(&cfg.MemoryLimit, "memory-limit", serve.DefaultMemoryLimit, "DuckDB's memory limit in bytes, for every query and refresh together")
	f.IntVar(&cfg.Threads, "threads", runtime.NumCPU(), "DuckDB's threads")
	f.Int64Var(&cfg.MaxTempBytes, "max-temp-bytes", serve.DefaultMaxTempBytes, "most bytes DuckDB may spill to its temp directory (<cache>/serve-tmp)")
	f.DurationVar(&cfg.StaleAfter, "stale-after", 30*time.Second, "how far the speed layer may trail the stream before views answer from batch alone")
	f.IntVar(&cfg.IndexMaxRows, "index-max-rows", 5_000_000, "batch rows per view held in memory for GET /v1/views; past it, that view's reads run SQL")
	f.DurationVar(&cfg.RefreshEvery, "refresh-every", time.Second, "how often new lake commits and speed windows are swapped in")
	return cmd
}
