package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"tideline/lake"
)

func lakeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "lake", Short: "Look at the lake's tables"}
	var c commonFlags
	var l lakeFlags
	stats := &cobra.Command{
		Use:   "stats",
		Short: "Print per table: live files and bytes, unreferenced objects (what Vacuum will delete), log objects, oldest and newest partition",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			s, err := c.spec()
			if err != nil {
				return err
			}
			store, err := l.open(ctx)
			if err != nil {
				return err
			}
			var tables []string
			for _, st := range s.Streams {
				tables = append(tables, lake.RawTable(st.Name))
			}
			for _, v := range s.Views {
				tables = append(tables, lake.ViewTable(v.Name), lake.CorrectionsTable(v.Name))
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(w, "table\tversion\tlive files\tlive bytes\tunreferenced\tunref. bytes\tlog objects\toldest partition\tnewest partition\tretained from\t")
			for _, name := range tables {
				st, err := lake.Stats(ctx, store, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", name, st.Version, st.LiveFiles, st.LiveBytes,
					st.Unreferenced, st.UnreferencedBytes, st.LogObjects, dash(st.Oldest), dash(st.Newest), dash(st.RetainedFrom))
			}
			return w.Flush()
		},
	}
	c.register(stats.Flags())
	l.register(stats.Flags())
	cmd.AddCommand(stats)
	return cmd
}

func dash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
