package spec

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestWindowAgreesWithItsSQL holds the Window's Go arithmetic to its own
// DuckDB SQL on random event times, before and after the epoch: the window
// starts StartSQL assigns equal Assign's, MembershipsSQL counts the
// windows Assign puts in a range, and Starts lists a range's starts.
func TestWindowAgreesWithItsSQL(t *testing.T) {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := rand.New(rand.NewPCG(3, 3))
	for _, w := range []Window{
		{Size: time.Minute, Hop: time.Minute},
		{Size: 5 * time.Minute, Hop: time.Minute},
		{Size: 10 * time.Second, Hop: 5 * time.Second, Lateness: time.Second},
	} {
		t.Run(fmt.Sprintf("%s/%s", w.Size, w.Hop), func(t *testing.T) {
			lo := int64(-3 * 60e6)
			hi := lo + int64(7*60e6)
			for range 300 {
				ts := lo - int64(10*60e6) + r.Int64N(int64(30*60e6))
				at := fmt.Sprintf("make_timestamptz(%d)", ts)
				base, join, start := w.StartSQL(at)
				rows, err := db.Query(fmt.Sprintf("SELECT %s FROM (SELECT %s AS __base) AS __e%s ORDER BY 1 DESC", start, base, join))
				if err != nil {
					t.Fatal(err)
				}
				var got []int64
				for rows.Next() {
					var s int64
					if err := rows.Scan(&s); err != nil {
						t.Fatal(err)
					}
					got = append(got, s)
				}
				rows.Close()
				want := w.Assign(ts, nil)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("ts %d: SQL assigns %v, Assign %v", ts, got, want)
				}
				in := 0
				for _, s := range want {
					if s >= lo && s < hi {
						in++
						if w.End(s) != s+w.Size.Microseconds() || w.ClosesAt(w.End(s)) != w.End(s)+w.Lateness.Microseconds() {
							t.Fatalf("window %d: end %d, closes at %d", s, w.End(s), w.ClosesAt(w.End(s)))
						}
					}
				}
				var n int
				if err := db.QueryRow("SELECT " + w.MembershipsSQL(at, lo, hi)).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != in {
					t.Fatalf("ts %d: MembershipsSQL counts %d windows in [%d, %d), Assign %d", ts, n, lo, hi, in)
				}
			}
			starts := w.Starts(lo+1, hi)
			if len(starts) == 0 || starts[0] < lo+1 || starts[0]-w.Hop.Microseconds() >= lo+1 || starts[len(starts)-1] >= hi {
				t.Fatalf("Starts(%d, %d) = %v", lo+1, hi, starts)
			}
			for i := 1; i < len(starts); i++ {
				if starts[i]-starts[i-1] != w.Hop.Microseconds() {
					t.Fatalf("Starts: %v", starts)
				}
			}
		})
	}
}
