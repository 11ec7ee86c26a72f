package serve

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/testsuite"

	"tideline/activities"
	"tideline/examples/payments"
	"tideline/internal/oracle"
	"tideline/internal/stacktest"
	"tideline/lake"
	"tideline/spec"
	"tideline/stream"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixture is a lake with history behind the tideline and live windows above
// it: real NATS with the speed layer, the batch activities run directly,
// and a server over both.
type fixture struct {
	t      testing.TB
	spec   *spec.Spec
	srv    *Server
	http   *httptest.Server
	oracle *sql.DB
	js     jetstream.JetStream
	store  lake.Store
	// stopSpeed stops the speed layer.
	stopSpeed func()
}

func newFixture(t testing.TB) *fixture { return newFixtureWith(t, 0) }

// newFixtureWith is newFixture with the payments stream in partitions
// partitions (none when 0), processed by two group members.
func newFixtureWith(t testing.TB, partitions int) *fixture {
	t.Helper()
	ctx := t.Context()
	f := &fixture{t: t, spec: stacktest.FastSpec(t)}
	if partitions > 0 {
		var err error
		if f.spec, err = spec.Parse("partitioned.yaml", []byte(stacktest.PartitionedSpecYAML(t, partitions))); err != nil {
			t.Fatal(err)
		}
	}
	_, nc, js := stacktest.NATS(t)
	if err := stream.Setup(ctx, js, f.spec, stream.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	st := f.spec.Stream("payments")
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// speedState is the speed layer's open windows and last sequence read.
	var speedState func() (int, uint64)
	if partitions == 0 {
		proc := stream.NewProcessor(nc, js, st, stream.ProcessorOptions{Log: quiet})
		go func() { done <- proc.Run(pctx) }()
		speedState = func() (open int, seq uint64) {
			proc.Operator(func(op *stream.Operator) { open, seq = op.OpenWindows(), op.Seq })
			return open, seq
		}
	} else {
		var groups []*stream.Group
		for _, name := range []string{"a", "b"} {
			g := stream.NewGroup(nc, js, st, stream.GroupOptions{Name: name, Log: quiet, Processor: stream.ProcessorOptions{Log: quiet}})
			groups = append(groups, g)
		}
		go func() {
			errs := make(chan error, len(groups))
			for _, g := range groups {
				go func() { errs <- g.Run(pctx) }()
			}
			var err error
			for range groups {
				err = errors.Join(err, <-errs)
			}
			done <- err
		}()
		speedState = func() (open int, seq uint64) {
			held := 0
			for _, g := range groups {
				held += len(g.Held())
				g.Operators(func(op *stream.Operator) { open, seq = open+op.OpenWindows(), max(seq, op.Seq) })
			}
			if held < partitions {
				open++ // a partition between members
			}
			return open, seq
		}
	}
	var once sync.Once
	f.js, f.stopSpeed = js, func() { once.Do(func() { stop(); <-done }) }
	t.Cleanup(f.stopSpeed)

	// History: 10,000 events over about 3 minutes in January. Live: 1,500
	// events from now on, in a partition compaction cannot seal yet.
	out := filepath.Join(t.TempDir(), "out.ndjson")
	w, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	spread := func(r *rand.Rand, i int, ts time.Time) map[string]any {
		return payments.Payment(r, i, ts.Add(time.Duration(i)*19*time.Millisecond))
	}
	if _, err := stream.Generate(ctx, js, st, spread, stream.GenOptions{Count: 10000, OOO: 0.05, Dup: 0.01, Invalid: 0.005, Seed: 5, Start: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), Out: w}); err != nil {
		t.Fatal(err)
	}
	// The live partition must stay unsealed until the batch below has run,
	// some 15 s from here (the hopping windows close last): too near its end,
	// wait for the next one.
	if left := time.Until(lake.PartitionOf(time.Now().UnixMicro(), st.Partition).End()); left < 25*time.Second {
		time.Sleep(left)
	}
	if _, err := stream.Generate(ctx, js, st, payments.Payment, stream.GenOptions{Count: 1500, OOO: 0.05, Seed: 6, Start: time.Now().UTC(), Out: w}); err != nil {
		t.Fatal(err)
	}
	w.Close()

	store, err := lake.Open(ctx, "file://"+t.TempDir(), lake.S3Config{}, lake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.oracle, err = sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.oracle.Close() })
	if err := oracle.Load(ctx, f.oracle, st, out); err != nil {
		t.Fatal(err)
	}
	// Every speed window closed and written to KV.
	jss, err := js.Stream(ctx, "payments")
	if err != nil {
		t.Fatal(err)
	}
	info, err := jss.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		open, seq := speedState()
		if open == 0 && seq >= info.State.LastSeq {
			time.Sleep(1500 * time.Millisecond)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("speed layer at sequence %d with %d windows open", seq, open)
		}
	}
	// Batch after: the tideline waits for the speed layer to close a
	// partition's windows before passing it.
	f.batch(store, js)
	f.store = store
	f.srv, err = Open(ctx, Config{Spec: f.spec, Store: store, NC: nc, JS: js, CacheDir: t.TempDir(),
		QueryTimeout: time.Second, MaxRows: 1_000_000, StaleAfter: 2 * time.Second, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.srv.Close() })
	if err := f.srv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	f.http = httptest.NewServer(f.srv.Handler(nil, nil))
	t.Cleanup(f.http.Close)
	return f
}

