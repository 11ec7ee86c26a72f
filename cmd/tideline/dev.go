package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tideline/internal/devstack"
	"tideline/workflows"
)

// devOptions are `tideline dev`'s flags.
type devOptions struct {
	stack    devstack.Options
	specPath string
	lake     string
	noGen    bool
	genRate  float64
	serveAt  string
	streamAt string
	workerAt string
	scoreAt  string
}

func devCmd() *cobra.Command {
	o := devOptions{stack: devstack.Options{Parts: devstack.All}}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole system locally: NATS, Temporal, MinIO, the speed layer, the batch worker, serve and a generator",
		Long: `dev starts everything tideline needs on this machine, in one command:
embedded NATS with JetStream, the Temporal dev server with its UI and MinIO
with its console; then tideline's own processes (stream, worker, serve,
score), each restarted if it dies, and a generator publishing payments with
some fraud in them at a modest rate unless --no-gen.

State lives in the data directory, so running it again resumes from what is
there. Ctrl-C stops everything cleanly. With --lake file:///path the lake is
a local directory and MinIO is not started. bin/temporal and bin/minio come
from 'make tools'; each process logs to <data>/logs/<name>.log.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), cmd, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.stack.Dir, "data", envOr("TIDELINE_DATA", ".tideline"), "data directory (env TIDELINE_DATA)")
	f.StringVar(&o.stack.BinDir, "bin", "", "directory holding temporal and minio (default: beside this binary, or ./bin)")
	f.StringVar(&o.specPath, "spec", envOr("TIDELINE_SPEC", "examples/payments/tideline.yaml"), "pipeline spec file (env TIDELINE_SPEC)")
	f.StringVar(&o.lake, "lake", "", "lake URL; default s3://tideline/lake on the MinIO this starts, or file:///path to run without MinIO")
	f.BoolVar(&o.noGen, "no-gen", false, "do not start the generator")
	f.Float64Var(&o.genRate, "gen-rate", 50, "payments per second the generator publishes")
	f.IntVar(&o.stack.NATSPort, "nats-port", 4222, "NATS client port")
	f.IntVar(&o.stack.TemporalPort, "temporal-port", 7233, "Temporal frontend port")
	f.IntVar(&o.stack.TemporalUIPort, "temporal-ui-port", 8233, "Temporal web UI port")
	f.IntVar(&o.stack.MinIOPort, "minio-port", 9000, "MinIO S3 API port")
	f.IntVar(&o.stack.MinIOConsolePort, "minio-console-port", 9001, "MinIO console port")
	f.StringVar(&o.serveAt, "http", "127.0.0.1:8080", "address of serve: the dashboard and the API")
	f.StringVar(&o.streamAt, "stream-http", "127.0.0.1:8081", "address of the speed layer's /metrics and ingest")
	f.StringVar(&o.workerAt, "worker-http", "127.0.0.1:8082", "address of the worker's /metrics")
	f.StringVar(&o.scoreAt, "score-http", "127.0.0.1:8083", "address of the scorer's /metrics")
	return cmd
}

func runDev(ctx context.Context, cmd *cobra.Command, o devOptions) error {
	dir, err := filepath.Abs(o.stack.Dir)
	if err != nil {
		return fmt.Errorf("cannot resolve --data %q: %w", o.stack.Dir, err)
	}
	specPath, err := filepath.Abs(o.specPath)
	if err != nil {
		return fmt.Errorf("cannot resolve --spec %q: %w", o.specPath, err)
	}
	c := commonFlags{specPath: specPath}
	if _, err := c.spec(); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find this binary to run its subcommands: %w", err)
	}
	fileLake := strings.HasPrefix(o.lake, "file://")
	o.stack.Parts.MinIO = !fileLake
	o.stack.Dir, o.stack.Log = dir, slog.Default()
	s, err := devstack.Start(ctx, o.stack)
	if err != nil {
		return err
	}
	lakeURL := o.lake
	env := []string{
		"TIDELINE_SPEC=" + specPath,
		"TIDELINE_NATS_URL=" + s.NATS.URL,
		"TIDELINE_TEMPORAL=" + s.Temporal.HostPort,
		"TIDELINE_NAMESPACE=" + s.Temporal.Namespace,
	}
	if !fileLake {
		if lakeURL == "" {
			lakeURL = "s3://tideline/lake"
		}
		env = append(env, "TIDELINE_S3_ENDPOINT="+s.MinIO.Endpoint, "TIDELINE_S3_ACCESS_KEY="+s.MinIO.AccessKey, "TIDELINE_S3_SECRET_KEY="+s.MinIO.SecretKey)
	}
	env = append(env, "TIDELINE_LAKE="+lakeURL)
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", logs, err)
	}
	// Each process gets its own cache: two processes must not evict each
	// other's files.
	run := func(name string, args ...string) *devstack.Service {
		e := append(env, "TIDELINE_CACHE="+filepath.Join(dir, "cache", name))
		return devstack.StartService(name, exe, args, e, filepath.Join(logs, name+".log"), slog.Default())
	}
	services := []*devstack.Service{
		run("stream", "stream", "--http", o.streamAt),
		run("worker", "worker", "--http", o.workerAt),
		run("serve", "serve", "--http", o.serveAt),
		run("score", "score", "--http", o.scoreAt),
	}
	if !o.noGen {
		services = append(services, run("gen", "gen", "--profile", "fraud", "--rate", fmt.Sprint(o.genRate), "--ooo", "0.05", "--late", "0.002", "--dup", "0.01", "--invalid", "0.002"))
	}
	stop := func() error {
		slog.Info("stopping")
		for i := len(services) - 1; i >= 0; i-- {
			services[i].Stop()
		}
		return s.Stop()
	}
	if err := waitHTTP(ctx, "http://"+o.serveAt+"/readyz", 60*time.Second); err != nil {
		slog.Warn("serve is not ready yet; see its log", "err", err, "log", filepath.Join(logs, "serve.log"))
	}

	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "\ntideline dev is running; data in %s, logs in %s\n\n", dir, logs)
	fmt.Fprintf(out, "  Dashboard       http://%s/\n", o.serveAt)
	fmt.Fprintf(out, "  API             http://%s/v1/status  (tideline query \"SELECT ...\")\n", o.serveAt)
	fmt.Fprintf(out, "  Temporal UI     %s\n", s.Temporal.UIURL)
	if s.MinIO != nil {
		fmt.Fprintf(out, "  MinIO console   %s (user %s, password %s)\n", s.MinIO.ConsoleURL, s.MinIO.AccessKey, s.MinIO.SecretKey)
	}
	fmt.Fprintf(out, "  NATS            %s\n", s.NATS.URL)
	fmt.Fprintf(out, "  Temporal        %s (namespace %s)\n", s.Temporal.HostPort, s.Temporal.Namespace)
	fmt.Fprintf(out, "  Lake            %s\n\n", lakeURL)
	fmt.Fprintf(out, "  Score a payment nats req payments.score '{\"payment_id\":\"p-1\",\"ts\":\"%s\",\"card_id\":\"card-00001\",\"merchant_id\":\"m-0001\",\"country\":\"US\",\"amount\":\"12.50\",\"currency\":\"USD\",\"channel\":\"pos\"}' -s %s\n\n",
		time.Now().UTC().Format(time.RFC3339), s.NATS.URL)
	fmt.Fprint(out, backfillHint(time.Now()))
	fmt.Fprintln(out, "\nPress Ctrl-C to stop.")
	select {
	case <-ctx.Done():
	case <-s.Temporal.Exited():
		slog.Error("the Temporal dev server exited; stopping", "log", filepath.Join(dir, "temporal.log"))
	}
	return stop()
}

// backfillHint is what to type in the Temporal UI to start a backfill of
// the last hour.
func backfillHint(now time.Time) string {
	to := now.UTC().Truncate(time.Hour).Add(time.Hour)
	in, _ := json.Marshal(workflows.BackfillInput{View: "*", From: to.Add(-2 * time.Hour), To: to, Mode: "all"})
	return fmt.Sprintf(`To backfill from the Temporal UI: Workflows > Start Workflow, then
  Workflow ID     backfill-manual-1
  Task Queue      %s
  Workflow Type   Backfill
  Input (JSON)    %s
`, workflows.TaskQueue, in)
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s answered %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready after %s: %w", timeout, last)
}
