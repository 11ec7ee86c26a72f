package faults

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"tideline/internal/oracle"
	"tideline/internal/stacktest"
	"tideline/serve"
	"tideline/spec"
	"tideline/stream"
)

// lastStats waits for the next stats of the payments processor. For a
// partitioned stream it is the sum over the partitions, each as its holder
// last said: events, late events, open windows and pending messages add
// up, and Seq is the furthest any partition has read.
func (s *stack) lastStats() stream.Stats {
	st := s.spec.Stream("payments")
	subject := stream.StatsSubject(st.Name)
	if st.Partitioned() {
		subject += ".>"
	}
	sub, err := s.nc.SubscribeSync(subject)
	if err != nil {
		s.t.Fatal(err)
	}
	defer sub.Unsubscribe()
	parts := map[string]stream.Stats{}
	for deadline := time.Now().Add(10 * time.Second); len(parts) < max(st.Partitions, 1); {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			s.failWithLogs("stats from %d of %d partitions of the speed layer: %v", len(parts), max(st.Partitions, 1), err)
		}
		one, err := stream.ParseStats(m.Data)
		if err != nil {
			s.t.Fatal(err)
		}
		if prev, ok := parts[one.Stream]; !ok || one.Time.After(prev.Time) {
			parts[one.Stream] = one
		}
	}
	if !st.Partitioned() {
		return parts[st.Name]
	}
	sum := stream.Stats{Stream: st.Name, Events: map[string]uint64{}, Late: map[string]uint64{}}
	for _, p := range parts {
		sum.Seq = max(sum.Seq, p.Seq)
		sum.Pending += p.Pending
		sum.OpenWindows += p.OpenWindows
		sum.DeadLettered += p.DeadLettered
		for k, n := range p.Events {
			sum.Events[k] += n
		}
		for k, n := range p.Late {
			sum.Late[k] += n
		}
	}
	return sum
}

// settle waits until the speed layer has read the whole stream and closed
// every window, then compacts until every view's tideline has passed all
// the data.
func settle(t *testing.T, s *stack) {
	ctx := t.Context()
	jss, err := s.js.Stream(ctx, "payments")
	if err != nil {
		t.Fatal(err)
	}
	info, err := jss.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.waitFor("the speed layer caught up", 2*time.Minute, func() error {
		st := s.lastStats()
		if st.Seq < info.State.LastSeq || st.OpenWindows > 0 || st.Pending > 0 {
			return fmt.Errorf("at sequence %d of %d, %d windows open", st.Seq, info.State.LastSeq, st.OpenWindows)
		}
		return nil
	})
	last := info.State.LastTime
	s.waitFor("every view's tideline past the data", 5*time.Minute, func() error {
		if err := s.compact(); err != nil {
			return fmt.Errorf("compaction: %w", err)
		}
		var status struct {
			Views map[string]serve.ViewStatus `json:"views"`
		}
		if err := s.get("/v1/status", &status); err != nil {
			return err
		}
		for _, v := range s.spec.Stream("payments").Views {
			st := status.Views[v.Name]
			if st.PartitionsPending > 0 || !st.Tideline.After(last) || st.CorrectionsStaged > 0 {
				return fmt.Errorf("view %s: tideline %s, %d partitions pending, %d correction files not yet recorded; data up to %s", v.Name, st.Tideline, st.PartitionsPending, st.CorrectionsStaged, last)
			}
		}
		return nil
	})
}

// check holds the settled stack to the oracle.
func check(t *testing.T, s *stack) {
	ctx := t.Context()
	db := s.oracle()
	dedup := "(SELECT * FROM raw_payments QUALIFY row_number() OVER (PARTITION BY payment_id ORDER BY _seq) = 1) AS __raw"
	for _, v := range s.spec.Stream("payments").Views {
		want, err := oracle.ViewRows(ctx, db, v, "")
		if err != nil {
			t.Fatal(err)
		}
		// The merged view: all of it is below the tideline now.
		rows, err := s.query("SELECT * EXCLUDE (source) FROM " + spec.QuoteIdent(v.Name))
		if err != nil {
			t.Fatal(err)
		}
		got, n := oracle.FromResult(v, rows)
		if n != len(got) {
			t.Errorf("view %s: %d rows for %d windows: a window appears twice", v.Name, n, len(got))
		}
		if d := oracle.Diff(got, want); d != "" {
			t.Errorf("view %s differs from the oracle after the faults:\n%s", v.Name, d)
		}
		// Every other serve replica answers the same.
		for _, u := range s.serveURLs[1:] {
			rows, err := stacktest.Query(u, "SELECT * EXCLUDE (source) FROM "+spec.QuoteIdent(v.Name))
			if err != nil {
				t.Fatal(err)
			}
			other, n := oracle.FromResult(v, rows)
			if d := oracle.Diff(other, got); d != "" || n != len(other) {
				t.Errorf("view %s: serve at %s answers otherwise than the one at %s (%d rows):\n%s", v.Name, u, s.serveURL, n, d)
			}
		}
		// I6: the raw data alone gives the same answer.
		rows, err = s.query(v.SQL(dedup))
		if err != nil {
			t.Fatal(err)
		}
		rebuilt, _ := oracle.FromResult(v, rows)
		if d := oracle.Diff(rebuilt, want); d != "" {
			t.Errorf("view %s rebuilt from raw_payments differs from the oracle:\n%s", v.Name, d)
		}
		t.Logf("view %s: %d windows equal to the oracle, also rebuilt from raw data", v.Name, len(want))
	}

	// Every malformed event is in the dead-letter stream, once.
	dlq, err := s.js.Stream(ctx, stream.DLQStreamName(s.spec.Stream("payments")))
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(info.State.Msgs) != s.invalid {
		t.Errorf("dead-letter stream has %d messages; the generator published %d malformed events", info.State.Msgs, s.invalid)
	}

	// Corrections account for exactly the late events: for a tumbling
	// view, batch counts each late event and the speed layer did not, so
	// the count measure's corrections add up to the late events the speed
	// layer counted, whichever kind (speed, or batch after a recompute
	// below the tideline) recorded them.
	late := s.lastStats().Late
	for _, v := range s.spec.Stream("payments").Views {
		if !v.Tumbling() && !v.Session() {
			continue // an event late for one hopping window may be on time for the next
		}
		rows, err := s.query(fmt.Sprintf("SELECT coalesce(sum(delta), 0) FROM %s WHERE measure = 'payments'", spec.QuoteIdent(serve.CorrectionsViewName(v.Name))))
		if err != nil {
			t.Fatal(err)
		}
		sum, _ := rows[0][0].(json.Number).Int64()
		if uint64(sum) != late[v.Name] {
			t.Errorf("view %s: corrections add %d payments; the speed layer counted %d late events", v.Name, sum, late[v.Name])
			s.explainCorrections(db, v)
		} else {
			t.Logf("view %s: %d late events, all accounted for by corrections", v.Name, sum)
		}
	}
}

