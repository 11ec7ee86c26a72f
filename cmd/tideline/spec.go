package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"tideline/lake"
	"tideline/score"
	"tideline/spec"
)

func specCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "spec", Short: "Work with pipeline specs"}
	var against string
	check := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a spec and print its streams and views, or every error in it; with --against, check it can read what a lake holds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := loadSpec(cmd, args[0])
			if err != nil {
				return err
			}
			if against != "" {
				l := lakeFlags{url: against}
				store, err := l.open(cmd.Context())
				if err != nil {
					return err
				}
				if err := lake.CheckSpec(cmd.Context(), store, s); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s can read every row the lake at %s holds\n\n", s.File, store)
			}
			printSpec(cmd, s)
			return nil
		},
	}
	check.Flags().StringVar(&against, "against", "", "a lake URL (s3://bucket/prefix or file:///path): refuse a contract change that cannot read the rows it holds")
	cmd.AddCommand(check, &cobra.Command{
		Use:   "diff OLD NEW",
		Short: "Print how two specs differ, and whether each contract change is compatible; exits 1 if one is breaking",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			old, err := loadSpec(cmd, args[0])
			if err != nil {
				return err
			}
			new, err := loadSpec(cmd, args[1])
			if err != nil {
				return err
			}
			breaking := printDiff(cmd.OutOrStdout(), old, new)
			if breaking > 0 {
				return fmt.Errorf("%d breaking change(s) from %s to %s: rows written with the old contract could not be read", breaking, args[0], args[1])
			}
			return nil
		},
	})
	return cmd
}

// loadSpec loads a spec and, if it has a scoring section, compiles its
// rules as the scorer does, printing every problem at its place.
func loadSpec(cmd *cobra.Command, path string) (*spec.Spec, error) {
	s, err := spec.Load(path)
	if err == nil && s.Scoring != nil {
		err = score.Check(s.Scoring)
	}
	var list spec.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(cmd.ErrOrStderr(), e)
		}
		return nil, fmt.Errorf("%s has %d error(s)", path, len(list))
	}
	return s, err
}

// printDiff prints the streams and views added and removed, each contract
// change, and the views whose definition changed (their batch results are
// recomputed), and returns how many changes are breaking.
func printDiff(w io.Writer, old, new *spec.Spec) int {
	breaking, lines := 0, 0
	say := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...); lines++ }
	for _, st := range new.Streams {
		o := old.Stream(st.Name)
		if o == nil {
			say("stream %s: added", st.Name)
			continue
		}
		for _, ch := range spec.CompareContracts(o.Contract.Doc(), st.Contract.Doc()) {
			say("stream %s: %s", st.Name, ch)
			if ch.Breaking {
				breaking++
			}
		}
	}
	for _, st := range old.Streams {
		if new.Stream(st.Name) == nil {
			say("stream %s: removed (its lake tables stay; nothing reads them)", st.Name)
		}
	}
	for _, v := range new.Views {
		switch o := old.View(v.Name); {
		case o == nil:
			say("view %s: added; its history is computed from the lake by the next compaction, or now with `tideline backfill %s`", v.Name, v.Name)
		case o.SQL("input") != v.SQL("input"):
			say("view %s: changed; every partition is recomputed from the lake", v.Name)
		}
	}
	for _, v := range old.Views {
		if new.View(v.Name) == nil {
			say("view %s: removed (its lake tables stay; nothing reads them)", v.Name)
		}
	}
	if lines == 0 {
		fmt.Fprintln(w, "no change")
	}
	return breaking
}

func printSpec(cmd *cobra.Command, s *spec.Spec) {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "%s: ok, %d stream(s), %d view(s)\n\n", s.File, len(s.Streams), len(s.Views))
	for _, st := range s.Streams {
		c := st.Contract
		parts := ""
		if st.Partitioned() {
			parts = fmt.Sprintf("  partitions=%d", st.Partitions)
		}
		fmt.Fprintf(out, "stream %s  subjects=%s  id=%s  event_time=%s  partition=%s%s  fields=%d\n",
			st.Name, strings.Join(st.Subjects, ","), c.Fields[c.ID].Name, c.Fields[c.Time].Name, st.Partition, parts, len(c.Fields))
	}
	fmt.Fprintln(out)
	for _, v := range s.Views {
		window := v.Window.String()
		dims := make([]string, len(v.GroupBy))
		for i, g := range v.GroupBy {
			dims[i] = g.Name
		}
		ms := make([]string, len(v.Measures))
		for i, m := range v.Measures {
			ms[i] = m.Name + "=" + string(m.Kind)
			if m.Arg != nil {
				ms[i] += "(" + m.Arg.Name + ")"
			}
		}
		fmt.Fprintf(out, "view %s  stream=%s  window=%s  lateness=%s  group_by=[%s]  measures=[%s]\n",
			v.Name, v.Stream.Name, window, v.Lateness, strings.Join(dims, ","), strings.Join(ms, ", "))
	}
}
