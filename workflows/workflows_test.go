package workflows

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"tideline/activities"
)

func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	s.SetLogger(log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	env := s.NewTestWorkflowEnvironment()
	env.SetStartTime(t0)
	env.RegisterActivity(&activities.Activities{})
	env.RegisterWorkflow(Compaction)
	env.RegisterWorkflow(Backfill)
	env.RegisterWorkflow(BackfillPartition)
	return env
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestCompactionOrderAndParallelism(t *testing.T) {
	env := newEnv(t)
	var mu sync.Mutex
	var order []string
	step := func(s string) {
		mu.Lock()
		order = append(order, s)
		mu.Unlock()
	}
	env.OnActivity(a.Plan, mock.Anything, activities.PlanInput{Stream: "payments"}).Return(func(context.Context, activities.PlanInput) (activities.PlanResult, error) {
		step("plan")
		return activities.PlanResult{Stream: "payments", From: 11, To: 20, Covered: t0, Views: []string{"v1", "v2"}}, nil
	})
	env.OnActivity(a.Compact, mock.Anything, activities.CompactInput{Stream: "payments", From: 11, To: 20, Covered: t0}).Return(func(context.Context, activities.CompactInput) (activities.CompactResult, error) {
		step("compact")
		return activities.CompactResult{Messages: 10, Rows: 9, Rejected: 1}, nil
	})
	env.OnActivity(a.Pending, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.ViewInput) (activities.PendingResult, error) {
		step("pending " + in.View)
		return activities.PendingResult{View: in.View, Stale: []string{"p1", "p2", "p3"}}, nil
	})
	var running, peak atomic.Int32
	env.OnActivity(a.Recompute, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.PartitionInput) (activities.RecomputeResult, error) {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		running.Add(-1)
		step("recompute")
		return activities.RecomputeResult{View: in.View, Partition: in.Partition}, nil
	})
	env.OnActivity(a.Advance, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.ViewInput) (activities.AdvanceResult, error) {
		step("advance " + in.View)
		return activities.AdvanceResult{View: in.View}, nil
	})
	env.ExecuteWorkflow(Compaction, CompactionInput{Stream: "payments", Parallelism: 2})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var res CompactionResult
	if err := env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if len(res.Recomputed) != 6 || len(res.Advanced) != 2 {
		t.Errorf("recomputed %d, advanced %d; want 6 and 2", len(res.Recomputed), len(res.Advanced))
	}
	want := []string{"plan", "compact", "pending v1", "pending v2", "recompute", "recompute", "recompute", "recompute", "recompute", "recompute", "advance v1", "advance v2"}
	if len(order) != len(want) {
		t.Fatalf("steps %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("steps %v, want %v", order, want)
		}
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("%d recomputes ran at once; parallelism is 2", p)
	}
}

func TestCompactionRetriesTransientErrorsButNotDataQuality(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		wantCalls int
		wantFail  bool
	}{
		{"transient", errors.New("object store unavailable"), 3, false},
		{"data quality", temporal.NewNonRetryableApplicationError("rows + rejected != messages", activities.ErrTypeDataQuality, nil), 1, true},
		{"typed but retryable", temporal.NewApplicationError("not sealed", activities.ErrTypeNotSealed), 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t)
			env.OnActivity(a.Plan, mock.Anything, mock.Anything).Return(activities.PlanResult{Stream: "s", From: 1, To: 5, Views: []string{"v"}}, nil)
			calls := 0
			env.OnActivity(a.Compact, mock.Anything, mock.Anything).Return(func(context.Context, activities.CompactInput) (activities.CompactResult, error) {
				calls++
				if calls < 3 || tc.wantFail {
					return activities.CompactResult{}, tc.err
				}
				return activities.CompactResult{Messages: 5}, nil
			})
			env.OnActivity(a.Pending, mock.Anything, mock.Anything).Return(activities.PendingResult{}, nil)
			env.OnActivity(a.Advance, mock.Anything, mock.Anything).Return(activities.AdvanceResult{}, nil)
			env.ExecuteWorkflow(Compaction, CompactionInput{Stream: "s"})
			err := env.GetWorkflowError()
			if calls != tc.wantCalls {
				t.Errorf("Compact ran %d times, want %d", calls, tc.wantCalls)
			}
			var app *temporal.ApplicationError
			switch {
			case tc.wantFail && (!errors.As(err, &app) || app.Type() != activities.ErrTypeDataQuality):
				t.Errorf("workflow error %v, want a %s application error", err, activities.ErrTypeDataQuality)
			case !tc.wantFail && err != nil:
				t.Errorf("workflow error %v, want success after retries", err)
			}
			env.AssertNotCalled(t, "Recompute", mock.Anything, mock.Anything)
		})
	}
}

