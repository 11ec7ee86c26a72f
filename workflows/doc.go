// Package workflows holds tideline's Temporal workflows: deterministic code
// that orders the batch layer's activities and nothing else. Each takes one
// input struct, so inputs can grow without breaking callers or the JSON
// typed into the Temporal UI.
//
//   - Compaction (one per stream, on a Schedule) plans the sequence range,
//     compacts it, recomputes every sealed, stale partition of the stream's
//     views with bounded parallelism, then advances each view's tideline.
//     Late data that lands in a partition below the tideline makes it stale,
//     so the same path recomputes and corrects it.
//   - Backfill recomputes a range of partitions of one view or all ("*") in
//     mode missing, failed or all. It runs one BackfillPartition child per
//     partition with the id backfill/<view>/<partition>, at most Parallelism
//     at once, and continues as new every ContinueEvery partitions. A child
//     another backfill already runs is waited for, not repeated. The query
//     "progress" and the search attributes TidelineView, TidelineDone,
//     TidelineFailed and TidelineLeft report how far it is.
//   - BackfillPartition waits until compaction has sealed its partition,
//     then recomputes it.
//
// Retries back off exponentially; bad data, spec errors, failed count
// checks and bad input are non-retryable application errors with a type
// (activities.NonRetryable). Compact, Recompute and Advance heartbeat.
package workflows
