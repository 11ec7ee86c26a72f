package stream

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tideline/internal/oracle"
	"tideline/spec"
)

// agreeSpec has a view of every window kind, each with every measure kind.
// Partitions are an hour and sessions at most two, so sessions cross
// partitions.
var agreeSpec = strings.ReplaceAll(`
version: 1
streams:
  s:
    subjects: [s.>]
    id: id
    event_time: ts
    partition: 1h
    out_of_orderness: 20s
    idle_timeout: 5s
    fields:
      id:     {type: string, required: true}
      ts:     {type: timestamp, required: true}
      user:   {type: string}
      amount: {type: decimal, scale: 2}
      flag:   {type: bool}
      kind:   {type: string, enum: [a, b, c, d]}
views:
  sessions:
    stream: s
    window: {session: 2m, max: 2h}
    lateness: 10s
    derive: {big: amount >= 50}
    group_by: [user]
%MEASURES%
  tumbling:
    stream: s
    window: 5m
    lateness: 10s
    derive: {big: amount >= 50}
    group_by: [user]
%MEASURES%
  hopping:
    stream: s
    window: {size: 10m, hop: 2m}
    lateness: 10s
    derive: {big: amount >= 50}
    group_by: [user, kind]
%MEASURES%
`, "%MEASURES%", `    measures:
      n: count
      big: count_if(big)
      flagged: count_if(flag)
      total: sum(amount)
      lo: min(amount)
      hi: max(amount)
      kinds: count_distinct(kind)
      amounts: approx_count_distinct(amount)
      ids: approx_count_distinct(id)`)

// agreeEvent is one generated event: its JSON and its event time.
type agreeEvent struct {
	id   string
	ts   time.Time
	data []byte
}

// agreeEvents makes n events over three hours for 40 users (and some with
// none), about a minute and a half apart per user, so that gaps are now
// less, now more than the session gap: sessions form, merge when a later
// event bridges them, and cross the hour.
func agreeEvents(n int, seed uint64) []agreeEvent {
	r := rand.New(rand.NewPCG(seed, seed))
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	var out []agreeEvent
	for i := range n {
		obj := map[string]any{"id": fmt.Sprintf("e%05d", i)}
		ts := base.Add(time.Duration(r.Int64N(int64(3 * time.Hour)))).Truncate(time.Millisecond)
		obj["ts"] = ts.Format(time.RFC3339Nano)
		if u := r.IntN(42); u < 40 {
			obj["user"] = fmt.Sprintf("u%d", u)
		}
		if r.IntN(8) > 0 {
			obj["amount"] = json.Number(spec.FormatDecimal(r.Int64N(10000), 2))
		}
		if r.IntN(5) > 0 {
			obj["flag"] = r.IntN(2) == 0
		}
		if r.IntN(6) > 0 {
			obj["kind"] = []string{"a", "b", "c", "d"}[r.IntN(4)]
		}
		data, _ := json.Marshal(obj)
		out = append(out, agreeEvent{id: obj["id"].(string), ts: ts, data: data})
	}
	return out
}

// arrive orders events as a producer with disorder would deliver them:
// by event time plus a random delay of up to jitter.
func arrive(events []agreeEvent, jitter time.Duration, seed uint64) []agreeEvent {
	r := rand.New(rand.NewPCG(seed, seed^1))
	type keyed struct {
		at time.Time
		e  agreeEvent
	}
	ks := make([]keyed, len(events))
	for i, e := range events {
		ks[i] = keyed{e.ts.Add(time.Duration(r.Int64N(int64(jitter) + 1))), e}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int { return a.at.Compare(b.at) })
	out := make([]agreeEvent, len(ks))
	for i, k := range ks {
		out[i] = k.e
	}
	return out
}