func TestCompactionFailedRecomputeHoldsTheRunButStillAdvances(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(a.Plan, mock.Anything, mock.Anything).Return(activities.PlanResult{Stream: "s", Views: []string{"v"}}, nil)
	env.OnActivity(a.Compact, mock.Anything, mock.Anything).Return(activities.CompactResult{}, nil)
	env.OnActivity(a.Pending, mock.Anything, mock.Anything).Return(activities.PendingResult{Stale: []string{"good", "bad"}}, nil)
	env.OnActivity(a.Recompute, mock.Anything, activities.PartitionInput{View: "v", Partition: "good"}).Return(activities.RecomputeResult{}, nil)
	env.OnActivity(a.Recompute, mock.Anything, activities.PartitionInput{View: "v", Partition: "bad"}).Return(activities.RecomputeResult{},
		temporal.NewNonRetryableApplicationError("count mismatch", activities.ErrTypeDataQuality, nil))
	advanced := false
	env.OnActivity(a.Advance, mock.Anything, mock.Anything).Return(func(context.Context, activities.ViewInput) (activities.AdvanceResult, error) {
		advanced = true
		return activities.AdvanceResult{}, nil
	})
	env.ExecuteWorkflow(Compaction, CompactionInput{Stream: "s"})
	if err := env.GetWorkflowError(); err == nil {
		t.Error("a failed recompute did not fail the run")
	}
	if !advanced {
		t.Error("the tideline was not advanced over what did recompute")
	}
}

func backfillPlan(items ...activities.BackfillItem) activities.BackfillPlanResult {
	return activities.BackfillPlanResult{Items: items, Total: len(items), RawPartitions: len(items), Views: []string{"v"}}
}

func TestBackfillRunsEveryPartitionAsAChild(t *testing.T) {
	env := newEnv(t)
	var gotMode string
	env.OnActivity(a.BackfillPlan, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.BackfillPlanInput) (activities.BackfillPlanResult, error) {
		gotMode = in.Mode
		return backfillPlan(activities.BackfillItem{View: "v", Partition: "p1"}, activities.BackfillItem{View: "v", Partition: "p2"}, activities.BackfillItem{View: "v", Partition: "p3"}), nil
	})
	env.OnActivity(a.Partition, mock.Anything, mock.Anything).Return(activities.PartitionState{Sealed: true}, nil)
	var mu sync.Mutex
	ids := map[string]bool{}
	env.OnActivity(a.Recompute, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.PartitionInput) (activities.RecomputeResult, error) {
		mu.Lock()
		ids[in.Partition] = true
		mu.Unlock()
		return activities.RecomputeResult{}, nil
	})
	env.OnActivity(a.Advance, mock.Anything, activities.ViewInput{View: "v"}).Return(activities.AdvanceResult{}, nil).Once()
	children := map[string]bool{}
	env.SetOnChildWorkflowStartedListener(func(info *workflow.Info, _ workflow.Context, _ converter.EncodedValues) {
		children[info.WorkflowExecution.ID] = true
	})
	env.ExecuteWorkflow(Backfill, BackfillInput{View: "v", From: t0, To: t0.Add(time.Hour), Mode: "all", Parallelism: 2})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var prog BackfillProgress
	if err := env.GetWorkflowResult(&prog); err != nil {
		t.Fatal(err)
	}
	if prog.Done != 3 || prog.Failed != 0 || prog.Left != 0 || prog.Total != 3 || gotMode != "all" || len(ids) != 3 {
		t.Errorf("progress %+v, mode %q, recomputed %v", prog, gotMode, ids)
	}
	for _, p := range []string{"p1", "p2", "p3"} {
		if !children["backfill/v/"+p] {
			t.Errorf("no child workflow backfill/v/%s; children: %v", p, children)
		}
	}
	env.AssertExpectations(t)
}

