package stream

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/examples/payments"
	"tideline/internal/devstack"
	"tideline/internal/oracle"
	"tideline/internal/stacktest"
	"tideline/spec"
)

// natsForTest starts an embedded NATS server with JetStream and connects.
func natsForTest(t *testing.T) (*devstack.NATS, *nats.Conn, jetstream.JetStream) {
	return stacktest.NATS(t)
}

var genStart = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// speedRows reads every window of a view from its KV bucket, failing the
// test if one is not final, in the oracle's form.
func speedRows(t *testing.T, js jetstream.JetStream, v *spec.View) (map[string]oracle.Row, int) {
	t.Helper()
	ctx := t.Context()
	kv, err := js.KeyValue(ctx, ViewBucket(v.Name))
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]oracle.Row{}
	open := 0
	for key := range lister.Keys() {
		if key == WatermarkKey {
			continue
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // a session that merged away since the listing: its key is deleted
		}
		if err != nil {
			t.Fatal(err)
		}
		var u UpdateJSON
		if err := json.Unmarshal(e.Value(), &u); err != nil {
			t.Fatalf("update %s: %v", key, err)
		}
		if !u.Final {
			open++
		}
		r := oracleRow(t, v, u)
		out[oracle.Key(u.WindowStart, r.Dims)] = r
	}
	return out, open
}

// oracleRow is an update in the oracle's form.
func oracleRow(t *testing.T, v *spec.View, u UpdateJSON) oracle.Row {
	t.Helper()
	dims := make([]string, len(v.GroupBy))
	for i, c := range v.GroupBy {
		dims[i] = oracle.Render(u.Dims[c.Name])
	}
	ms := make([]string, len(v.Measures))
	for i, m := range v.Measures {
		raw := string(u.Measures[m.Name])
		if _, scale := m.Type(); scale > 0 && raw != "null" {
			n, err := spec.ParseDecimal(raw, scale)
			if err != nil {
				t.Fatalf("measure %s = %s: %v", m.Name, raw, err)
			}
			raw = oracle.Render(n)
		}
		if raw == "null" {
			raw = "NULL"
		}
		ms[i] = raw
	}
	return oracle.Row{Start: u.WindowStart, End: u.WindowEnd, Dims: strings.Join(dims, "|"), Measures: strings.Join(ms, "|")}
}

// waitFinal polls until every window of every view is final and equals the
// oracle, or fails with the difference.
func waitFinal(t *testing.T, js jetstream.JetStream, s *spec.Spec, db *sql.DB, timeout time.Duration) {
	t.Helper()
	waitRows(t, s, db, timeout, func(v *spec.View) (map[string]oracle.Row, int) { return speedRows(t, js, v) })
}

// waitRows polls until read says every window of every view is final and
// equals the oracle, or fails with the difference.
func waitRows(t *testing.T, s *spec.Spec, db *sql.DB, timeout time.Duration, read func(*spec.View) (map[string]oracle.Row, int)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		diffs := map[string]string{}
		for _, v := range s.Stream("payments").Views {
			want, err := oracle.ViewRows(t.Context(), db, v, "")
			if err != nil {
				t.Fatal(err)
			}
			got, open := read(v)
			if d := oracle.Diff(got, want); d != "" || open > 0 {
				diffs[v.Name] = d
			}
		}
		if len(diffs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for v, d := range diffs {
				t.Errorf("view %s differs from the oracle:\n%s", v, d)
			}
			t.FailNow()
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func loadOracle(t *testing.T, st *spec.Stream, out ...string) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := oracle.Load(t.Context(), db, st, out...); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestSpeedLayerMatchesOracle publishes a generated mix with disorder,
// duplicates and malformed events to real JetStream, runs the processor, and
// holds every closed window to DuckDB's answer from the generator's file.
func TestSpeedLayerMatchesOracle(t *testing.T) {
	_, nc, js := natsForTest(t)
	ctx := t.Context()
	s := fastSpec(t)
	if err := Setup(ctx, js, s, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	// Setup is idempotent.
	if err := Setup(ctx, js, s, SetupOptions{}); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	st := s.Stream("payments")
	out := filepath.Join(t.TempDir(), "out.ndjson")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := Generate(ctx, js, st, payments.Payment, GenOptions{Count: 20000, OOO: 0.05, Dup: 0.01, Invalid: 0.005, Seed: 7, Start: genStart, Out: f})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("generated %+v", stats)

	statsMsgs := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(StatsSubject(st.Name), statsMsgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	pctx, stop := context.WithCancel(ctx)
	p := NewProcessor(nc, js, st, ProcessorOptions{})
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	db := loadOracle(t, st, out)
	waitFinal(t, js, s, db, 60*time.Second)
	checkStats(t, js, st, statsMsgs, stats)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Every invalid event is in the dead-letter stream, with its reason.
	dlq, err := js.Stream(ctx, DLQStreamName(st))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := dlq.Info(ctx)
	if int(info.State.Msgs) != stats.Invalid {
		t.Fatalf("dead-letter stream has %d messages, generator made %d invalid", info.State.Msgs, stats.Invalid)
	}
	msg, err := dlq.GetMsg(ctx, 1)
	if err != nil || msg.Header.Get(DLQHeaderReason) == "" || msg.Header.Get(DLQHeaderSeq) == "" {
		t.Fatalf("dead letter 1: %v, headers %v", err, msg.Header)
	}
}

// checkStats holds the processor's published stats to what it consumed:
// every message of the stream counted once by outcome, every invalid one
// dead-lettered, and a freshness measured.
func checkStats(t *testing.T, js jetstream.JetStream, st *spec.Stream, msgs chan *nats.Msg, gen GenStats) {
	t.Helper()
	jss, err := js.Stream(t.Context(), StreamName(st))
	if err != nil {
		t.Fatal(err)
	}
	info, err := jss.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var last Stats
	var freshness float64
	for deadline := time.After(10 * time.Second); ; {
		select {
		case m := <-msgs:
			if last, err = ParseStats(m.Data); err != nil {
				t.Fatal(err)
			}
			freshness = max(freshness, last.FreshnessMaxMs)
		case <-deadline:
			t.Fatalf("no stats with every message counted; last %+v, stream has %d", last, info.State.LastSeq)
		}
		var total uint64
		for _, n := range last.Events {
			total += n
		}
		if total == info.State.LastSeq && last.Seq == info.State.LastSeq {
			break
		}
	}
	if last.Events["invalid"] != uint64(gen.Invalid) || last.DeadLettered != uint64(gen.Invalid) {
		t.Errorf("stats count %d invalid and %d dead-lettered; the generator made %d invalid", last.Events["invalid"], last.DeadLettered, gen.Invalid)
	}
	if last.Pending != 0 || last.Watermark.IsZero() || last.Stream != st.Name {
		t.Errorf("stats after the run: %+v", last)
	}
	if freshness <= 0 {
		t.Errorf("no freshness measured in any stats message")
	}
}
