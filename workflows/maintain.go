package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tideline/activities"
)

// MaintainInput is one maintenance run of a stream's lake tables.
type MaintainInput struct {
	Stream string `json:"stream"`
	// VacuumRetention is how long unreferenced files and old log entries
	// stay (default 1h).
	VacuumRetention time.Duration `json:"vacuum_retention,omitempty"`
}

// MaintainResult says what each step did.
type MaintainResult struct {
	Retention activities.RetentionResult `json:"retention"`
	Optimize  activities.OptimizeResult  `json:"optimize"`
	Vacuum    activities.VacuumResult    `json:"vacuum"`
}

func (in MaintainInput) check() error {
	if in.Stream == "" {
		return temporal.NewNonRetryableApplicationError(`cannot maintain: the input names no stream; give {"stream": "..."}`, activities.ErrTypeBadInput, nil)
	}
	return nil
}

// Maintain keeps a stream's lake from growing without bound: Retention
// drops the partitions older than the spec keeps, Optimize rewrites each
// sealed raw partition into one file, then Vacuum deletes what those (and
// every earlier commit) left unreferenced, once no reader inside its
// retention can need it. A schedule runs it every hour per stream.
func Maintain(ctx workflow.Context, in MaintainInput) (MaintainResult, error) {
	var res MaintainResult
	if err := in.check(); err != nil {
		return res, err
	}
	s := activities.StreamInput{Stream: in.Stream}
	if err := workflow.ExecuteActivity(withWork(ctx, time.Hour), a.Retention, s).Get(ctx, &res.Retention); err != nil {
		return res, err
	}
	if err := workflow.ExecuteActivity(withWork(ctx, 2*time.Hour), a.Optimize, s).Get(ctx, &res.Optimize); err != nil {
		return res, err
	}
	v := activities.VacuumInput{Stream: in.Stream, Retention: in.VacuumRetention}
	err := workflow.ExecuteActivity(withWork(ctx, time.Hour), a.Vacuum, v).Get(ctx, &res.Vacuum)
	return res, err
}

// Optimize runs the Optimize step alone, for the Temporal UI.
func Optimize(ctx workflow.Context, in MaintainInput) (activities.OptimizeResult, error) {
	var res activities.OptimizeResult
	if err := in.check(); err != nil {
		return res, err
	}
	err := workflow.ExecuteActivity(withWork(ctx, 2*time.Hour), a.Optimize, activities.StreamInput{Stream: in.Stream}).Get(ctx, &res)
	return res, err
}

// Retention runs the Retention step alone, for the Temporal UI.
func Retention(ctx workflow.Context, in MaintainInput) (activities.RetentionResult, error) {
	var res activities.RetentionResult
	if err := in.check(); err != nil {
		return res, err
	}
	err := workflow.ExecuteActivity(withWork(ctx, time.Hour), a.Retention, activities.StreamInput{Stream: in.Stream}).Get(ctx, &res)
	return res, err
}

// Vacuum runs the Vacuum step alone, for the Temporal UI.
func Vacuum(ctx workflow.Context, in MaintainInput) (activities.VacuumResult, error) {
	var res activities.VacuumResult
	if err := in.check(); err != nil {
		return res, err
	}
	err := workflow.ExecuteActivity(withWork(ctx, time.Hour), a.Vacuum, activities.VacuumInput{Stream: in.Stream, Retention: in.VacuumRetention}).Get(ctx, &res)
	return res, err
}
