// Package serve is where users read the answer: one DuckDB view per spec
// view, batch-exact below the view's tideline and speed-fresh above it, and
// the HTTP API over them.
//
//   - Each view <view> is served_<view> (the view table's batch files,
//     loaded into a DuckDB table at each new version; batch_<view> reads
//     the same files in place) for windows starting before the tideline,
//     UNION ALL speed_<view> (the speed layer's windows, followed from its
//     KV bucket) for windows starting at or after it, with a source column
//     saying which. raw_<stream> and corrections_<view> are queryable too.
//   - Refresh swaps new lake commits and speed updates in under the server's
//     write lock; a query holds the read lock, so it sees one snapshot and
//     one tideline.
//   - When the speed layer stops keeping up (its last update is more than
//     StaleAfter behind the stream), views answer from batch alone and say
//     so in the X-Tideline-Stale header and /v1/status, rather than fail.
//   - POST /v1/query runs one read-only SELECT. DuckDB's own parser
//     (json_serialize_sql) must find exactly one SELECT with no table
//     function but range, generate_series and unnest; the database reads
//     only the cache directory (enable_external_access off, allowed
//     directories, configuration locked); every query runs under a time
//     limit and a row limit.
//   - The dashboard at / is embedded (dashboard/): plain JavaScript drawing
//     SVG from /v1/stats (the speed layer's processors' stats, followed on
//     tl.stats.>), /v1/status, /v1/query and the live view updates.
package serve
