package main

import "github.com/spf13/cobra"

func devCmd() *cobra.Command {
	return &cobra.Command{Use: "dev", Short: "Start the whole stack locally", RunE: func(*cobra.Command, []string) error { return nil }}
}
