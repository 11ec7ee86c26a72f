package activities

import (
	"context"
	"encoding/json"
	"errors"

	"go.temporal.io/sdk/temporal"

	"tideline/lake"
)

// ErrTypeSQL is a non-retryable error type: DuckDB cannot run the view's
// SQL over the partition's files as they are (a binder, parser, planner or
// conversion error). Running it again fails the same way.
const ErrTypeSQL = "SQLError"

// fromQuery turns a query error no retry fixes into a non-retryable one.
func fromQuery(err error) error {
	if lake.IsQueryError(err) {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeSQL, err)
	}
	return fromLake(err)
}

// recordFailure records on the view table why a recompute failed, when no
// retry can fix it, so the view's status says why its tideline does not
// move. It is best effort: the error is the activity's result anyway.
func (a *Activities) recordFailure(ctx context.Context, in PartitionInput, err error) {
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) || !ae.NonRetryable() || ae.Type() == ErrTypeBadInput || ae.Type() == ErrTypeSpec {
		return
	}
	v := a.Spec.View(in.View)
	if v == nil {
		return
	}
	f := lake.Failure{Partition: in.Partition, Type: ae.Type(), Message: ae.Message(), At: a.Now().UTC()}
	data, _ := json.Marshal(f)
	if _, cerr := a.viewTable(v).Commit(context.WithoutCancel(ctx), lake.Commit{Op: "failed",
		Props: map[string]string{lake.PropFailed + in.Partition: string(data)}}); cerr != nil {
		a.Log.Warn("cannot record a failed recompute on its view table", "view", v.Name, "partition", in.Partition, "err", cerr)
	}
	a.Log.Error("recompute failed; it will not be retried until the cause is fixed", "view", v.Name, "partition", in.Partition, "type", ae.Type(), "err", ae.Message())
}
