// Package lake is tideline's batch storage: Parquet files in an object store,
// made into tables by an ordered commit log, and read by DuckDB through a
// local cache.
//
//   - Store is one interface over MinIO/S3 (s3://bucket/prefix) and a local
//     directory (file:///path). Transient failures are retried with backoff
//     and surface as ErrUnavailable; the rest are permanent.
//
//   - WriteParquet and PutParquet write rows in the Arrow schema derived from
//     the spec (RawSchema, ViewSchema): zstd, statistics, rows ordered by
//     event time, row groups of up to DefaultRowGroupRows, built side by side
//     while the one before is encoded; strings that repeat are
//     dictionary-encoded from a Go map rather than the Parquet writer's
//     per-value hashing.
//
//   - Table is a table's log. Commit N is created with a conditional put, so
//     of racing writers exactly one gets each version; the others re-read and
//     retry on top of it. Committing a source range or files that are already
//     in the table fails with ErrAlreadyCommitted, so a retried commit is
//     never stored twice. Snapshot replays the log from the newest
//     checkpoint, probing versions one by one: no listing is needed.
//
//   - Keys are deterministic from their content's source: raw files from the
//     stream sequence range (RawFileKey), batch files from the view,
//     partition, raw version and input mark (ViewFileKey). Partitions are
//     event-time slices laid out as dt=YYYY-MM-DD/hr=HH[/min=MM].
//
//   - Commits can replace a partition whole (Replace: they must remove
//     exactly its live files) and set table properties compare-and-swap
//     (Props, IfProps), which the batch layer uses for its tideline and for
//     how far compaction has covered a stream.
//
//   - Cache holds local copies keyed by object key and ETag, bounded in
//     size, and verifies each download against its commit (ETag, MD5, size,
//     Parquet footer, row count) so a corrupt object is ErrCorrupt naming
//     its key.
//
//   - Catalog defines a DuckDB view per table over the cached files of a
//     snapshot and swaps it in one statement.
//
//   - Contracts change (evolve.go): every raw commit names the contract it
//     was written with, the raw table keeps each as a property, SelectFiles
//     reads files of any compatible contract in the spec's columns, and
//     CheckContract refuses a breaking change naming the field.
//
//   - Table.Vacuum deletes what no snapshot inside a retention references and
//     truncates the log behind a checkpoint; Stats describes a table.
package lake
