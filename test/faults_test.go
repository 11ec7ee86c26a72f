package faults

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"tideline/examples/payments"
	"tideline/internal/devstack"
	"tideline/internal/oracle"
	"tideline/internal/stacktest"
	"tideline/spec"
	"tideline/stream"
	"tideline/workflows"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// stack is everything the suite runs, with what it takes to restart each
// part on the same data and ports.
type stack struct {
	t        testing.TB
	dir, bin string
	spec     *spec.Spec
	env      []string

	natsOpts devstack.NATSOptions
	ns       *devstack.NATS        // one server, or
	cluster  *devstack.NATSCluster // a cluster (topology.natsNodes > 1)
	nc       *nats.Conn
	js       jetstream.JetStream
	tOpts    devstack.TemporalOptions
	temporal *devstack.Temporal
	mOpts    devstack.MinIOOptions
	minio    *devstack.MinIO
	tc       client.Client

	procs     map[string]*exec.Cmd
	args      map[string][]string
	serveURL  string   // the first serve replica's
	serveURLs []string // every replica's

	outs    []string // generator --out files
	invalid int      // malformed events published
}

func ports(t testing.TB, n int) []int {
	out := make([]int, n)
	for i := range out {
		p, err := devstack.StablePort() // processes restart on theirs; a port of the ephemeral range may be taken meanwhile
		if err != nil {
			t.Fatal(err)
		}
		out[i] = p
	}
	return out
}

// topology is how many of each part a stack runs.
type topology struct {
	natsNodes, workers, serves int
	// streams is how many `tideline stream` processes run (at least one),
	// named stream, stream2...; with partitions > 0 the payments stream has
	// that many partitions, and they share them as a group.
	streams, partitions int
}

func startStack(t testing.TB) *stack {
	return startStackWith(t, topology{natsNodes: 1, workers: 1, serves: 1})
}

