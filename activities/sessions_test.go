package activities

import (
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"tideline/lake"
	"tideline/spec"
)

const sessionSpec = `
version: 1
streams:
  s:
    subjects: [s.>]
    id: id
    event_time: ts
    partition: 1h
    fields:
      id:     {type: string, required: true}
      ts:     {type: timestamp, required: true}
      user:   {type: string}
      amount: {type: decimal, scale: 2}
views:
  sessions:
    stream: s
    window: {session: 2m, max: 2h}
    group_by: [user]
    measures: {n: count, total: sum(amount), hi: max(amount)}
  hopping:
    stream: s
    window: {size: 10m, hop: 2m}
    group_by: [user]
    measures: {n: count, total: sum(amount), hi: max(amount)}
`

// TestRecomputeSQLAcrossPartitions holds what the batch layer computes a
// partition at a time (each view partition reading its raw partitions with
// the window's lookback and reach, as recompute does) to the view's SQL
// over every event at once: sessions that cross partition boundaries are
// whole, in the partition of their start, and in no other.
func TestRecomputeSQLAcrossPartitions(t *testing.T) {
	sp, err := spec.Parse("sessions.yaml", []byte(sessionSpec))
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	// 5,000 events over four hours for 20 users, about a minute apart per
	// user: sessions of every length, many crossing 11:00, 12:00 and 13:00.
	// Some ids come twice (compaction keeps both rows; the first by _seq
	// counts).
	if _, err := db.Exec(fmt.Sprintf(`CREATE TABLE events AS SELECT
		'e' || i AS id,
		make_timestamptz(%d + CAST(hash(i) %% 14400000000 AS BIGINT)) AS ts,
		CASE WHEN hash(i * 7) %% 21 = 20 THEN NULL ELSE 'u' || (hash(i * 7) %% 21) END AS "user",
		CAST(hash(i * 13) %% 100000 AS BIGINT) AS amount,
		i AS _seq
		FROM range(5000) AS t(i);
		INSERT INTO events SELECT id, ts, "user", amount + 1, _seq + 5000 FROM events WHERE _seq %% 97 = 0`, base.UnixMicro())); err != nil {
		t.Fatal(err)
	}
	for _, v := range sp.Stream("s").Views {
		t.Run(v.Name, func(t *testing.T) {
			whole := map[string]string{}
			scan(t, db, "SELECT * FROM ("+v.SQL("(SELECT * FROM events QUALIFY row_number() OVER (PARTITION BY id ORDER BY _seq) = 1)")+")", whole)
			parts := map[string]string{}
			crossing := 0
			for p := lake.PartitionOf(base.Add(-time.Hour).UnixMicro(), time.Hour); p.Start.Before(base.Add(5 * time.Hour)); p = lake.PartitionOf(p.End().UnixMicro(), time.Hour) {
				q := recomputeSQL(v, "SELECT * FROM events", p)
				got := map[string]string{}
				scan(t, db, q.view, got)
				for k, row := range got {
					if _, dup := parts[k]; dup {
						t.Fatalf("window %s in two partitions", k)
					}
					parts[k] = row
				}
				crossing += countCrossing(t, db, q.view, p)
			}
			if len(whole) < 100 {
				t.Fatalf("only %d windows", len(whole))
			}
			if v.Session() && crossing < 5 {
				t.Fatalf("only %d sessions cross a partition boundary: the test does not exercise it", crossing)
			}
			t.Logf("%d windows, %d crossing a partition's end", len(whole), crossing)
			for _, k := range slices.Sorted(maps.Keys(whole)) {
				if parts[k] != whole[k] {
					t.Errorf("window %s: by partition %q, whole %q", k, parts[k], whole[k])
				}
			}
			for k := range parts {
				if _, ok := whole[k]; !ok {
					t.Errorf("window %s: by partition %q, whole has none", k, parts[k])
				}
			}
		})
	}
}

// scan reads a view query's rows into out, keyed by start and group.
func scan(t *testing.T, db *sql.DB, q string, out map[string]string) {
	t.Helper()
	rows, err := db.Query("SELECT epoch_us(window_start), epoch_us(window_end), coalesce(\"user\", 'NULL'), n, total, hi FROM (" + q + ")")
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	defer rows.Close()
	for rows.Next() {
		var start, end, n, total, hi int64
		var user string
		if err := rows.Scan(&start, &end, &user, &n, &total, &hi); err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprint(start, "/", user)] = fmt.Sprint(end, " ", n, " ", total, " ", hi)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

func countCrossing(t *testing.T, db *sql.DB, q string, p lake.Partition) int {
	t.Helper()
	var n int
	if err := db.QueryRow(fmt.Sprintf("SELECT count(*) FROM (%s) WHERE epoch_us(window_end) > %d", q, p.End().UnixMicro())).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