// TestOperatorAgreesWithSQL holds the speed layer's operator equal to the
// batch layer's SQL, for every window kind and measure: the windows the
// operator reports (their starts, ends, groups and values) equal View.SQL
// over the events it applied. Events arrive out of order, some later than
// the watermark allows, and some twice; the operator restarts from its
// checkpoint now and then; sessions merge when an event
// bridges two, and cross partition boundaries.
func TestOperatorAgreesWithSQL(t *testing.T) {
	s, err := spec.Parse("agree.yaml", []byte(agreeSpec))
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stream("s")
	events := agreeEvents(6000, 5)
	for _, tc := range []struct {
		view   string
		jitter time.Duration // more than the out-of-orderness: some events are late
	}{
		{"sessions", 15 * time.Second}, // within the out-of-orderness: none late
		{"sessions", 3 * time.Minute},
		{"tumbling", 3 * time.Minute},
		{"hopping", 10 * time.Second},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.view, tc.jitter), func(t *testing.T) {
			one := *st
			one.Views = []*spec.View{s.View(tc.view)}
			v := one.Views[0]
			op := NewOperator(&one)
			got := map[string]string{}
			var applied []agreeEvent
			var late, gone int
			drain := func() {
				for _, u := range op.Drain(nil) {
					key := fmt.Sprint(u.Start, u.Dims)
					if u.Gone {
						delete(got, key) // perhaps never reported
						gone++
						continue
					}
					got[key] = agreeRow(v, u.Start, u.End, u.Dims, u.Measures)
				}
			}
			order := arrive(events, tc.jitter, 9)
			// Every 50th event comes again, a little later.
			for i := 0; i < len(order); i += 50 {
				j := min(len(order), i+1+i%7)
				order = slices.Insert(order, j, order[i])
			}
			open := 0
			for i, e := range order {
				switch out, err := op.Apply(e.data, uint64(i+1), time.Time{}); out {
				case Applied:
					applied = append(applied, e)
				case Late:
					late++
				case Invalid:
					t.Fatal(err)
				}
				if i%13 == 0 {
					drain()
				}
				if i%1000 == 500 { // a restart from a checkpoint changes nothing
					drain()
					data, err := op.Checkpoint()
					if err != nil {
						t.Fatal(err)
					}
					op = NewOperator(&one)
					if err := op.Restore(data); err != nil {
						t.Fatal(err)
					}
				}
				open = max(open, op.OpenWindows())
			}
			// The producer goes quiet: the watermark passes every window.
			op.Tick(time.UnixMicro(op.MaxEvent).Add(100*time.Hour), time.UnixMicro(op.MaxEvent))
			drain()
			if n := op.OpenWindows(); n != 0 {
				t.Fatalf("%d windows open after the watermark passed them all", n)
			}
			if n := op.sketches.Len(); n != 0 {
				t.Fatalf("%d sketches held after every window closed", n)
			}
			want := sqlWindows(t, v, applied)
			t.Logf("%d events applied, %d late, %d windows, %d gone (merged or moved), at most %d open", len(applied), late, len(want), gone, open)
			if len(want) < 50 {
				t.Fatalf("only %d windows: the generator is too narrow", len(want))
			}
			if v.Session() && gone == 0 {
				t.Fatal("no session merged or moved its start: the test does not exercise merging")
			}
			if tc.jitter > st.OutOfOrderness && late == 0 {
				t.Fatal("no event was late: the test does not exercise lateness")
			}
			sameWindows(t, "operator", got, want)
		})
	}
}

// sameWindows fails the test for every window where got (what the engine
// called what made) differs from want, SQL's.
func sameWindows(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("window %s: %s %q, SQL %q", k, what, got[k], w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("window %s: %s %q, SQL has none", k, what, g)
		}
	}
}

func agreeRow(v *spec.View, start, end int64, dims, ms []spec.Value) string {
	parts := []string{fmt.Sprint(start), fmt.Sprint(end)}
	for _, d := range dims {
		parts = append(parts, renderValue(d))
	}
	for _, m := range ms {
		parts = append(parts, renderValue(m))
	}
	return strings.Join(parts, "|")
}

func renderValue(x spec.Value) string {
	switch {
	case x.Null:
		return "NULL"
	case x.Str != "":
		return x.Str
	}
	return fmt.Sprint(x.Int)
}

// sqlWindows runs v's SQL over the events, loaded by the oracle.
func sqlWindows(t *testing.T, v *spec.View, events []agreeEvent) map[string]string {
	t.Helper()
	var b strings.Builder
	for i, e := range events {
		line, _ := json.Marshal(OutLine{I: i, Kind: "valid", Data: string(e.data)})
		b.Write(line)
		b.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "events.ndjson")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := oracle.Load(t.Context(), db, v.Stream, path); err != nil {
		t.Fatal(err)
	}
	return queryWindows(t, db, v, v.SQL("events"))
}

// queryWindows runs a query shaped as v's rows and renders each as
// agreeRow does, keyed by start and group.
func queryWindows(t *testing.T, db *sql.DB, v *spec.View, q string) map[string]string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), q)
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	defer rows.Close()
	out := map[string]string{}
	n := 2 + len(v.GroupBy) + len(v.Measures)
	for rows.Next() {
		vals, ptrs := make([]any, n), make([]any, n)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		start, end := vals[0].(time.Time).UnixMicro(), vals[1].(time.Time).UnixMicro()
		dims := make([]spec.Value, len(v.GroupBy))
		for i := range dims {
			dims[i] = spec.ValueOf(vals[2+i])
		}
		ms := make([]spec.Value, len(v.Measures))
		for i := range ms {
			ms[i] = spec.ValueOf(vals[2+len(dims)+i])
		}
		key := fmt.Sprint(start, dims)
		if _, dup := out[key]; dup {
			t.Fatalf("SQL has window %s twice", key)
		}
		out[key] = agreeRow(v, start, end, dims, ms)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
