package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"tideline/spec"
)

func specCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "spec", Short: "Work with pipeline specs"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Validate a spec and print its streams and views, or every error in it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := spec.Load(args[0])
			var list spec.ErrorList
			if errors.As(err, &list) {
				for _, e := range list {
					fmt.Fprintln(cmd.ErrOrStderr(), e)
				}
				return fmt.Errorf("%s has %d error(s)", args[0], len(list))
			}
			if err != nil {
				return err
			}
			printSpec(cmd, s)
			return nil
		},
	})
	return cmd
}

func printSpec(cmd *cobra.Command, s *spec.Spec) {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "%s: ok, %d stream(s), %d view(s)\n\n", s.File, len(s.Streams), len(s.Views))
	for _, st := range s.Streams {
		c := st.Contract
		fmt.Fprintf(out, "stream %s  subjects=%s  id=%s  event_time=%s  partition=%s  fields=%d\n",
			st.Name, strings.Join(st.Subjects, ","), c.Fields[c.ID].Name, c.Fields[c.Time].Name, st.Partition, len(c.Fields))
	}
	fmt.Fprintln(out)
	for _, v := range s.Views {
		window := v.Size.String()
		if !v.Tumbling() {
			window += " every " + v.Hop.String()
		}
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
