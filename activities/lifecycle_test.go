package activities

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tideline/internal/oracle"
	"tideline/lake"
	"tideline/spec"
)

// monthSpec keeps a month of hourly partitions: raw for 20 days, one view
// for 10.
const monthSpec = `
streams:
  payments:
    subjects: [payments.events.>]
    id: payment_id
    event_time: ts
    partition: 1h
    retention: 7d
    out_of_orderness: 1s
    idle_timeout: 1s
    lake_retention: 20d
    fields:
      payment_id:  {type: string, required: true}
      ts:          {type: timestamp, required: true}
      merchant_id: {type: string, required: true}
      amount:      {type: decimal, scale: 2, required: true}
views:
  merchant_10m:
    stream: payments
    window: 10m
    lateness: 1m
    group_by: [merchant_id]
    measures:
      payments: count
      amount: sum(amount)
  merchant_hour:
    stream: payments
    window: 1h
    lateness: 1m
    retention: 10d
    group_by: [merchant_id]
    measures:
      payments: count
`

// month publishes payments and writes them as a generator --out file for
// the oracle.
type month struct {
	f    *fixture
	out  *os.File
	next int
}

func (m *month) publish(ts time.Time, n int, tag string) {
	m.f.t.Helper()
	for i := range n {
		at := ts.Add(time.Duration(i) * 7 * time.Second)
		data := fmt.Sprintf(`{"payment_id":"%s-%d","ts":%q,"merchant_id":"m%d","amount":"%d.%02d"}`, tag, i, at.Format(time.RFC3339Nano), i%5, i%40, i%100)
		if _, err := m.f.js.Publish(m.f.t.Context(), "payments.events.0", []byte(data)); err != nil {
			m.f.t.Fatal(err)
		}
		line, _ := json.Marshal(map[string]any{"i": m.next, "kind": "valid", "data": data})
		m.next++
		fmt.Fprintf(m.out, "%s\n", line)
	}
}

// batch recomputes every stale partition of every view and advances them.
func (f *fixture) batch() {
	f.t.Helper()
	for _, v := range f.spec.Views {
		p, err := run[PendingResult](f, f.acts.Pending, ViewInput{View: v.Name})
		if err != nil {
			f.t.Fatal(err)
		}
		for _, part := range p.Stale {
			if _, err := run[RecomputeResult](f, f.acts.Recompute, PartitionInput{View: v.Name, Partition: part}); err != nil {
				f.t.Fatal(err)
			}
		}
		if _, err := run[AdvanceResult](f, f.acts.Advance, ViewInput{View: v.Name}); err != nil {
			f.t.Fatal(err)
		}
	}
}

// lakeObjects counts the store's objects and bytes under prefixes.
func (f *fixture) lakeObjects() (n int, bytes int64) {
	f.t.Helper()
	for _, prefix := range []string{"raw/", "views/", "corrections/"} {
		objs, err := f.acts.Store.List(f.t.Context(), prefix)
		if err != nil {
			f.t.Fatal(err)
		}
		for _, o := range objs {
			n++
			bytes += o.Size
		}
	}
	return n, bytes
}

// checkViews holds every view's batch files to the oracle on windows from
// `from` on, or from where the view's retention keeps them.
func (f *fixture) checkViews(db *sql.DB, from time.Time) {
	f.t.Helper()
	for _, v := range f.spec.Views {
		snap, err := f.acts.viewTable(v).Snapshot(f.t.Context())
		if err != nil {
			f.t.Fatal(err)
		}
		if kept := timeProp(snap, lake.PropRetainedFrom); kept.After(from) {
			from = kept
		}
		where := fmt.Sprintf("window_start >= make_timestamptz(%d)", from.UnixMicro())
		// The views' windows fit their partitions: the windows from a
		// partition start hold exactly the events from it.
		want, err := oracle.ViewRows(f.t.Context(), db, v, fmt.Sprintf("ts >= make_timestamptz(%d)", from.UnixMicro()))
		if err != nil {
			f.t.Fatal(err)
		}
		paths, err := f.acts.fetch(f.t.Context(), snap.List())
		if err != nil {
			f.t.Fatal(err)
		}
		got, err := oracle.QueryRows(f.t.Context(), f.acts.DB, v, "SELECT * FROM read_parquet("+sqlList(paths)+") WHERE "+where)
		f.acts.Cache.Unpin(paths)
		if err != nil {
			f.t.Fatal(err)
		}
		if d := oracle.Diff(got, want); d != "" || len(want) == 0 {
			f.t.Errorf("view %s from %s: %d windows, the oracle %d:\n%s", v.Name, from, len(got), len(want), d)
		}
	}
}