// startStackWith runs the stack as processes: NATS (a server, or a
// cluster whose streams and buckets have 3 replicas), Temporal and MinIO,
// one stream processor, and the workers and serve replicas asked for,
// named worker, worker2, ... and serve, serve2, ...
func startStackWith(t testing.TB, topo topology) *stack {
	ctx := t.Context()
	topo.streams = max(topo.streams, 1)
	specYAML := stacktest.FastSpecYAML(t)
	if topo.partitions > 0 {
		specYAML = stacktest.PartitionedSpecYAML(t, topo.partitions)
	}
	sp, err := spec.Parse("spec.yaml", []byte(specYAML))
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, dir: t.TempDir(), bin: stacktest.BuildTideline(t), spec: sp, procs: map[string]*exec.Cmd{}, args: map[string][]string{}}
	// Room for one more stream process than asked for: a test may add it.
	p := ports(t, 6+topo.workers+topo.serves+topo.streams)
	specPath := filepath.Join(s.dir, "spec.yaml")
	if err := os.WriteFile(specPath, []byte(specYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"nats", "temporal", "minio"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	natsURL, replicas := "", 1
	if topo.natsNodes > 1 {
		if s.cluster, err = devstack.StartNATSCluster(filepath.Join(s.dir, "nats"), topo.natsNodes); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.cluster.Stop)
		natsURL, replicas = s.cluster.URL(), 3
	} else {
		s.natsOpts = devstack.NATSOptions{Dir: filepath.Join(s.dir, "nats"), Port: p[0]}
		if s.ns, err = devstack.StartNATS(s.natsOpts); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.ns.Stop() })
		natsURL = s.ns.URL
	}
	s.tOpts = devstack.TemporalOptions{Dir: filepath.Join(s.dir, "temporal"), Port: p[1], UIPort: p[2], Log: quiet}
	if s.temporal, err = devstack.StartTemporal(ctx, s.tOpts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.temporal.Stop() })
	s.mOpts = devstack.MinIOOptions{Dir: filepath.Join(s.dir, "minio"), Port: p[3], ConsolePort: p[4], Log: quiet}
	if s.minio, err = devstack.StartMinIO(ctx, s.mOpts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.minio.Stop() })
	if s.nc, err = nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.nc.Close)
	if s.js, err = jetstream.New(s.nc); err != nil {
		t.Fatal(err)
	}
	if s.tc, err = client.Dial(client.Options{HostPort: s.temporal.HostPort, Logger: tlog.NewStructuredLogger(quiet)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.tc.Close)
	m := s.minio
	s.env = []string{"TIDELINE_PPROF=true", "TIDELINE_SPEC=" + specPath, "TIDELINE_NATS_URL=" + natsURL, "TIDELINE_REPLICAS=" + fmt.Sprint(replicas), "TIDELINE_TEMPORAL=" + s.temporal.HostPort,
		"TIDELINE_LAKE=s3://tideline/lake", "TIDELINE_S3_ENDPOINT=" + m.Endpoint, "TIDELINE_S3_ACCESS_KEY=" + m.AccessKey, "TIDELINE_S3_SECRET_KEY=" + m.SecretKey}
	for i := range topo.streams + 1 {
		port := p[5]
		if i > 0 {
			port = p[6+topo.workers+topo.serves+i-1]
		}
		name := numbered("stream", i)
		s.args[name] = []string{"stream", "--http", fmt.Sprintf("127.0.0.1:%d", port), "--member", name, "--lease-ttl", "3s"}
	}
	for i := range topo.workers {
		s.args[numbered("worker", i)] = []string{"worker", "--http", fmt.Sprintf("127.0.0.1:%d", p[6+i]), "--chunk", "5000"}
	}
	for i := range topo.serves {
		port := p[6+topo.workers+i]
		s.serveURLs = append(s.serveURLs, fmt.Sprintf("http://127.0.0.1:%d", port))
		// A soak makes views of millions of windows; check reads them whole.
		s.args[numbered("serve", i)] = []string{"serve", "--http", fmt.Sprintf("127.0.0.1:%d", port), "--max-rows", "50000000", "--query-timeout", "2m"}
	}
	s.serveURL = s.serveURLs[0]
	s.start("stream") // first: it sets the streams up
	s.waitFor("the streams and buckets set up", 2*time.Minute, func() error {
		_, err := s.js.KeyValue(ctx, stream.ViewBucket(s.spec.Views[len(s.spec.Views)-1].Name))
		return err
	})
	for _, name := range slices.Sorted(maps.Keys(s.args)) {
		if name != "stream" && name != numbered("stream", topo.streams) { // the one more is for the test to start
			s.start(name)
		}
	}
	s.waitFor("the stream set up", time.Minute, func() error {
		_, err := s.js.Stream(ctx, "payments")
		return err
	})
	s.waitFor("serve ready", time.Minute, func() error { return s.get("/readyz", nil) })
	return s
}

// numbered names the i-th process of a kind: worker, worker2, worker3...
func numbered(kind string, i int) string {
	if i == 0 {
		return kind
	}
	return fmt.Sprint(kind, i+1)
}

// start runs one of tideline's processes, logging to <dir>/<name>.log.
func (s *stack) start(name string) {
	env := append(append([]string{}, s.env...), "TIDELINE_CACHE="+filepath.Join(s.dir, "cache", name))
	s.procs[name] = stacktest.Start(s.t, s.bin, filepath.Join(s.dir, name+".log"), env, s.args[name]...)
}

// kill9 kills a process with SIGKILL, as a crash would, and starts it again.
func (s *stack) kill9(name string) {
	s.t.Logf("fault: kill -9 %s (pid %d)", name, s.procs[name].Process.Pid)
	_ = s.procs[name].Process.Signal(syscall.SIGKILL)
	_, _ = s.procs[name].Process.Wait()
	s.start(name)
}

func (s *stack) restartNATS() {
	s.t.Log("fault: NATS server restart")
	s.ns.Stop()
	time.Sleep(time.Second)
	var err error
	if s.ns, err = devstack.StartNATS(s.natsOpts); err != nil {
		s.t.Fatal(err)
	}
	s.waitFor("the client reconnected", 30*time.Second, func() error {
		if !s.nc.IsConnected() {
			return fmt.Errorf("not connected")
		}
		return nil
	})
}

