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
	t    testing.TB
	acts *Activities
	env  *testsuite.TestActivityEnvironment
	js   jetstream.JetStream
	spec *spec.Spec
	now  time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, stacktest.FastSpec(t))
}

func newFixtureWith(t testing.TB, sp *spec.Spec) *fixture {
	t.Helper()
	ctx := t.Context()
	_, _, js := stacktest.NATS(t)
	f := &fixture{t: t, js: js, spec: sp, now: time.Now()}
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
	// One that has written windows but closed none yet (its first
	// checkpoint still writing them) holds it too: those values are not
	// final.
	if _, err := kv.Put(ctx, fmt.Sprintf("%d.0", start.UnixMicro()), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if adv, err = run[AdvanceResult](f, f.acts.Advance, ViewInput{View: view}); err != nil || !adv.To.Before(start.Add(time.Minute)) || !strings.Contains(adv.Waiting, "closed none") {
		t.Errorf("advance with the speed layer's windows written and none closed: %+v, %v; want it held, waiting for the speed layer", adv, err)
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

// TestOnlyALandedMoveCorrects: corrections stand only with the view commit
// they were drawn for. Two advances race over a partition: one read it
// before late data was recomputed into it, one read it after but lost the
// tideline to a third. Only the winner's corrections are recorded, and
// late data recomputed below the tideline is a batch correction. A move
// whose activity stopped before recording its corrections has them
// recorded by the next advance. (The soak found the loser's corrections
// standing and the winner's dropped, when they were keyed by partition.)
func TestOnlyALandedMoveCorrects(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	view := "merchant_minute"
	v := f.spec.View(view)
	start := f.now.Add(-time.Hour).Truncate(time.Minute) // long past: sealed once compacted
	onTime := f.publish(50, start, "on-time")
	f.compact()
	pending, err := run[PendingResult](f, f.acts.Pending, ViewInput{View: view})
	if err != nil || len(pending.Stale) != 1 {
		t.Fatalf("pending %+v, %v: want one stale partition", pending, err)
	}
	path := pending.Stale[0]
	p, _ := lake.ParsePartition(path, v.Stream.Partition)
	recompute := func() RecomputeResult {
		t.Helper()
		r, err := run[RecomputeResult](f, f.acts.Recompute, PartitionInput{View: view, Partition: path})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	recompute()
	// A running speed layer that has closed every window and served none
	// of them: every batch window is a correction.
	kv, err := f.js.KeyValue(ctx, stream.ViewBucket(view))
	if err != nil {
		t.Fatal(err)
	}
	wm, _ := json.Marshal(stream.WatermarkJSON{Watermark: f.now})
	if _, err := kv.Put(ctx, stream.WatermarkKey, wm); err != nil {
		t.Fatal(err)
	}
	// loser moves the tideline over the partition as an advance that read
	// it in s would, with the corrections drawn from that read.
	loser := func(s *viewState) error {
		t.Helper()
		files := s.batchFiles[path]
		batch, err := f.acts.readBatch(ctx, v, files, p.Start, p.End())
		if err != nil {
			t.Fatal(err)
		}
		rows, _ := diff(v, KindSpeed, windows{}, batch, f.now, f.now)
		var keys []string
		for _, f := range files {
			keys = append(keys, f.Key)
		}
		_, err = f.acts.commitWithCorrections(ctx, v, lake.Commit{Op: "advance",
			Props:   map[string]string{lake.PropTideline: formatTime(p.End())},
			IfProps: map[string]string{lake.PropTideline: s.batch.Props[lake.PropTideline]},
			IfFiles: map[string][]string{path: keys}}, KindSpeed, map[string]*lake.Rows{path: rows})
		return err
	}
	early, err := f.acts.readView(ctx, view)
	if err != nil {
		t.Fatal(err)
	}
	late := f.publish(20, start.Add(30*time.Second), "late")
	f.compact()
	if r := recompute(); r.Corrections != 0 {
		t.Errorf("recompute above the tideline: %d corrections, want none (the advance corrects)", r.Corrections)
	}
	if err := loser(early); !errors.Is(err, lake.ErrConflict) {
		t.Fatalf("move drawn from the batch file before late data: %v, want ErrConflict", err)
	}
	current, err := f.acts.readView(ctx, view)
	if err != nil {
		t.Fatal(err)
	}
	adv, err := run[AdvanceResult](f, f.acts.Advance, ViewInput{View: view})
	if err != nil || adv.Passed == 0 || adv.Corrections == 0 {
		t.Fatalf("advance: %+v, %v; want it over the partition, with corrections", adv, err)
	}
	if err := loser(current); !errors.Is(err, lake.ErrConflict) {
		t.Fatalf("move after the tideline moved: %v, want ErrConflict", err)
	}
	if got, want := f.correctedPayments(view, KindSpeed), int64(onTime+late); got != want {
		t.Errorf("speed corrections add %d payments, want %d: the winner's, once", got, want)
	}
	staged, err := f.acts.Store.List(ctx, lake.CorrectionsTable(view)+"/"+path+"/")
	if err != nil || len(staged) != 1 {
		t.Errorf("corrections files in the store: %+v, %v; want only the winner's (the losers' deleted)", staged, err)
	}
	// Late data below the tideline: a batch correction, with its recompute.
	later := f.publish(5, start.Add(40*time.Second), "later")
	f.compact()
	if r := recompute(); r.Corrections == 0 {
		t.Errorf("recompute below the tideline: no corrections")
	}
	if got := f.correctedPayments(view, KindBatch); got != int64(later) {
		t.Errorf("batch corrections add %d payments, want %d", got, later)
	}
	// A commit that landed, whose activity stopped before recording its
	// corrections: the next advance records them.
	measures := make([]*int64, len(v.Measures))
	for i := range measures {
		measures[i] = ptr(7)
	}
	rows, _ := diff(v, KindSpeed, windows{}, windows{"x": {start: start.UnixMicro(), measures: measures}}, f.now, f.now)
	snap, err := f.acts.commitWithCorrections(ctx, v, lake.Commit{Op: "advance"}, KindSpeed, map[string]*lake.Rows{path: rows})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run[AdvanceResult](f, f.acts.Advance, ViewInput{View: view}); err != nil {
		t.Fatal(err)
	}
	if got, want := f.correctedPayments(view, KindSpeed), int64(onTime+late+7); got != want {
		t.Errorf("after a crash between move and record: speed corrections add %d payments, want %d", got, want)
	}
	now, err := f.acts.viewTable(v).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range now.Props {
		if strings.HasPrefix(k, lake.PropStagedCorrection) {
			t.Errorf("view table version %d (staged at %d) still names %s", now.Version, snap.Version, k)
		}
	}
}

func ptr(x int64) *int64 { return &x }

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
