package main

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/spf13/cobra"

	"tideline/internal/devstack"
)

func devCmd() *cobra.Command {
	o := devstack.Options{Parts: devstack.All}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Start the whole stack locally: embedded NATS, the Temporal dev server and MinIO",
		Long: `dev starts every part tideline needs on this machine and keeps its state in
the data directory, so running it again resumes where it stopped. Ctrl-C stops
everything cleanly. bin/temporal and bin/minio come from 'make tools'.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := filepath.Abs(o.Dir)
			if err != nil {
				return fmt.Errorf("cannot resolve --data %q: %w", o.Dir, err)
			}
			o.Dir, o.Log = dir, slog.Default()
			s, err := devstack.Start(cmd.Context(), o)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "\ntideline dev is running; data in %s\n\n", dir)
			fmt.Fprintf(out, "  NATS            %s\n", s.NATS.URL)
			fmt.Fprintf(out, "  Temporal        %s (namespace %s)\n", s.Temporal.HostPort, s.Temporal.Namespace)
			fmt.Fprintf(out, "  Temporal UI     %s\n", s.Temporal.UIURL)
			fmt.Fprintf(out, "  MinIO S3 API    http://%s\n", s.MinIO.Endpoint)
			fmt.Fprintf(out, "  MinIO console   %s (user %s, password %s)\n\n", s.MinIO.ConsoleURL, s.MinIO.AccessKey, s.MinIO.SecretKey)
			fmt.Fprintln(out, "Press Ctrl-C to stop.")
			select {
			case <-cmd.Context().Done():
			case <-s.Temporal.Exited():
				slog.Error("the Temporal dev server exited; stopping", "log", filepath.Join(dir, "temporal.log"))
			}
			slog.Info("stopping")
			return s.Stop()
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "data", envOr("TIDELINE_DATA", ".tideline"), "data directory (env TIDELINE_DATA)")
	f.StringVar(&o.BinDir, "bin", "", "directory holding temporal and minio (default: beside this binary, or ./bin)")
	f.IntVar(&o.NATSPort, "nats-port", 4222, "NATS client port")
	f.IntVar(&o.TemporalPort, "temporal-port", 7233, "Temporal frontend port")
	f.IntVar(&o.TemporalUIPort, "temporal-ui-port", 8233, "Temporal web UI port")
	f.IntVar(&o.MinIOPort, "minio-port", 9000, "MinIO S3 API port")
	f.IntVar(&o.MinIOConsolePort, "minio-console-port", 9001, "MinIO console port")
	return cmd
}
