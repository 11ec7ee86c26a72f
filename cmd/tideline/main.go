// Command tideline is the one binary of tideline: each subcommand starts one
// part of the system (see `tideline --help`).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "tideline:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "tideline",
		Short:         "Real-time analytics that are fresh above the tideline and exact below it",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	logLevel := root.PersistentFlags().String("log-level", envOr("TIDELINE_LOG_LEVEL", "info"), "log level: debug, info, warn or error (env TIDELINE_LOG_LEVEL)")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
			return fmt.Errorf("cannot parse --log-level %q: use debug, info, warn or error", *logLevel)
		}
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
		return nil
	}
	root.AddCommand(specCmd(), devCmd(), streamCmd(), genCmd(), workerCmd(), compactCmd(), backfillCmd(), serveCmd(), scoreCmd(), queryCmd(), lakeCmd(), healthcheckCmd())
	return root
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// envInt is envOr for a whole number; a value that is not one stops the
// program with a message naming the variable.
func envInt(key string, def int) int {
	v := envOr(key, strconv.Itoa(def))
	n, err := strconv.Atoi(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tideline: %s=%q is not a whole number; unset it or give one\n", key, v)
		os.Exit(2)
	}
	return n
}