func TestBackfillContinuesAsNewAndCarriesProgress(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(a.BackfillPlan, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.BackfillPlanInput) (activities.BackfillPlanResult, error) {
		if in.Limit != 2 {
			t.Errorf("plan limit %d, want continue_every 2", in.Limit)
		}
		p := backfillPlan(activities.BackfillItem{View: "v", Partition: "p1"}, activities.BackfillItem{View: "v", Partition: "p2"})
		p.Total, p.Next = 5, t0.Add(10*time.Minute)
		return p, nil
	})
	env.OnActivity(a.Partition, mock.Anything, mock.Anything).Return(activities.PartitionState{Sealed: true}, nil)
	env.OnActivity(a.Recompute, mock.Anything, mock.Anything).Return(activities.RecomputeResult{}, nil)
	env.OnActivity(a.Advance, mock.Anything, mock.Anything).Return(activities.AdvanceResult{}, nil)
	env.ExecuteWorkflow(Backfill, BackfillInput{View: "v", From: t0, To: t0.Add(time.Hour), ContinueEvery: 2})
	err := env.GetWorkflowError()
	var can *workflow.ContinueAsNewError
	if !errors.As(err, &can) {
		t.Fatalf("error %v, want continue-as-new", err)
	}
	var next BackfillInput
	if err := converter.GetDefaultDataConverter().FromPayloads(can.Input, &next); err != nil {
		t.Fatal(err)
	}
	if !next.From.Equal(t0.Add(10*time.Minute)) || next.Progress == nil || next.Progress.Done != 2 || next.Progress.Total != 5 || next.Mode != "missing" {
		t.Errorf("continued with %+v (progress %+v)", next, next.Progress)
	}
}

func TestBackfillReportsFailedPartitionsAndProgress(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(a.BackfillPlan, mock.Anything, mock.Anything).Return(backfillPlan(
		activities.BackfillItem{View: "v", Partition: "ok"}, activities.BackfillItem{View: "v", Partition: "broken"}), nil)
	env.OnActivity(a.Partition, mock.Anything, mock.Anything).Return(activities.PartitionState{Sealed: true}, nil)
	env.OnActivity(a.Recompute, mock.Anything, activities.PartitionInput{View: "v", Partition: "ok"}).Return(activities.RecomputeResult{}, nil)
	env.OnActivity(a.Recompute, mock.Anything, activities.PartitionInput{View: "v", Partition: "broken"}).Return(activities.RecomputeResult{},
		temporal.NewNonRetryableApplicationError("corrupt object raw/x.parquet", activities.ErrTypeBadData, nil))
	env.OnActivity(a.Advance, mock.Anything, mock.Anything).Return(activities.AdvanceResult{}, nil)
	env.ExecuteWorkflow(Backfill, BackfillInput{View: "v", From: t0, To: t0.Add(time.Hour)})
	err := env.GetWorkflowError()
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != "PartitionsFailed" {
		t.Fatalf("error %v, want PartitionsFailed", err)
	}
	var prog BackfillProgress
	if err := app.Details(&prog); err != nil {
		t.Fatal(err)
	}
	if prog.Done != 1 || prog.Failed != 1 || len(prog.Failures) != 1 {
		t.Errorf("progress %+v", prog)
	}
	q, err := env.QueryWorkflow(ProgressQuery)
	if err != nil {
		t.Fatal(err)
	}
	var queried BackfillProgress
	if err := q.Get(&queried); err != nil || queried.Failed != 1 || queried.Done != 1 {
		t.Errorf("progress query: %+v, %v", queried, err)
	}
}

