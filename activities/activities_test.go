package activities

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"tideline/internal/stacktest"
	"tideline/lake"
	"tideline/spec"
	"tideline/stream"
)

// fixture is the activities on an embedded NATS and a local-directory
// lake, with a clock the test moves forward.
type fixture struct {
	t    *testing.T
	acts *Activities
	env  *testsuite.TestActivityEnvironment
	js   jetstream.JetStream
	spec *spec.Spec
	now  time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := t.Context()
	_, _, js := stacktest.NATS(t)
	f := &fixture{t: t, js: js, spec: stacktest.FastSpec(t), now: time.Now()}
	if err := stream.Setup(ctx, js, f.spec, stream.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := lake.Open(ctx, "file://"+t.TempDir(), lake.S3Config{}, lake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := lake.OpenDuckDB(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cache, err := lake.NewCache(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	f.acts, err = New(Config{Spec: f.spec, Store: store, JS: js, DB: db, Cache: cache, TmpDir: t.TempDir(), ChunkMessages: 1000,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	var s testsuite.WorkflowTestSuite
	s.SetLogger(tlog.NewStructuredLogger(f.acts.Log))
	f.env = s.NewTestActivityEnvironment()
	f.env.RegisterActivity(f.acts)
	return f
}

// publish sends n payments at event times from ts, one per 10ms; every
// tenth is invalid.
func (f *fixture) publish(n int, ts time.Time, tag string) (valid int) {
	f.t.Helper()
	for i := range n {
		data := fmt.Sprintf(`{"payment_id":"%s-%d","ts":%q,"card_id":"c%d","merchant_id":"m%d","country":"US","amount":"1.%02d","currency":"USD","channel":"pos"}`,
			tag, i, ts.Add(time.Duration(i)*10*time.Millisecond).Format(time.RFC3339Nano), i%7, i%3, i%100)
		if i%10 == 9 {
			data = `{"payment_id":"broken"`
		} else {
			valid++
		}
		if _, err := f.js.Publish(f.t.Context(), "payments.events.0", []byte(data)); err != nil {
			f.t.Fatal(err)
		}
	}
	return valid
}

func run[T any](f *fixture, act any, in any) (T, error) {
	f.t.Helper()
	var out T
	v, err := f.env.ExecuteActivity(act, in)
	if err == nil {
		err = v.Get(&out)
	}
	return out, err
}

func (f *fixture) compact() CompactResult {
	f.t.Helper()
	plan, err := run[PlanResult](f, f.acts.Plan, PlanInput{Stream: "payments"})
	if err != nil {
		f.t.Fatal(err)
	}
	res, err := run[CompactResult](f, f.acts.Compact, CompactInput{Stream: "payments", From: plan.From, To: plan.To, Covered: plan.Covered})
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

func (f *fixture) raw() *lake.Snapshot {
	f.t.Helper()
	s, err := lake.OpenTable(f.acts.Store, lake.RawTable("payments")).Snapshot(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func TestCompactCommitsEachRangeOnceAndResumes(t *testing.T) {
	f := newFixture(t)
	valid := f.publish(2500, f.now.Add(-time.Hour), "a")
	// A run cut short at sequence 1500, then a run over everything: the
	// second starts after what the first committed.
	part, err := run[CompactResult](f, f.acts.Compact, CompactInput{Stream: "payments", From: 1, To: 1500})
	if err != nil || part.Messages != 1500 || part.Commits != 2 || f.raw().HighSeq != 1500 {
		t.Fatalf("first run: %+v, %v (high sequence %d)", part, err, f.raw().HighSeq)
	}
	res, err := run[CompactResult](f, f.acts.Compact, CompactInput{Stream: "payments", From: 1, To: 2500})
	if err != nil || res.Messages != 1000 || res.Rejected != 100 {
		t.Fatalf("second run: %+v, %v", res, err)
	}
	if raw := f.raw(); raw.Rows() != int64(valid) || raw.HighSeq != 2500 {
		t.Errorf("raw table has %d rows to sequence %d; want %d valid events to 2500", raw.Rows(), raw.HighSeq, valid)
	}
	// The same range again commits nothing (I4).
	v := f.raw().Version
	again, err := run[CompactResult](f, f.acts.Compact, CompactInput{Stream: "payments", From: 1, To: 2500})
	if err != nil || again.Commits != 0 || f.raw().Version != v {
		t.Errorf("a repeated run: %+v, %v; the table went from version %d to %d", again, err, v, f.raw().Version)
	}
}

func TestSealingHoldsRecomputeAndTheTideline(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	// Events of this minute: their partition is not sealed until the
	// broker has covered its end + lateness + out-of-orderness + idle.
	// Compaction's own commits record the broker's times; the fake clock
	// only moves what Plan says is covered.
	start := f.now.Truncate(time.Minute)
	f.publish(500, start, "live")
	f.compact()
	view := "merchant_minute"
	p, err := run[PendingResult](f, f.acts.Pending, ViewInput{View: view})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Unsealed) == 0 || len(p.Stale) != 0 {
		t.Fatalf("pending %+v: want the live partition unsealed", p)
	}
	if _, err := run[RecomputeResult](f, f.acts.Recompute, PartitionInput{View: view, Partition: p.Unsealed[0]}); !isType(err, ErrTypeNotSealed) {
		t.Errorf("recompute of an unsealed partition: %v, want %s", err, ErrTypeNotSealed)
	}
	adv, err := run[AdvanceResult](f, f.acts.Advance, ViewInput{View: view})
	if err != nil || !adv.To.Before(start.Add(time.Minute)) {
		t.Errorf("advance before sealing: %+v, %v; the tideline must stay below the live partition", adv, err)
	}
	// Time passes and compaction covers it: now it is sealed and stale.
	state, err := run[PartitionState](f, f.acts.Partition, PartitionInput{View: view, Partition: p.Unsealed[0]})
	if err != nil {
		t.Fatal(err)
	}
	f.now = state.SealedAt.Add(f.acts.ClockSkew)
	f.compact()
	p, err = run[PendingResult](f, f.acts.Pending, ViewInput{View: view})
	if err != nil || len(p.Stale) == 0 {
		t.Fatalf("pending after covering: %+v, %v", p, err)
	}
	for _, part := range p.Stale {
		if _, err := run[RecomputeResult](f, f.acts.Recompute, PartitionInput{View: view, Partition: part}); err != nil {
			t.Fatal(err)
		}
	}
	// A running speed layer that has not closed the partition's windows
	// holds the tideline: what it served is not final yet.
	kv, err := f.js.KeyValue(ctx, stream.ViewBucket(view))
	if err != nil {
		t.Fatal(err)
	}
	wm, _ := json.Marshal(stream.WatermarkJSON{Watermark: start})
	if _, err := kv.Put(ctx, stream.WatermarkKey, wm); err != nil {
		t.Fatal(err)
	}
	if adv, err = run[AdvanceResult](f, f.acts.Advance, ViewInput{View: view}); err != nil || !adv.To.Before(start.Add(time.Minute)) || !strings.Contains(adv.Waiting, "speed layer") {
		t.Errorf("advance with the speed layer behind: %+v, %v; want it held, waiting for the speed layer", adv, err)
	}
	// One that has not written its watermark for SpeedGrace is stopped,
	// and holds nothing.
	f.now = f.now.Add(f.acts.SpeedGrace + time.Minute)
	if adv, err = run[AdvanceResult](f, f.acts.Advance, ViewInput{View: view}); err != nil || adv.To.Before(start.Add(time.Minute)) {
		t.Errorf("advance after sealing, the speed layer stopped: %+v, %v", adv, err)
	}
	// Recompute of a current partition does nothing (I4).
	snap, _ := lake.OpenTable(f.acts.Store, lake.ViewTable(view)).Snapshot(ctx)
	r, err := run[RecomputeResult](f, f.acts.Recompute, PartitionInput{View: view, Partition: p.Stale[0]})
	after, _ := lake.OpenTable(f.acts.Store, lake.ViewTable(view)).Snapshot(ctx)
	if err != nil || !r.Current || after.Version != snap.Version {
		t.Errorf("recompute of a current partition: %+v, %v; version %d -> %d", r, err, snap.Version, after.Version)
	}
}

func TestBadInputIsNotRetried(t *testing.T) {
	f := newFixture(t)
	for name, call := range map[string]func() error{
		"unknown stream": func() error { _, err := run[PlanResult](f, f.acts.Plan, PlanInput{Stream: "nope"}); return err },
		"unknown view":   func() error { _, err := run[PendingResult](f, f.acts.Pending, ViewInput{View: "nope"}); return err },
		"garbled partition": func() error {
			_, err := run[PartitionState](f, f.acts.Partition, PartitionInput{View: "merchant_minute", Partition: "yesterday"})
			return err
		},
		"bad mode": func() error {
			f.publish(10, f.now.Add(-time.Hour), "m")
			f.compact()
			_, err := run[BackfillPlanResult](f, f.acts.BackfillPlan, BackfillPlanInput{View: "*", From: f.now.Add(-2 * time.Hour), To: f.now, Mode: "some"})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := call()
			var app *temporal.ApplicationError
			if !errors.As(err, &app) || !app.NonRetryable() {
				t.Errorf("error %v, want a non-retryable application error", err)
			}
		})
	}
}

func isType(err error, typ string) bool {
	var app *temporal.ApplicationError
	return errors.As(err, &app) && app.Type() == typ
}

// TestRecomputeAfterSpeedCorrections: an advance has recorded a partition's
// speed corrections, drawn from its batch file, and late data recomputes the
// partition before the advance's move lands. The change is a correction of
// its own, recorded once whether the recompute or the advance's retry sees
// it first.
func TestRecomputeAfterSpeedCorrections(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	view := "merchant_minute"
	v := f.spec.View(view)
	start := f.now.Add(-time.Hour).Truncate(time.Minute) // long past: sealed once compacted
	f.publish(50, start, "on-time")
	f.compact()
	pending, err := run[PendingResult](f, f.acts.Pending, ViewInput{View: view})
	if err != nil || len(pending.Stale) != 1 {
		t.Fatalf("pending %+v, %v: want one stale partition", pending, err)
	}
	path := pending.Stale[0]
	if _, err := run[RecomputeResult](f, f.acts.Recompute, PartitionInput{View: view, Partition: path}); err != nil {
		t.Fatal(err)
	}
	before, err := f.acts.readView(ctx, view) // what the advance read
	if err != nil {
		t.Fatal(err)
	}
	p, _ := lake.ParsePartition(path, v.Stream.Partition)
	// The advance's speed corrections land (the speed layer served nothing).
	if err := f.acts.recordCorrections(ctx, v, map[string]correctionFile{speedCorrectionsKey(v, p): {path, lake.NewRows(lake.CorrectionsSchema(), 0)}}); err != nil {
		t.Fatal(err)
	}
	// Late data, then its recompute, above the tideline.
	late := f.publish(20, start.Add(30*time.Second), "late")
	f.compact()
	r, err := run[RecomputeResult](f, f.acts.Recompute, PartitionInput{View: view, Partition: path})
	if err != nil || r.Corrections == 0 {
		t.Fatalf("recompute after the speed corrections: %+v, %v; want its change recorded", r, err)
	}
	// The advance's move loses to it and records what changed: already there.
	if err := f.acts.correctReplaced(ctx, before, []lake.Partition{p}); err != nil {
		t.Fatal(err)
	}
	if got := f.correctedPayments(view, KindBatch); got != int64(late) {
		t.Errorf("batch corrections add %d payments; the late data had %d", got, late)
	}
}

// correctedPayments sums the count measure's corrections of one kind.
func (f *fixture) correctedPayments(view, kind string) int64 {
	f.t.Helper()
	snap, err := lake.OpenTable(f.acts.Store, lake.CorrectionsTable(view)).Snapshot(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	paths, err := f.acts.fetch(f.t.Context(), snap.List())
	if err != nil {
		f.t.Fatal(err)
	}
	defer f.acts.Cache.Unpin(paths)
	var sum int64
	q := fmt.Sprintf("SELECT coalesce(sum(delta), 0) FROM read_parquet([%s]) WHERE measure = 'payments' AND kind = %s", quoteList(paths), spec.QuoteString(kind))
	if err := f.acts.DB.QueryRowContext(f.t.Context(), q).Scan(&sum); err != nil {
		f.t.Fatal(err)
	}
	return sum
}

func quoteList(xs []string) string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = spec.QuoteString(x)
	}
	return strings.Join(out, ", ")
}