// TestLakeLifecycleMonth writes 30 days of event time, sparse (two hours a
// day), in three rounds so that partitions hold several raw files, then
// runs Retention, Optimize and Vacuum: one raw file per sealed partition,
// nothing unreferenced older than the vacuum retention, the logs
// checkpointed and truncated, every view equal to the oracle on the range
// kept, and the range dropped stays dropped.
func TestLakeLifecycleMonth(t *testing.T) {
	m := runMonth(t)
	t.Logf("the lake: %d objects, %d bytes before; %d objects, %d bytes after", m.objectsBefore, m.bytesBefore, m.objectsAfter, m.bytesAfter)
}

// BenchmarkLakeMonth is TestLakeLifecycleMonth's month, measured: the
// objects and bytes in the lake before and after Retention, Optimize and
// Vacuum, and how long the three took.
func BenchmarkLakeMonth(b *testing.B) {
	var m monthFigures
	for b.Loop() {
		m = runMonth(b)
	}
	b.ReportMetric(float64(m.objectsBefore), "objects-before")
	b.ReportMetric(float64(m.objectsAfter), "objects-after")
	b.ReportMetric(float64(m.bytesBefore)/1e6, "MB-before")
	b.ReportMetric(float64(m.bytesAfter)/1e6, "MB-after")
	b.ReportMetric(m.lifecycle.Seconds(), "lifecycle-s")
}

type monthFigures struct {
	objectsBefore, objectsAfter int
	bytesBefore, bytesAfter     int64
	lifecycle                   time.Duration // Retention, Optimize and Vacuum
}