func TestBackfillWithNoRawDataSaysSoAndFailsNothing(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(a.BackfillPlan, mock.Anything, mock.Anything).Return(activities.BackfillPlanResult{Views: []string{"v"}}, nil)
	env.OnActivity(a.Advance, mock.Anything, mock.Anything).Return(activities.AdvanceResult{}, nil)
	env.ExecuteWorkflow(Backfill, BackfillInput{View: "v", From: t0, To: t0.Add(time.Hour)})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	var prog BackfillProgress
	if err := env.GetWorkflowResult(&prog); err != nil || prog.Note == "" || prog.Total != 0 {
		t.Errorf("progress %+v, %v; want a note saying there is no raw data", prog, err)
	}
}

func TestBackfillRefusesBadInput(t *testing.T) {
	for name, in := range map[string]BackfillInput{
		"no view":     {From: t0, To: t0.Add(time.Hour)},
		"no range":    {View: "v"},
		"inverted":    {View: "v", From: t0.Add(time.Hour), To: t0},
		"bad mode":    {View: "v", From: t0, To: t0.Add(time.Hour), Mode: "everything"},
		"parallelism": {View: "v", From: t0, To: t0.Add(time.Hour), Parallelism: 1000},
	} {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t)
			env.ExecuteWorkflow(Backfill, in)
			var app *temporal.ApplicationError
			if err := env.GetWorkflowError(); !errors.As(err, &app) || app.Type() != activities.ErrTypeBadInput || !app.NonRetryable() {
				t.Errorf("error %v, want a non-retryable %s", err, activities.ErrTypeBadInput)
			}
		})
	}
}

func TestBackfillPartitionWaitsForSealing(t *testing.T) {
	env := newEnv(t)
	checks := 0
	env.OnActivity(a.Partition, mock.Anything, mock.Anything).Return(func(context.Context, activities.PartitionInput) (activities.PartitionState, error) {
		checks++
		return activities.PartitionState{Sealed: checks >= 3, SealedAt: t0}, nil
	})
	recomputedAfter := 0
	env.OnActivity(a.Recompute, mock.Anything, mock.Anything).Return(func(context.Context, activities.PartitionInput) (activities.RecomputeResult, error) {
		recomputedAfter = checks
		return activities.RecomputeResult{Rows: 7}, nil
	})
	env.ExecuteWorkflow(BackfillPartition, BackfillPartitionInput{View: "v", Partition: "dt=2026-11-25/hr=12/min=00"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if recomputedAfter != 3 {
		t.Errorf("recompute ran after %d checks, want after the 3rd (the first sealed one)", recomputedAfter)
	}
}

func TestBackfillPartitionGivesUpWhenNeverSealed(t *testing.T) {
	env := newEnv(t)
	env.OnActivity(a.Partition, mock.Anything, mock.Anything).Return(activities.PartitionState{SealedAt: t0.Add(time.Hour)}, nil)
	env.ExecuteWorkflow(BackfillPartition, BackfillPartitionInput{View: "v", Partition: "p", WaitSealed: 10 * time.Minute})
	var app *temporal.ApplicationError
	if err := env.GetWorkflowError(); !errors.As(err, &app) || app.Type() != activities.ErrTypeNotSealed {
		t.Errorf("error %v, want NotSealed after the wait", err)
	}
	env.AssertNotCalled(t, "Recompute", mock.Anything, mock.Anything)
}
