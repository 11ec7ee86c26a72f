// Package worker wires tideline's batch layer into a Temporal worker: it
// registers the workflows and activities on task queue "tideline",
// registers the search attributes backfills report progress in, and creates
// or updates one Schedule per stream (id compact/<stream>) that runs
// Compaction every compact_every of the spec, skipping a run while the
// previous one is still going. Everything it sets up is idempotent, so any
// number of workers may start at once.
package worker