func (s *stack) minioDown(d time.Duration) {
	s.t.Logf("fault: MinIO down for %s", d)
	if err := s.minio.Stop(); err != nil {
		s.t.Fatal(err)
	}
	time.Sleep(d)
	var err error
	if s.minio, err = devstack.StartMinIO(s.t.Context(), s.mOpts); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) restartTemporal() {
	s.t.Log("fault: Temporal dev server restart")
	if err := s.temporal.Stop(); err != nil {
		s.t.Fatal(err)
	}
	var err error
	if s.temporal, err = devstack.StartTemporal(s.t.Context(), s.tOpts); err != nil {
		s.t.Fatal(err)
	}
}

// twoBackfills starts two backfills of the same range at once and waits
// for both.
func (s *stack) twoBackfills(round int) {
	s.t.Log("fault: the same backfill started twice at once")
	to := time.Now().UTC().Truncate(time.Minute)
	in := workflows.BackfillInput{View: "*", From: to.Add(-10 * time.Minute), To: to, Mode: "all"}
	var runs []client.WorkflowRun
	for i := range 2 {
		run, err := s.tc.ExecuteWorkflow(s.t.Context(), client.StartWorkflowOptions{ID: fmt.Sprintf("faults-backfill-%d-%d", round, i), TaskQueue: workflows.TaskQueue}, workflows.Backfill, in)
		if err != nil {
			s.t.Fatal(err)
		}
		runs = append(runs, run)
	}
	for _, run := range runs {
		ctx, cancel := context.WithTimeout(s.t.Context(), 5*time.Minute)
		var prog workflows.BackfillProgress
		err := run.Get(ctx, &prog)
		cancel()
		if err != nil {
			var now workflows.BackfillProgress
			if v, qerr := s.tc.QueryWorkflow(s.t.Context(), run.GetID(), "", "progress"); qerr == nil {
				_ = v.Get(&now)
			}
			s.failWithLogs("backfill %s: %v; progress %+v", run.GetID(), err, now)
		}
		if prog.Failed > 0 {
			s.failWithLogs("backfill %s: %+v", run.GetID(), prog)
		}
	}
}

// maintainKilled starts the lake's maintenance (Retention, Optimize,
// Vacuum) and kills the worker while it runs: the run must finish on the
// restarted worker, and the checks after the rounds hold what it rewrote to
// the oracle.
func (s *stack) maintainKilled(round int) {
	s.t.Log("fault: kill -9 the worker during Maintain")
	// A compaction first, so partitions of the rounds before are sealed
	// with several raw files each: Optimize has work.
	if err := s.compact(); err != nil {
		s.failWithLogs("compaction before Maintain: %v", err)
	}
	ctx, cancel := context.WithTimeout(s.t.Context(), 5*time.Minute)
	defer cancel()
	run, err := s.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("faults-maintain-%d", round), TaskQueue: workflows.TaskQueue},
		workflows.Maintain, workflows.MaintainInput{Stream: "payments"})
	if err != nil {
		s.t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	s.kill9("worker")
	var res workflows.MaintainResult
	if err := run.Get(ctx, &res); err != nil {
		s.failWithLogs("maintain after a killed worker: %v", err)
	}
	s.t.Logf("maintain: optimized %d partitions from %d files, vacuumed %d tables", len(res.Optimize.Partitions), res.Optimize.FilesIn, len(res.Vacuum.Tables))
}

// generate publishes n events at 1,000/s with the whole mix, and keeps the
// --out file. It may run beside a fault, so it reports instead of failing.
func (s *stack) generate(round, n int) error {
	out := filepath.Join(s.dir, fmt.Sprintf("out-%d.ndjson", round))
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := stream.Generate(s.t.Context(), s.js, s.spec.Stream("payments"), payments.Payment,
		stream.GenOptions{Count: n, Rate: 1000, OOO: 0.05, Late: 0.01, Dup: 0.01, Invalid: 0.005, Seed: uint64(round) + 1, Out: f})
	s.outs = append(s.outs, out)
	s.invalid += st.Invalid
	if err != nil {
		return fmt.Errorf("generating round %d: %w", round, err)
	}
	return nil
}

