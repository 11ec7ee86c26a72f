package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/testsuite"

	"tideline/examples/payments"
	"tideline/internal/devstack"
	"tideline/internal/stacktest"
	"tideline/lake"
	"tideline/spec"
	"tideline/stream"
)

const compactBatch = 200_000

// compactBench is an embedded NATS holding 200k payments of the example
// spec, and a MinIO.
type compactBench struct {
	ns    *devstack.NATS
	js    jetstream.JetStream
	spec  *spec.Spec
	minio *devstack.MinIO
}

func startCompactBench(b *testing.B, withMinIO bool) *compactBench {
	b.Helper()
	ctx := context.Background()
	ns, _, js := stacktest.NATS(b)
	s, err := spec.Load("../examples/payments/tideline.yaml")
	if err != nil {
		b.Fatal(err)
	}
	if err := stream.Setup(ctx, js, s, stream.SetupOptions{}); err != nil {
		b.Fatal(err)
	}
	st := s.Stream("payments")
	r := rand.New(rand.NewPCG(3, 3))
	start := time.Now().UTC().Add(-time.Hour)
	for i := range compactBatch {
		ev := payments.Payment(r, i, start.Add(time.Duration(i)*3*time.Millisecond)) // 10 minutes: 3 partitions
		data, _ := json.Marshal(ev)
		id := ev["payment_id"].(string)
		if _, err := js.PublishAsync(stream.PublishSubject(st, id), data, jetstream.WithMsgID(id)); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	cb := &compactBench{ns: ns, js: js, spec: s}
	if withMinIO {
		if cb.minio, err = devstack.StartMinIO(ctx, devstack.MinIOOptions{Dir: b.TempDir()}); err != nil {
			b.Skipf("no MinIO (run `make tools`): %v", err)
		}
		b.Cleanup(func() { _ = cb.minio.Stop() })
	}
	return cb
}

// BenchmarkCompact moves 200k payments from JetStream into committed
// Parquet files on MinIO with the Compact activity: events/s.
func BenchmarkCompact(b *testing.B) {
	cb := startCompactBench(b, true)
	m := cb.minio
	db, err := lake.OpenDuckDB(context.Background(), "")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	cache, _ := lake.NewCache(b.TempDir(), 1<<30)
	var s testsuite.WorkflowTestSuite
	s.SetLogger(tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))) // logs would break the benchmark's output lines
	run := 0
	for b.Loop() {
		b.StopTimer()
		run++
		store, err := lake.Open(context.Background(), fmt.Sprintf("s3://bench/run-%d", run), lake.S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey}, lake.Options{})
		if err != nil {
			b.Fatal(err)
		}
		acts, err := New(Config{Spec: cb.spec, Store: store, JS: cb.js, DB: db, Cache: cache, TmpDir: b.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		env := s.NewTestActivityEnvironment()
		env.RegisterActivity(acts)
		b.StartTimer()
		v, err := env.ExecuteActivity(acts.Compact, CompactInput{Stream: "payments", From: 1, To: compactBatch})
		var res CompactResult
		if err == nil {
			err = v.Get(&res)
		}
		if err != nil || res.Rows != compactBatch {
			b.Fatalf("compact: %+v, %v", res, err)
		}
	}
	b.ReportMetric(float64(compactBatch)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkCompactAnchorNatsOrdered is `nats bench js ordered` reading the
// same 200k messages from the same server: the limit of reading the stream.
func BenchmarkCompactAnchorNatsOrdered(b *testing.B) {
	cb := startCompactBench(b, false)
	var rate float64
	for b.Loop() {
		rate = stacktest.NatsBench(b, cb.ns.URL, "js", "ordered", "--stream", "payments", "--msgs", strconv.Itoa(compactBatch))
	}
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(float64(compactBatch)/rate*1e9, "ns/op")
}
