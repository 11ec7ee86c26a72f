package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
)

// Backfill modes.
const (
	ModeMissing = "missing" // partitions with raw data and no batch result
	ModeFailed  = "failed"  // partitions whose last backfill run failed
	ModeAll     = "all"     // every partition with raw data
)

// PartitionWorkflowID is the deterministic id of the workflow that
// backfills one view partition, so that re-running a backfill does not
// duplicate work.
func PartitionWorkflowID(view, partition string) string {
	return "backfill/" + view + "/" + partition
}

// BackfillPlanInput selects the partitions of a backfill.
type BackfillPlanInput struct {
	View  string    `json:"view"` // or "*"
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	Mode  string    `json:"mode"`
	Limit int       `json:"limit"` // at most about this many items (whole partitions are kept together)
}

// BackfillItem is one view partition to backfill.
type BackfillItem struct {
	View      string `json:"view"`
	Partition string `json:"partition"`
}

// BackfillPlanResult is one page of a backfill's partitions.
type BackfillPlanResult struct {
	Items []BackfillItem `json:"items"`
	// Total counts every item the range and mode select, this page and the
	// ones after it.
	Total int `json:"total"`
	// Next is where the next page starts; zero when this is the last.
	Next time.Time `json:"next"`
	// RawPartitions counts the partitions of the range that hold raw data,
	// whatever the mode, so an empty range can say so.
	RawPartitions int      `json:"raw_partitions"`
	Views         []string `json:"views"`
}

// BackfillPlan lists the view partitions in [From, To) that the mode
// selects, in time order, one page at a time. It only reads.
func (a *Activities) BackfillPlan(ctx context.Context, in BackfillPlanInput) (BackfillPlanResult, error) {
	var res BackfillPlanResult
	if in.View == "*" {
		for _, v := range a.Spec.Views {
			res.Views = append(res.Views, v.Name)
		}
	} else {
		if _, err := a.view(in.View); err != nil {
			return res, err
		}
		res.Views = []string{in.View}
	}
	type item struct {
		BackfillItem
		start time.Time
	}
	var all []item
	for _, name := range res.Views {
		s, err := a.readView(ctx, name)
		if err != nil {
			return res, err
		}
		for _, p := range s.parts {
			if p.Start.Before(in.From) || !p.Start.Before(in.To) {
				continue
			}
			ps := s.state(p)
			if ps.Inputs == 0 {
				continue // a window reaching into it, but no raw data of its own
			}
			res.RawPartitions++
			switch in.Mode {
			case ModeMissing:
				if ps.Computed {
					continue
				}
			case ModeFailed:
				failed, err := a.lastRunFailed(ctx, PartitionWorkflowID(name, ps.Partition))
				if err != nil {
					return res, err
				}
				if !failed {
					continue
				}
			case ModeAll:
			default:
				return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot backfill in mode %q: use missing, failed or all", in.Mode), ErrTypeBadInput, nil)
			}
			all = append(all, item{BackfillItem{name, ps.Partition}, p.Start})
		}
	}
	slices.SortStableFunc(all, func(x, y item) int { return x.start.Compare(y.start) })
	res.Total = len(all)
	for i, it := range all {
		if in.Limit > 0 && len(res.Items) >= in.Limit && !it.start.Equal(all[i-1].start) {
			res.Next = it.start
			break
		}
		res.Items = append(res.Items, it.BackfillItem)
	}
	return res, nil
}

// lastRunFailed reports whether the last run of a workflow id ended badly.
func (a *Activities) lastRunFailed(ctx context.Context, id string) (bool, error) {
	if a.Temporal == nil {
		return false, nil
	}
	d, err := a.Temporal.DescribeWorkflowExecution(ctx, id, "")
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cannot look up workflow %s: %w", id, err)
	}
	switch d.GetWorkflowExecutionInfo().GetStatus() {
	case enums.WORKFLOW_EXECUTION_STATUS_FAILED, enums.WORKFLOW_EXECUTION_STATUS_TERMINATED,
		enums.WORKFLOW_EXECUTION_STATUS_TIMED_OUT, enums.WORKFLOW_EXECUTION_STATUS_CANCELED:
		return true, nil
	}
	return false, nil
}

// AwaitInput names a workflow to wait for.
type AwaitInput struct {
	WorkflowID string `json:"workflow_id"`
}

// WorkflowStatus is whether a workflow has ended, and how.
type WorkflowStatus struct {
	Closed bool   `json:"closed"`
	Error  string `json:"error,omitempty"` // why it failed, if it did
}

// CheckWorkflow looks once at a workflow another run started (a backfill
// partition already running). The Backfill workflow calls it between
// timers, so waiting holds no activity slot: a slot held while waiting
// could be the one the awaited partition's recompute, or the compaction
// that seals it, needs.
func (a *Activities) CheckWorkflow(ctx context.Context, in AwaitInput) (WorkflowStatus, error) {
	if a.Temporal == nil {
		return WorkflowStatus{}, temporal.NewNonRetryableApplicationError("cannot look at workflow "+in.WorkflowID+": the worker has no Temporal client", ErrTypeBadInput, nil)
	}
	d, err := a.Temporal.DescribeWorkflowExecution(ctx, in.WorkflowID, "")
	if err != nil {
		return WorkflowStatus{}, fmt.Errorf("cannot look up workflow %s: %w", in.WorkflowID, err)
	}
	switch d.GetWorkflowExecutionInfo().GetStatus() {
	case enums.WORKFLOW_EXECUTION_STATUS_RUNNING, enums.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
		return WorkflowStatus{}, nil
	case enums.WORKFLOW_EXECUTION_STATUS_COMPLETED:
		return WorkflowStatus{Closed: true}, nil
	}
	// It ended badly: its error says why (the run has closed, so Get
	// returns at once).
	err = a.Temporal.GetWorkflow(ctx, in.WorkflowID, d.GetWorkflowExecutionInfo().GetExecution().GetRunId()).Get(ctx, nil)
	if err == nil {
		err = fmt.Errorf("it ended %s", d.GetWorkflowExecutionInfo().GetStatus())
	}
	return WorkflowStatus{Closed: true, Error: fmt.Sprintf("workflow %s failed: %v", in.WorkflowID, err)}, nil
}

// AwaitWorkflow waits for a workflow another run started and returns its
// error, heartbeating meanwhile. Only histories recorded before
// CheckWorkflow call it: it holds an activity slot while it waits.
func (a *Activities) AwaitWorkflow(ctx context.Context, in AwaitInput) error {
	if a.Temporal == nil {
		return temporal.NewNonRetryableApplicationError("cannot wait for workflow "+in.WorkflowID+": the worker has no Temporal client", ErrTypeBadInput, nil)
	}
	done := make(chan error, 1)
	go func() { done <- a.Temporal.GetWorkflow(ctx, in.WorkflowID, "").Get(ctx, nil) }()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return temporal.NewNonRetryableApplicationError(fmt.Sprintf("workflow %s failed: %v", in.WorkflowID, err), "PartitionFailed", err)
			}
			return nil
		case <-tick.C:
			activity.RecordHeartbeat(ctx, in.WorkflowID)
		}
	}
}
