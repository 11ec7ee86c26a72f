// Package stream is tideline's speed layer: the fresh half of every answer.
//
//   - Setup creates, idempotently, a JetStream stream per spec stream (file
//     storage, its subjects, retention and dedup window), a dead-letter
//     stream beside it, a KV bucket per view for current window values and
//     the checkpoint bucket.
//   - Ingester is POST /v1/ingest/{stream}: NDJSON validated line by line.
//     Producers may also publish straight to the subjects with the event id
//     as Nats-Msg-Id (PublishSubject picks the subject).
//   - Operator is the pure state machine: contract validation, event-time
//     windows of every view of the stream (tumbling and hopping, from the
//     same spec.View definitions the batch SQL is generated from), the
//     watermark (max event time − out-of-orderness, each event's time bounded
//     by the broker's receive time so a producer's clock cannot move it, and
//     advanced on idle while the processor is caught up and connected),
//     lateness, and dedup of ids while a window holding them is open.
//   - Processor drives an Operator from an ordered JetStream consumer.
//     Invalid messages go, unchanged, to the dead-letter stream with a
//     Tl-Reason header. Changed windows are published on tl.views.<view>
//     every flush (25ms), batched one message per view, an update per line;
//     the view's KV bucket gets final windows at each checkpoint and open
//     ones every KVEvery (5s). A checkpoint holds all window state and the last applied
//     sequence together, written only after every output before it is
//     acknowledged; a restart resumes from it and re-reads from the next
//     sequence, so the result equals a run without the crash.
//   - Generate is the load generator behind `tideline gen`.
//
// Decisions: an open window's KV value may trail its live updates by up to
// KVEvery, which bounds KV writes to one per changed window per interval;
// the dedup set holds 64-bit hashes of ids, in the checkpoint while they are
// few and rebuilt from the stream after a restart when they are many; late events are counted per view and left for batch; an event
// is late for a view when every window of that view holding it has closed.
// A stream with `partitions: N` is split by JetStream's subject mapping
// into N partitions, each with its own Processor (operator, dedup set,
// checkpoint, watermark) writing partial windows; tideline stream
// processes share the partitions as a Group (group.go: leases in a KV
// bucket), and readers merge the partials (merge.go, speedread.go).
//
// Performance: an event costs one decode into a reused buffer (strings
// borrowed from the message; a new group clones its dims), one dedup probe,
// and per view one map lookup of its group, whose windows sit in one flat
// slice (start, dirty flag, then each measure's count and value), so the
// fold reads no further pointer; no allocation in the steady state. Pending
// KV writes are keyed by group and start, and update JSON reuses each
// view's quoted names. Checkpoints copy each group's slice as it is. What is
// left is memory latency: a probe of the dedup set and of each view's group
// map per event (BENCHMARKS.md, BenchmarkOperator).
package stream
