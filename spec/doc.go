// Package spec parses and validates a tideline pipeline spec and holds the
// definitions that both engines run from.
//
// A spec declares streams, each with a typed data contract, and views, each an
// event-time windowed aggregate over one stream. This package is the single
// source of truth for both:
//
//   - the event contract: [Contract.Decode] turns raw JSON into a typed
//     [Event] or returns a [*ValidationError] naming each bad field;
//   - the expression language of filters and derived fields: [Expr] evaluates
//     in Go and renders to DuckDB SQL with the same semantics (SQL's
//     three-valued logic, exact int64 arithmetic over decimal minor units);
//   - the view: [View.SQL] renders the exact batch aggregate, and
//     [View.Assign] and [Accumulator] compute the same thing incrementally;
//   - window semantics ([Window], window.go): fixed windows and sessions,
//     assignment, window end, when a window closes, how far a partition's
//     windows reach and what before it decides them, when a partition is
//     sealed, the key prefix of a window, and the SQL that assigns rows to
//     windows;
//   - measure semantics (measure.go): one table entry per measure kind with
//     its cell update, merge, value and SQL aggregate; approx_count_distinct's
//     sketch, defined alike for Go and SQL (hll.go);
//   - the key of a group (group.go), the same wherever its values came from;
//   - the shape of a scoring section ([Scoring]); what its rules read is
//     the scorer's, which compiles them ([Scoring.Compile]).
//
// Decisions this package makes for the rest of the system:
//
//   - Decimal fields are stored, compared and summed as int64 minor units
//     (scale digits). In expressions a literal is scaled to match, so
//     "amount > 500" means 500.00 when amount has scale 2.
//   - Timestamps are UTC microseconds since the Unix epoch.
//   - Fixed window starts are aligned to the Unix epoch: start = t - (t mod
//     hop). No session crosses a multiple of its max since the epoch.
//
// A broken spec is reported all at once: [Parse] returns an [ErrorList] with
// one positioned [Error] per problem, each with a hint of what to write instead.
// spec imports no other tideline package.
package spec