func (s *stack) waitFor(what string, timeout time.Duration, check func() error) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.failWithLogs("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// failWithLogs fails with the tail of each process's log (and keepLogs).
func (s *stack) failWithLogs(format string, args ...any) {
	s.t.Helper()
	for _, name := range slices.Sorted(maps.Keys(s.args)) {
		data, _ := os.ReadFile(filepath.Join(s.dir, name+".log"))
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		s.t.Logf("--- %s.log (tail) ---\n%s", name, data)
	}
	s.t.Fatalf(format, args...)
}

// keepLogs keeps the whole logs and the stream processor's and worker's
// goroutine stacks in test/artifacts/faults/, for a failure that needs
// reading. TestFaults calls it when it has failed.
func (s *stack) keepLogs() {
	keep := stacktest.Artifact(s.t, "faults")
	_ = os.RemoveAll(keep)
	_ = os.MkdirAll(keep, 0o755)
	for _, name := range slices.Sorted(maps.Keys(s.args)) {
		data, _ := os.ReadFile(filepath.Join(s.dir, name+".log"))
		_ = os.WriteFile(filepath.Join(keep, name+".log"), data, 0o644)
	}
	for _, name := range []string{"stream", "worker"} {
		resp, err := http.Get("http://" + s.args[name][2] + "/debug/pprof/goroutine?debug=2")
		if err != nil {
			continue
		}
		stacks, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_ = os.WriteFile(filepath.Join(keep, name+".goroutines"), stacks, 0o644)
	}
	s.t.Logf("whole logs and goroutine stacks in %s", keep)
}

func (s *stack) get(path string, out any) error { return stacktest.Get(s.serveURL+path, out) }

func (s *stack) query(q string) ([][]any, error) { return stacktest.Query(s.serveURL, q) }

// compact runs a compaction of every stream now, as the schedule would.
func (s *stack) compact() error {
	for _, st := range s.spec.Streams {
		ctx, cancel := context.WithTimeout(s.t.Context(), 2*time.Minute)
		run, err := s.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("faults-compact-%s-%d", st.Name, time.Now().UnixNano()), TaskQueue: workflows.TaskQueue},
			workflows.Compaction, workflows.CompactionInput{Stream: st.Name})
		if err == nil {
			err = run.Get(ctx, nil)
		}
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// oracle loads every generated event into a fresh DuckDB.
func (s *stack) oracle() *sql.DB {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { db.Close() })
	if err := oracle.Load(s.t.Context(), db, s.spec.Stream("payments"), s.outs...); err != nil {
		s.t.Fatal(err)
	}
	return db
}

// soak is how long `make soak` repeats rounds: TIDELINE_SOAK, or none.
func soak(t testing.TB) time.Duration {
	v := os.Getenv("TIDELINE_SOAK")
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("TIDELINE_SOAK=%q: write a duration like 30m", v)
	}
	return d
}

// TestFaults runs the stack, publishes rounds of generated events with a
// fault after each, lets it settle, and requires: every view below the
// tideline equal to the oracle, no window missing or counted twice, every
// malformed event in the dead-letter stream, corrections accounting for
// exactly the late events, and the views rebuilt from raw data alone equal
// to the oracle too.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs the whole stack for about 2 minutes; not with -short")
	}
	s := startStack(t)
	t.Cleanup(func() { // before the processes stop and the data goes
		if t.Failed() {
			s.keepLogs()
		}
	})
	// Most faults land at a random moment of a round of publishing; a NATS
	// restart lands between rounds, since the generator (a producer) does
	// not retry what the server did not take.
	type fault struct {
		between bool
		do      func(round int)
	}
	faults := []fault{
		{false, func(int) { s.kill9("stream") }},
		{false, func(int) { s.kill9("worker") }},
		{false, func(int) { s.kill9("serve") }},
		{false, func(int) { s.minioDown(20 * time.Second) }},
		{true, func(int) { s.restartNATS() }},
		{false, func(int) { s.restartTemporal() }},
		{false, s.twoBackfills},
		{false, s.maintainKilled},
	}
	r := rand.New(rand.NewPCG(7, 7))
	begin := time.Now()
	for round := 0; round < len(faults) || time.Since(begin) < soak(t); round++ {
		f := faults[round%len(faults)]
		if f.between {
			if err := s.generate(round, 3000); err != nil {
				t.Fatal(err)
			}
			f.do(round)
			continue
		}
		done := make(chan error, 1)
		go func() { done <- s.generate(round, 3000) }()
		time.Sleep(time.Duration(r.Int64N(int64(2 * time.Second))))
		f.do(round)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	settle(t, s)
	check(t, s)
}