// batch compacts the stream, recomputes every sealed partition and advances
// the tidelines, with the activities run in Temporal's activity test
// environment.
func (f *fixture) batch(store lake.Store, js jetstream.JetStream) {
	f.t.Helper()
	ctx := f.t.Context()
	db, err := lake.OpenDuckDB(ctx, "")
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { db.Close() })
	cache, _ := lake.NewCache(f.t.TempDir(), 1<<30)
	acts, err := activities.New(activities.Config{Spec: f.spec, Store: store, JS: js, DB: db, Cache: cache, TmpDir: f.t.TempDir(), Log: quiet})
	if err != nil {
		f.t.Fatal(err)
	}
	var suite testsuite.WorkflowTestSuite
	suite.SetLogger(tlog.NewStructuredLogger(quiet))
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	run := func(act, in, out any) {
		v, err := env.ExecuteActivity(act, in)
		if err == nil {
			err = v.Get(out)
		}
		if err != nil {
			f.t.Fatal(err)
		}
	}
	var plan activities.PlanResult
	run(acts.Plan, activities.PlanInput{Stream: "payments"}, &plan)
	var cres activities.CompactResult
	run(acts.Compact, activities.CompactInput{Stream: "payments", From: plan.From, To: plan.To, Covered: plan.Covered}, &cres)
	for _, v := range plan.Views {
		var p activities.PendingResult
		run(acts.Pending, activities.ViewInput{View: v}, &p)
		for _, part := range p.Stale {
			var r activities.RecomputeResult
			run(acts.Recompute, activities.PartitionInput{View: v, Partition: part}, &r)
		}
		var adv activities.AdvanceResult
		run(acts.Advance, activities.ViewInput{View: v}, &adv)
		if adv.To.IsZero() || len(p.Unsealed) == 0 {
			f.t.Fatalf("view %s: tideline %s with %d partitions unsealed; want history below it and live data above", v, adv.To, len(p.Unsealed))
		}
	}
}

// do sends a request and decodes the JSON answer into out, returning the
// status code.
func (f *fixture) do(method, path, token string, body any, out any) int {
	f.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(f.t.Context(), method, f.http.URL+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		d := json.NewDecoder(resp.Body)
		d.UseNumber()
		if err := d.Decode(out); err != nil {
			f.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

// viewRows turns GET /v1/views rows into the oracle's form.
func viewRows(t *testing.T, v *spec.View, rows []ViewRow) map[string]oracle.Row {
	t.Helper()
	out := map[string]oracle.Row{}
	for _, r := range rows {
		dims := make([]string, len(v.GroupBy))
		for i, c := range v.GroupBy {
			dims[i] = oracle.Render(r.Dims[c.Name])
		}
		ms := make([]string, len(v.Measures))
		for i, m := range v.Measures {
			x := r.Measures[m.Name]
			if n, ok := x.(json.Number); ok {
				if _, scale := m.Type(); scale > 0 {
					minor, err := spec.ParseDecimal(n.String(), scale)
					if err != nil {
						t.Fatal(err)
					}
					x = minor
				}
			}
			ms[i] = oracle.Render(x)
		}
		row := oracle.Row{Start: r.WindowStart, End: r.WindowEnd, Dims: strings.Join(dims, "|"), Measures: strings.Join(ms, "|")}
		key := oracle.Key(r.WindowStart, row.Dims)
		if _, dup := out[key]; dup {
			t.Errorf("view %s: window %s appears twice", v.Name, row)
		}
		out[key] = row
	}
	return out
}
