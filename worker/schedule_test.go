package worker

import (
	"log/slog"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"tideline/internal/devstack"
	"tideline/internal/stacktest"
)

// TestSchedulesAreIdempotentAndFollowTheSpec creates the compaction and
// maintenance schedules on the real dev server twice, then again after
// compact_every changes: one of each per stream, with the spec's interval.
func TestSchedulesAreIdempotentAndFollowTheSpec(t *testing.T) {
	stack := devstack.StartForTest(t, devstack.Parts{Temporal: true})
	ctx := t.Context()
	tc, err := client.Dial(client.Options{HostPort: stack.Temporal.HostPort, Logger: tlog.NewStructuredLogger(quiet)})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	s := stacktest.FastSpec(t)
	for range 2 {
		if err := EnsureSchedules(ctx, tc, s, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
	}
	every := func(id string) time.Duration {
		d, err := tc.ScheduleClient().GetHandle(ctx, id).Describe(ctx)
		if err != nil {
			t.Fatalf("schedule %s: %v", id, err)
		}
		if n := len(d.Schedule.Spec.Intervals); n != 1 {
			t.Fatalf("schedule %s has %d intervals", id, n)
		}
		return d.Schedule.Spec.Intervals[0].Every
	}
	for _, st := range s.Streams {
		if got := every(ScheduleID(st.Name)); got != st.CompactEvery {
			t.Errorf("schedule of %s runs every %s, the spec says %s", st.Name, got, st.CompactEvery)
		}
		if got := every(MaintainScheduleID(st.Name)); got != MaintainEvery {
			t.Errorf("maintenance of %s runs every %s, want %s", st.Name, got, MaintainEvery)
		}
	}
	it, err := tc.ScheduleClient().List(ctx, client.ScheduleListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for it.HasNext() {
		if _, err := it.Next(); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2*len(s.Streams) {
		t.Errorf("%d schedules after creating them twice, want two per stream (%d)", n, 2*len(s.Streams))
	}
	s.Streams[0].CompactEvery = 7 * time.Minute
	if err := EnsureSchedules(ctx, tc, s, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got := every(ScheduleID(s.Streams[0].Name)); got != 7*time.Minute {
		t.Errorf("after the spec changed, the schedule runs every %s, want 7m", got)
	}
}
