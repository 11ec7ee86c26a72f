package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tideline/activities"
)

// TaskQueue is where the worker listens and workflows are started.
const TaskQueue = "tideline"

// a refers to the activities by method value; it is never dereferenced.
var a *activities.Activities

// retry backs off exponentially from 1s to a minute, and gives up at once
// on errors no retry can fix.
var retry = &temporal.RetryPolicy{
	InitialInterval:        time.Second,
	BackoffCoefficient:     2,
	MaximumInterval:        time.Minute,
	MaximumAttempts:        30,
	NonRetryableErrorTypes: activities.NonRetryable,
}

// withReads is for the read-only steps, run as local activities.
func withReads(ctx workflow.Context) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         retry,
	})
}

// withWork is for the steps that write, which heartbeat.
func withWork(ctx workflow.Context, timeout time.Duration) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: timeout,
		HeartbeatTimeout:    15 * time.Second,
		RetryPolicy:         retry,
	})
}
