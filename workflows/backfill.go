package workflows

import (
	"errors"
	"fmt"
	"slices"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tideline/activities"
)

// Search attributes a backfill keeps up to date, so the Temporal UI's list
// shows its progress. The worker registers them.
var (
	AttrView   = temporal.NewSearchAttributeKeyKeyword("TidelineView")
	AttrDone   = temporal.NewSearchAttributeKeyInt64("TidelineDone")
	AttrFailed = temporal.NewSearchAttributeKeyInt64("TidelineFailed")
	AttrLeft   = temporal.NewSearchAttributeKeyInt64("TidelineLeft")
)

// SearchAttributes are the attributes above by name and type, for
// registering them with a namespace.
var SearchAttributes = map[string]enumspb.IndexedValueType{
	"TidelineView":   enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	"TidelineDone":   enumspb.INDEXED_VALUE_TYPE_INT,
	"TidelineFailed": enumspb.INDEXED_VALUE_TYPE_INT,
	"TidelineLeft":   enumspb.INDEXED_VALUE_TYPE_INT,
}

// ProgressQuery is the query that returns a backfill's BackfillProgress.
const ProgressQuery = "progress"

// BackfillInput is what to type into the Temporal UI's Start Workflow form
// (workflow type Backfill, task queue tideline):
//
//	{"view": "merchant_minute", "from": "2026-11-25T00:00:00Z", "to": "2026-11-26T00:00:00Z", "mode": "missing", "parallelism": 4}
type BackfillInput struct {
	View string    `json:"view"` // a view, or "*" for every view
	From time.Time `json:"from"` // partitions starting at or after
	To   time.Time `json:"to"`   // and before this
	Mode string    `json:"mode"` // missing (default), failed or all
	// Parallelism bounds the partitions running at once (default 4, at
	// most 64).
	Parallelism int `json:"parallelism,omitempty"`
	// ContinueEvery is how many partitions one run starts before it
	// continues as new (default 500), keeping its history small.
	ContinueEvery int `json:"continue_every,omitempty"`
	// Progress is carried over from the run before a continue-as-new.
	Progress *BackfillProgress `json:"progress,omitempty"`
}

// BackfillProgress is what the progress query returns, and the result.
type BackfillProgress struct {
	Total    int      `json:"total"` // partitions the range and mode selected
	Done     int      `json:"done"`
	Running  int      `json:"running"`
	Failed   int      `json:"failed"`
	Left     int      `json:"left"` // not started yet
	Failures []string `json:"failures,omitempty"`
	// Note says why there was nothing to do, when there was not.
	Note string `json:"note,omitempty"`
}

// BackfillPartitionInput names one view partition.
type BackfillPartitionInput struct {
	View      string `json:"view"`
	Partition string `json:"partition"`
	// WaitSealed bounds how long it waits for compaction to seal the
	// partition (default 24h).
	WaitSealed time.Duration `json:"wait_sealed,omitempty"`
}

func (in *BackfillInput) validate() error {
	var errs []error
	if in.View == "" {
		errs = append(errs, errors.New(`"view" is missing: name a view, or "*" for all`))
	}
	if in.From.IsZero() || in.To.IsZero() {
		errs = append(errs, errors.New(`"from" and "to" are required, as RFC 3339 times like "2026-11-25T00:00:00Z"`))
	} else if !in.From.Before(in.To) {
		errs = append(errs, fmt.Errorf(`"from" (%s) must be before "to" (%s)`, in.From.Format(time.RFC3339), in.To.Format(time.RFC3339)))
	}
	if in.Mode == "" {
		in.Mode = activities.ModeMissing
	}
	if !slices.Contains([]string{activities.ModeMissing, activities.ModeFailed, activities.ModeAll}, in.Mode) {
		errs = append(errs, fmt.Errorf(`"mode" is %q: use missing, failed or all`, in.Mode))
	}
	if in.Parallelism <= 0 {
		in.Parallelism = 4
	}
	if in.Parallelism > 64 {
		errs = append(errs, fmt.Errorf(`"parallelism" is %d: at most 64`, in.Parallelism))
	}
	if in.ContinueEvery <= 0 {
		in.ContinueEvery = 500
	}
	if len(errs) > 0 {
		return temporal.NewNonRetryableApplicationError("cannot start backfill: "+errors.Join(errs...).Error(), activities.ErrTypeBadInput, nil)
	}
	return nil
}