// explainCorrections logs the windows of a tumbling view whose corrections
// do not add up to batch (the oracle) minus what the speed layer served,
// for a count that does not match.
func (s *stack) explainCorrections(db *sql.DB, v *spec.View) {
	var dims, dimsJSON []string
	for _, c := range v.GroupBy {
		dims = append(dims, fmt.Sprintf("CAST(%s AS VARCHAR)", spec.QuoteIdent(c.Name)))
		dimsJSON = append(dimsJSON, fmt.Sprintf("json_extract_string(dims, '$.%s')", c.Name))
	}
	type sums struct{ oracle, speed, corrections int64 }
	by := map[string]*sums{}
	add := func(rows [][]any, f func(*sums, int64)) {
		for _, r := range rows {
			var key []string
			for _, x := range r[:len(r)-1] {
				if t, ok := x.(time.Time); ok {
					x = t.UTC().Format(time.RFC3339Nano)
				}
				key = append(key, fmt.Sprint(x))
			}
			k := strings.Join(key, "|")
			if by[k] == nil {
				by[k] = &sums{}
			}
			n, _ := strconv.ParseInt(fmt.Sprint(r[len(r)-1]), 10, 64)
			f(by[k], n)
		}
	}
	fromServe := func(q string) [][]any {
		rows, err := s.query(q)
		if err != nil {
			s.t.Logf("explaining corrections: %v", err)
		}
		// serve answers times as RFC 3339 text; make them time.Time.
		for _, r := range rows {
			if t, err := time.Parse(time.RFC3339Nano, fmt.Sprint(r[0])); err == nil {
				r[0] = t
			}
		}
		return rows
	}
	q := fmt.Sprintf("SELECT window_start, %s, payments FROM (%s)", strings.Join(dims, ", "), v.SQL("events"))
	rs, err := db.QueryContext(s.t.Context(), q)
	if err != nil {
		s.t.Logf("explaining corrections: %v", err)
		return
	}
	var oracleRows [][]any
	for rs.Next() {
		r := make([]any, len(dims)+2)
		ptrs := make([]any, len(r))
		for i := range r {
			ptrs[i] = &r[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			s.t.Logf("explaining corrections: %v", err)
			return
		}
		oracleRows = append(oracleRows, r)
	}
	rs.Close()
	add(oracleRows, func(x *sums, n int64) { x.oracle += n })
	add(s.speedWindows(v), func(x *sums, n int64) { x.speed += n })
	add(fromServe(fmt.Sprintf("SELECT window_start, %s, sum(delta) FROM %s WHERE measure = 'payments' GROUP BY ALL", strings.Join(dimsJSON, ", "), spec.QuoteIdent(serve.CorrectionsViewName(v.Name)))), func(x *sums, n int64) { x.corrections += n })
	shown, off := 0, 0
	for _, k := range slices.Sorted(maps.Keys(by)) {
		x := by[k]
		if x.oracle-x.speed == x.corrections {
			continue
		}
		off++
		if shown < 30 {
			s.t.Logf("view %s window %s: oracle %d, speed layer's final value %d, corrections add %d", v.Name, k, x.oracle, x.speed, x.corrections)
			shown++
		}
	}
	s.t.Logf("view %s: %d windows where the corrections are not the oracle minus the speed layer's value", v.Name, off)
}

// speedWindows reads every window of a view from its KV bucket, as rows of
// window_start, the group-by values as text, and the payments count.
func (s *stack) speedWindows(v *spec.View) [][]any {
	ctx := s.t.Context()
	kv, err := s.js.KeyValue(ctx, stream.ViewBucket(v.Name))
	if err != nil {
		s.t.Logf("explaining corrections: %v", err)
		return nil
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		s.t.Logf("explaining corrections: %v", err)
		return nil
	}
	count := slices.IndexFunc(v.Measures, func(m *spec.Measure) bool { return m.Name == "payments" })
	var rows [][]any
	for k := range keys.Keys() {
		if k == stream.WatermarkKey {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		u, _, err := stream.ParseUpdate(v, e.Value())
		if err != nil {
			continue
		}
		row := []any{time.UnixMicro(u.Start).UTC()}
		for _, d := range u.Dims {
			row = append(row, d.Str)
		}
		rows = append(rows, append(row, u.Measures[count].Int))
	}
	return rows
}
