package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	sdkworker "go.temporal.io/sdk/worker"

	"tideline/activities"
	"tideline/spec"
	"tideline/workflows"
)

// New returns a worker on workflows.TaskQueue with every workflow and the
// activities registered. Start it with Run (or its own Run/Start).
func New(c client.Client, acts *activities.Activities, o sdkworker.Options) sdkworker.Worker {
	w := sdkworker.New(c, workflows.TaskQueue, o)
	for _, wf := range []any{workflows.Compaction, workflows.Backfill, workflows.BackfillPartition,
		workflows.Maintain, workflows.Optimize, workflows.Retention, workflows.Vacuum} {
		w.RegisterWorkflow(wf)
	}
	w.RegisterActivityWithOptions(acts, activity.RegisterOptions{})
	return w
}

// EnsureSearchAttributes registers the attributes backfills report in, if
// the namespace lacks them.
func EnsureSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	have, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("cannot list search attributes of namespace %s: %w", namespace, err)
	}
	missing := map[string]enums.IndexedValueType{}
	for name, typ := range workflows.SearchAttributes {
		if _, ok := have.GetCustomAttributes()[name]; !ok {
			missing[name] = typ
		}
	}
	if len(missing) == 0 {
		return nil
	}
	_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{Namespace: namespace, SearchAttributes: missing})
	var exists *serviceerror.AlreadyExists
	if err != nil && !errors.As(err, &exists) {
		return fmt.Errorf("cannot add search attributes to namespace %s: %w", namespace, err)
	}
	return nil
}

// ScheduleID is the id of a stream's compaction schedule.
func ScheduleID(stream string) string { return "compact/" + stream }

// MaintainScheduleID is the id of a stream's maintenance schedule.
func MaintainScheduleID(stream string) string { return "maintain/" + stream }

// MaintainEvery is how often the lake maintenance runs per stream.
const MaintainEvery = time.Hour

// EnsureSchedules creates, or updates to the spec, per stream a compaction
// schedule (every compact_every; one it creates runs once at once) and a
// maintenance schedule (Maintain, every MaintainEvery).
func EnsureSchedules(ctx context.Context, c client.Client, s *spec.Spec, log *slog.Logger) error {
	for _, st := range s.Streams {
		// A new schedule compacts at once: a fresh deployment need not
		// wait out the first interval to see its lake.
		if err := ensureSchedule(ctx, c, ScheduleID(st.Name), st.CompactEvery, true, workflows.Compaction, workflows.CompactionInput{Stream: st.Name}); err != nil {
			return err
		}
		if err := ensureSchedule(ctx, c, MaintainScheduleID(st.Name), MaintainEvery, false, workflows.Maintain, workflows.MaintainInput{Stream: st.Name}); err != nil {
			return err
		}
		log.Info("compaction and maintenance scheduled", "stream", st.Name, "compact_every", st.CompactEvery, "maintain_every", MaintainEvery)
	}
	return nil
}

func ensureSchedule(ctx context.Context, c client.Client, id string, every time.Duration, now bool, wf, in any) error {
	sched := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
	action := &client.ScheduleWorkflowAction{ID: id, Workflow: wf, TaskQueue: workflows.TaskQueue, Args: []any{in}}
	_, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID: id, Spec: sched, Action: action, Overlap: enums.SCHEDULE_OVERLAP_POLICY_SKIP, TriggerImmediately: now,
	})
	if errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
		err = c.ScheduleClient().GetHandle(ctx, id).Update(ctx, client.ScheduleUpdateOptions{
			DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
				s := in.Description.Schedule
				s.Spec = &sched
				s.Action = action
				if s.Policy != nil {
					s.Policy.Overlap = enums.SCHEDULE_OVERLAP_POLICY_SKIP
				}
				return &client.ScheduleUpdate{Schedule: &s}, nil
			},
		})
	}
	if err != nil {
		return fmt.Errorf("cannot create or update schedule %s: %w", id, err)
	}
	return nil
}
