// Package faults is tideline's proof under faults: the whole stack runs as
// separate processes (NATS embedded here, the Temporal dev server, MinIO,
// and tideline's stream, worker and serve), the generator publishes a mix
// with disorder, late events, duplicates and malformed events, and faults
// are injected while it runs. When the run settles, every view is held to
// DuckDB's answer straight from the generator's --out files.
//
// `make test` runs the short version (one round of each fault) last;
// `make soak` repeats rounds for TIDELINE_SOAK (default 30m).
//
// TestComposeStack holds `docker compose up` of the project's own
// docker-compose.yml to the same kind of oracle, through its published
// ports only; `make compose-test` brings the stack up on a real Docker
// engine and runs it (elsewhere it skips).
package faults
