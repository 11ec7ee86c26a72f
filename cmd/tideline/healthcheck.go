package main

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// healthcheckCmd is the health check of tideline's container image, which
// has no curl or wget: the runtime image is debian:bookworm-slim with
// nothing installed, so building it needs no package mirror.
func healthcheckCmd() *cobra.Command {
	timeout := 3 * time.Second
	cmd := &cobra.Command{
		Use:   "healthcheck URL",
		Short: "GET URL and exit 0 if it answers 2xx (the container image's health check)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := &http.Client{Timeout: timeout}
			resp, err := c.Get(args[0])
			if err != nil {
				return fmt.Errorf("cannot check %s: %w", args[0], err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("%s answered %s: %s", args[0], resp.Status, body)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "give up after this long")
	return cmd
}
