package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"tideline/activities"
)

// CompactionInput is one compaction run of a stream.
type CompactionInput struct {
	Stream string `json:"stream"`
	// Parallelism bounds concurrent recomputes (default 4).
	Parallelism int `json:"parallelism,omitempty"`
}

// CompactionResult says what a run did.
type CompactionResult struct {
	Plan       activities.PlanResult               `json:"plan"`
	Compact    activities.CompactResult            `json:"compact"`
	Recomputed []activities.RecomputeResult        `json:"recomputed"`
	Advanced   []activities.AdvanceResult          `json:"advanced"`
	Failed     []string                            `json:"failed,omitempty"`
	Pending    map[string]activities.PendingResult `json:"pending,omitempty"`
}

// Compaction compacts a stream's new messages into its raw table, then
// recomputes the sealed, stale partitions of its views and advances their
// tidelines. A failed count check fails the run without retrying.
func Compaction(ctx workflow.Context, in CompactionInput) (CompactionResult, error) {
	var res CompactionResult
	if in.Stream == "" {
		return res, temporal.NewNonRetryableApplicationError("cannot compact: the input names no stream; give {\"stream\": \"...\"}", activities.ErrTypeBadInput, nil)
	}
	if in.Parallelism <= 0 {
		in.Parallelism = 4
	}
	log := workflow.GetLogger(ctx)
	if err := workflow.ExecuteLocalActivity(withReads(ctx), a.Plan, activities.PlanInput{Stream: in.Stream}).Get(ctx, &res.Plan); err != nil {
		return res, err
	}
	cin := activities.CompactInput{Stream: in.Stream, From: res.Plan.From, To: res.Plan.To, Covered: res.Plan.Covered}
	if err := workflow.ExecuteActivity(withWork(ctx, 2*time.Hour), a.Compact, cin).Get(ctx, &res.Compact); err != nil {
		return res, err
	}
	// Every stale, sealed partition of every view, recomputed at most
	// Parallelism at a time.
	res.Pending = map[string]activities.PendingResult{}
	var items []activities.PartitionInput
	for _, v := range res.Plan.Views {
		var p activities.PendingResult
		if err := workflow.ExecuteLocalActivity(withReads(ctx), a.Pending, activities.ViewInput{View: v}).Get(ctx, &p); err != nil {
			return res, err
		}
		res.Pending[v] = p
		for _, part := range p.Stale {
			items = append(items, activities.PartitionInput{View: v, Partition: part})
		}
	}
	results, failed := recomputeAll(ctx, items, in.Parallelism)
	res.Recomputed = results
	for _, f := range failed {
		res.Failed = append(res.Failed, f.Error())
	}
	// Advance waits for the recomputes above: it only passes current
	// partitions, so a failed one holds its view's tideline.
	for _, v := range res.Plan.Views {
		var adv activities.AdvanceResult
		if err := workflow.ExecuteActivity(withWork(ctx, 10*time.Minute), a.Advance, activities.ViewInput{View: v}).Get(ctx, &adv); err != nil {
			return res, err
		}
		res.Advanced = append(res.Advanced, adv)
	}
	log.Info("compaction done", "stream", in.Stream, "messages", res.Compact.Messages, "recomputed", len(res.Recomputed), "failed", len(res.Failed))
	if len(failed) > 0 {
		return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot recompute %d partition(s) of stream %s: %v", len(failed), in.Stream, failed[0]), "RecomputeFailed", failed[0])
	}
	return res, nil
}

// recomputeAll runs Recompute for the items, at most n at once.
func recomputeAll(ctx workflow.Context, items []activities.PartitionInput, n int) ([]activities.RecomputeResult, []error) {
	var results []activities.RecomputeResult
	var failed []error
	running := 0
	sel := workflow.NewSelector(ctx)
	for i := 0; i < len(items) || running > 0; {
		if i < len(items) && running < n {
			item := items[i]
			i++
			running++
			f := workflow.ExecuteActivity(withWork(ctx, 30*time.Minute), a.Recompute, item)
			sel.AddFuture(f, func(f workflow.Future) {
				running--
				var r activities.RecomputeResult
				if err := f.Get(ctx, &r); err != nil {
					failed = append(failed, fmt.Errorf("partition %s of view %s: %w", item.Partition, item.View, err))
					return
				}
				results = append(results, r)
			})
			continue
		}
		sel.Select(ctx)
	}
	return results, failed
}