func runMonth(t testing.TB) monthFigures {
	var fig monthFigures
	sp, err := spec.Parse("month.yaml", []byte(monthSpec))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureWith(t, sp)
	ctx := t.Context()
	// The month ends today: the lake's own clock (commit and object times)
	// is the wall clock, and the activities' clock runs ahead of it.
	end := time.Now().UTC().Truncate(24 * time.Hour)
	f.now = end.Add(24 * time.Hour) // every partition sealed
	out, err := os.Create(filepath.Join(t.TempDir(), "month.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	m := &month{f: f, out: out}
	for round := range 3 {
		for day := range 30 {
			for _, hour := range []int{3, 15} {
				at := end.AddDate(0, 0, -30+day).Add(time.Duration(hour)*time.Hour + time.Duration(round)*11*time.Minute)
				m.publish(at, 100-30*round, fmt.Sprintf("r%d-d%d-h%d", round, day, hour))
			}
		}
		f.compact()
		f.batch()
	}
	out.Close()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := oracle.Load(ctx, db, sp.Stream("payments"), out.Name()); err != nil {
		t.Fatal(err)
	}
	f.checkViews(db, time.Time{})
	raw := f.raw()
	objects, bytes := f.lakeObjects()
	fig.objectsBefore, fig.bytesBefore = objects, bytes
	if len(raw.Files) < 2*len(raw.Partitions()) {
		t.Fatalf("the rounds made %d raw files for %d partitions; the test needs several per partition", len(raw.Files), len(raw.Partitions()))
	}

	// Retention: raw keeps 20 days, merchant_hour 10.
	began := time.Now()
	ret, err := run[RetentionResult](f, f.acts.Retention, StreamInput{Stream: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	rawFrom := lake.PartitionOf(f.now.Add(-20*24*time.Hour).UnixMicro(), time.Hour).Start
	hourFrom := lake.PartitionOf(f.now.Add(-10*24*time.Hour).UnixMicro(), time.Hour).Start
	if got := timeProp(f.raw(), lake.PropRetainedFrom); !got.Equal(rawFrom) {
		t.Errorf("raw table retained from %s, want %s", got, rawFrom)
	}
	hour, _ := lake.OpenTable(f.acts.Store, lake.ViewTable("merchant_hour")).Snapshot(ctx)
	if got := timeProp(hour, lake.PropRetainedFrom); !got.Equal(hourFrom) {
		t.Errorf("merchant_hour retained from %s, want %s", got, hourFrom)
	}
	if len(ret.Tables) < 3 {
		t.Errorf("retention dropped partitions of %d tables: %+v", len(ret.Tables), ret)
	}
	for _, p := range f.raw().Partitions() {
		if pp, _ := lake.ParsePartition(p, time.Hour); pp.Start.Before(rawFrom) {
			t.Errorf("raw partition %s outlived the retention (from %s)", p, rawFrom)
		}
	}
	// Optimize, then the views again: every partition's input changed.
	opt, err := run[OptimizeResult](f, f.acts.Optimize, StreamInput{Stream: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	fig.lifecycle += time.Since(began)
	raw = f.raw()
	if len(raw.Files) != len(raw.Partitions()) || len(opt.Partitions) != len(raw.Partitions()) {
		t.Errorf("after Optimize: %d raw files in %d partitions, %d rewritten", len(raw.Files), len(raw.Partitions()), len(opt.Partitions))
	}
	f.batch()
	f.checkViews(db, rawFrom)
	if again, err := run[OptimizeResult](f, f.acts.Optimize, StreamInput{Stream: "payments"}); err != nil || len(again.Partitions) != 0 {
		t.Errorf("Optimize again rewrote %d partitions (%v): it must be idempotent", len(again.Partitions), err)
	}

	// Vacuum, once the removed files are older than its retention.
	f.now = time.Now().Add(2 * time.Hour)
	began = time.Now()
	if _, err := run[VacuumResult](f, f.acts.Vacuum, VacuumInput{Stream: "payments", Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	fig.lifecycle += time.Since(began)
	after, afterBytes := f.lakeObjects()
	fig.objectsAfter, fig.bytesAfter = after, afterBytes
	for _, name := range []string{lake.RawTable("payments"), lake.ViewTable("merchant_10m"), lake.ViewTable("merchant_hour"), lake.CorrectionsTable("merchant_10m")} {
		tbl := lake.OpenTable(f.acts.Store, name)
		snap, err := tbl.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := f.acts.Store.List(ctx, name+"/")
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if strings.Contains(o.Key, "/_log/") {
				if v, ok := logVersionOf(o.Key); ok && v < snap.Version {
					t.Errorf("%s: log object %s is before the checkpoint at version %d", name, o.Key, snap.Version)
				}
				continue
			}
			if _, live := snap.Files[o.Key]; !live {
				t.Errorf("%s: %s is referenced by no snapshot and outlived the vacuum", name, o.Key)
			}
		}
		// A fresh reader rebuilds the table from the checkpoint alone.
		fresh, err := lake.OpenTable(f.acts.Store, name).Snapshot(ctx)
		if err != nil || fresh.Version != snap.Version || len(fresh.Files) != len(snap.Files) {
			t.Errorf("%s: a fresh reader after the vacuum sees version %d with %d files (%v), want %d with %d", name, fresh.Version, len(fresh.Files), err, snap.Version, len(snap.Files))
		}
	}
	if after >= objects {
		t.Errorf("the lake holds %d objects after its lifecycle, %d before", after, objects)
	}
	f.checkViews(db, rawFrom)

	// An event from the dropped range, arriving now, stays dropped.
	m.out, _ = os.Create(filepath.Join(t.TempDir(), "late.ndjson"))
	m.publish(rawFrom.Add(-48*time.Hour), 3, "too-late")
	m.out.Close()
	if res := f.compact(); res.Expired != 3 || res.Rows != 0 {
		t.Errorf("compacting events from the dropped range: %+v, want 3 expired", res)
	}
	if p, err := run[PendingResult](f, f.acts.Pending, ViewInput{View: "merchant_hour"}); err != nil || len(p.Stale) != 0 {
		t.Errorf("merchant_hour has stale partitions after retention: %+v (%v)", p, err)
	}
	return fig
}

func logVersionOf(key string) (int64, bool) {
	name := key[strings.LastIndex(key, "/")+1:]
	var v int64
	if _, err := fmt.Sscanf(name, "%020d", &v); err != nil || len(name) < 20 {
		return 0, false
	}
	return v, true
}

func sqlList(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = spec.QuoteString(p)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