// Backfill recomputes the view partitions of a range that its mode selects,
// one BackfillPartition child each, then advances the views' tidelines.
// Partitions that failed are listed in its error; mode "failed" re-runs
// them.
func Backfill(ctx workflow.Context, in BackfillInput) (BackfillProgress, error) {
	if err := in.validate(); err != nil {
		return BackfillProgress{}, err
	}
	log := workflow.GetLogger(ctx)
	prog := BackfillProgress{}
	first := in.Progress == nil
	if !first {
		prog = *in.Progress
	}
	if err := workflow.SetQueryHandler(ctx, ProgressQuery, func() (BackfillProgress, error) { return prog, nil }); err != nil {
		return prog, err
	}
	report := func() {
		_ = workflow.UpsertTypedSearchAttributes(ctx, AttrView.ValueSet(in.View),
			AttrDone.ValueSet(int64(prog.Done)), AttrFailed.ValueSet(int64(prog.Failed)), AttrLeft.ValueSet(int64(prog.Left+prog.Running)))
	}
	var plan activities.BackfillPlanResult
	pin := activities.BackfillPlanInput{View: in.View, From: in.From, To: in.To, Mode: in.Mode, Limit: in.ContinueEvery}
	if err := workflow.ExecuteLocalActivity(withReads(ctx), a.BackfillPlan, pin).Get(ctx, &plan); err != nil {
		return prog, err
	}
	if first {
		prog.Total = plan.Total
		switch {
		case plan.RawPartitions == 0:
			prog.Note = fmt.Sprintf("no raw data for view %s between %s and %s: nothing to backfill", in.View, in.From.Format(time.RFC3339), in.To.Format(time.RFC3339))
		case plan.Total == 0:
			prog.Note = fmt.Sprintf("%d partition(s) have raw data, and none is %s", plan.RawPartitions, in.Mode)
		}
		if prog.Note != "" {
			log.Info(prog.Note)
		}
	}
	prog.Left = prog.Total - prog.Done - prog.Failed
	report()

	// Start children while fewer than Parallelism run; each coroutine
	// owns one partition from start to result.
	for _, item := range plan.Items {
		if err := workflow.Await(ctx, func() bool { return prog.Running < in.Parallelism }); err != nil {
			return prog, err
		}
		prog.Running++
		prog.Left--
		workflow.Go(ctx, func(ctx workflow.Context) {
			err := runPartition(ctx, item)
			prog.Running--
			if err != nil {
				prog.Failed++
				prog.Failures = append(prog.Failures, fmt.Sprintf("%s %s: %v", item.View, item.Partition, err))
			} else {
				prog.Done++
			}
			report()
		})
	}
	if err := workflow.Await(ctx, func() bool { return prog.Running == 0 }); err != nil {
		return prog, err
	}
	// Advance waits for every recompute of this run.
	for _, v := range plan.Views {
		if err := workflow.ExecuteActivity(withWork(ctx, 10*time.Minute), a.Advance, activities.ViewInput{View: v}).Get(ctx, nil); err != nil {
			return prog, err
		}
	}
	if !plan.Next.IsZero() {
		next := in
		next.From, next.Progress = plan.Next, &prog
		return prog, workflow.NewContinueAsNewError(ctx, Backfill, next)
	}
	prog.Left = 0
	report()
	if prog.Failed > 0 {
		return prog, temporal.NewNonRetryableApplicationError(fmt.Sprintf("%d of %d partition(s) failed; start the same backfill with mode \"failed\" to re-run them. First: %s",
			prog.Failed, prog.Total, prog.Failures[0]), "PartitionsFailed", nil, prog)
	}
	log.Info("backfill done", "view", in.View, "done", prog.Done)
	return prog, nil
}

// runPartition runs one partition's child workflow, or waits for the one
// another backfill already started under the same id.
func runPartition(ctx workflow.Context, item activities.BackfillItem) error {
	id := activities.PartitionWorkflowID(item.View, item.Partition)
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            id,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		// Another backfill may be waiting on this child too.
		ParentClosePolicy: enumspb.PARENT_CLOSE_POLICY_ABANDON,
	})
	err := workflow.ExecuteChildWorkflow(cctx, BackfillPartition, BackfillPartitionInput{View: item.View, Partition: item.Partition}).Get(ctx, nil)
	var started *temporal.ChildWorkflowExecutionAlreadyStartedError
	if !errors.As(err, &started) {
		return err
	}
	in := activities.AwaitInput{WorkflowID: id}
	if workflow.GetVersion(ctx, "await-without-slot", workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		wctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: 24 * time.Hour, HeartbeatTimeout: 30 * time.Second, RetryPolicy: retry,
		})
		return workflow.ExecuteActivity(wctx, a.AwaitWorkflow, in).Get(ctx, nil)
	}
	// Look, then sleep, doubling up to a minute: the wait holds no
	// activity slot (see CheckWorkflow), and a day of it adds about 6,000
	// events to the history.
	for wait := 2 * time.Second; ; wait = min(2*wait, time.Minute) {
		var st activities.WorkflowStatus
		if err := workflow.ExecuteLocalActivity(withReads(ctx), a.CheckWorkflow, in).Get(ctx, &st); err != nil {
			return err
		}
		if st.Closed {
			if st.Error != "" {
				return temporal.NewNonRetryableApplicationError(st.Error, "PartitionFailed", nil)
			}
			return nil
		}
		if err := workflow.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// BackfillPartition waits until compaction has sealed the partition, so it
// never computes from half the data, then recomputes it.
func BackfillPartition(ctx workflow.Context, in BackfillPartitionInput) (activities.RecomputeResult, error) {
	var res activities.RecomputeResult
	if in.WaitSealed <= 0 {
		in.WaitSealed = 24 * time.Hour
	}
	deadline := workflow.Now(ctx).Add(in.WaitSealed)
	pin := activities.PartitionInput{View: in.View, Partition: in.Partition}
	for {
		var ps activities.PartitionState
		if err := workflow.ExecuteLocalActivity(withReads(ctx), a.Partition, pin).Get(ctx, &ps); err != nil {
			return res, err
		}
		if ps.Sealed {
			break
		}
		now := workflow.Now(ctx)
		if now.After(deadline) {
			return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("partition %s of view %s was not sealed within %s: is compaction running (its schedule, or `tideline compact`)?",
				in.Partition, in.View, in.WaitSealed), activities.ErrTypeNotSealed, nil)
		}
		// Compaction runs every minute or so; look again then, or sooner
		// if the partition seals sooner.
		wait := min(max(ps.SealedAt.Sub(now), time.Second), time.Minute)
		workflow.GetLogger(ctx).Info("waiting for compaction to seal the partition", "view", in.View, "partition", in.Partition, "sealed_at", ps.SealedAt, "wait", wait)
		if err := workflow.Sleep(ctx, wait); err != nil {
			return res, err
		}
	}
	err := workflow.ExecuteActivity(withWork(ctx, 30*time.Minute), a.Recompute, pin).Get(ctx, &res)
	return res, err
}
