package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/examples/payments"
	"tideline/internal/devstack"
	"tideline/internal/stacktest"
	"tideline/spec"
)

const e2eBatch = 200_000

// benchStack is an embedded NATS with the payments example set up and a
// processor running in-process.
type benchStack struct {
	ns   *devstack.NATS
	nc   *nats.Conn
	js   jetstream.JetStream
	st   *spec.Stream
	proc *Processor
	stop func()
}

func startBenchStack(b *testing.B, withProcessor bool) *benchStack {
	b.Helper()
	ns, nc, js, s := benchServer(b, 0)
	bs := &benchStack{ns: ns, nc: nc, js: js, st: s.Stream("payments")}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if withProcessor {
		pnc, _ := nats.Connect(ns.URL)
		pjs, _ := jetstream.New(pnc, jetstream.WithPublishAsyncMaxPending(16384))
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil)) // logs would break the benchmark's output lines
		bs.proc = NewProcessor(pnc, pjs, bs.st, ProcessorOptions{Log: quiet})
		wg.Go(func() { _ = bs.proc.Run(ctx); pnc.Close() })
	}
	var once sync.Once
	bs.stop = func() { once.Do(func() { cancel(); wg.Wait(); nc.Close(); ns.Stop() }) }
	b.Cleanup(bs.stop)
	return bs
}

func (bs *benchStack) applied() uint64 {
	var seq uint64
	bs.proc.Operator(func(op *Operator) { seq = op.Seq })
	return seq
}

// benchServer starts an embedded NATS with the payments example set up,
// its stream in partitions partitions (unpartitioned when 0).
func benchServer(b *testing.B, partitions int) (*devstack.NATS, *nats.Conn, jetstream.JetStream, *spec.Spec) {
	b.Helper()
	ns, err := devstack.StartNATS(devstack.NATSOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		b.Fatal(err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile("../examples/payments/tideline.yaml")
	if err != nil {
		b.Fatal(err)
	}
	y := string(data)
	if partitions > 0 {
		y = strings.Replace(y, "    subjects: [payments.events.>]", fmt.Sprintf("    subjects: [payments.events.>]\n    partitions: %d", partitions), 1)
	}
	s, err := spec.Parse("tideline.yaml", []byte(y))
	if err != nil {
		b.Fatal(err)
	}
	if err := Setup(context.Background(), js, s, SetupOptions{}); err != nil {
		b.Fatal(err)
	}
	return ns, nc, js, s
}

type prepared struct {
	subject, id string
	data        []byte
}

// preparePayments makes n fresh payments ready to publish.
func preparePayments(bs *benchStack, r *rand.Rand, n int) []prepared {
	out := make([]prepared, n)
	now := time.Now().UTC()
	for i := range out {
		ev := payments.Payment(r, i, now.Add(time.Duration(i)*time.Microsecond))
		id := ev["payment_id"].(string)
		data, _ := json.Marshal(ev)
		out[i] = prepared{PublishSubject(bs.st, id), id, data}
	}
	return out
}

// publishPayments publishes events as fast as JetStream takes them, each
// with its id as Nats-Msg-Id, as producers do.
func publishPayments(b *testing.B, bs *benchStack, events []prepared) {
	for _, e := range events {
		if _, err := bs.js.PublishAsync(e.subject, e.data, jetstream.WithMsgID(e.id)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-bs.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishes not acknowledged")
	}
}

// BenchmarkEndToEnd publishes 200k payments to the real server and waits
// until the processor has applied all of them to the example's 3 views:
// publish-to-aggregate throughput.
func BenchmarkEndToEnd(b *testing.B) {
	bs := startBenchStack(b, true)
	publishBatches(b, bs, bs.applied)
}

// publishBatches publishes e2eBatch payments per iteration and waits until
// done counts all of them: publish-to-done throughput.
func publishBatches(b *testing.B, bs *benchStack, done func() uint64) {
	r := rand.New(rand.NewPCG(5, 5))
	target := uint64(0)
	for b.Loop() {
		b.StopTimer()
		events := preparePayments(bs, r, e2eBatch)
		b.StartTimer()
		target += e2eBatch
		publishPayments(b, bs, events)
		for done() < target {
			time.Sleep(time.Millisecond)
		}
	}
	b.ReportMetric(float64(e2eBatch)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkEndToEndAnchorNatsBench is `nats bench js pub async --dedup`
// with messages of the payments' size, on the same kind of server: the
// limit of publishing alone.
func BenchmarkEndToEndAnchorNatsBench(b *testing.B) {
	bs := startBenchStack(b, false)
	size := len(fmt.Sprint(payments.Payment(rand.New(rand.NewPCG(1, 1)), 0, time.Now()))) // about the JSON size
	var rate float64
	for b.Loop() {
		rate = stacktest.NatsBench(b, bs.ns.URL, "js", "pub", "async", "bench.e2e", "--create", "--dedup",
			"--msgs", strconv.Itoa(e2eBatch), "--size", strconv.Itoa(size))
	}
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(float64(e2eBatch)/rate*1e9, "ns/op")
}

// BenchmarkEndToEndAnchorPubConsume is BenchmarkEndToEnd with nothing
// done to an event: the same publishes, read by an ordered consumer like
// the processor's that only counts them. On one machine the server serves
// the publisher and the consumer from the same cores, so this, not
// publishing alone, is the ceiling of publish-to-aggregate.
func BenchmarkEndToEndAnchorPubConsume(b *testing.B) {
	benchPubConsume(b, startBenchStack(b, false))
}

// benchPubConsume publishes batches to bs and counts them with an ordered
// consumer that does nothing else: the publish-and-consume floor.
func benchPubConsume(b *testing.B, bs *benchStack) {
	var consumed atomic.Uint64
	cons, err := bs.js.OrderedConsumer(context.Background(), StreamName(bs.st), jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(jetstream.Msg) { consumed.Add(1) }, jetstream.PullMaxMessages(2048))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	publishBatches(b, bs, consumed.Load)
}

// freshnessRate is the publish rate of the freshness benchmarks: half of
// what publish-to-aggregate sustains, measured once per run with 100k
// payments on a stack of its own, so it follows the machine.
// TIDELINE_BENCH_RATE overrides it.
func freshnessRate(b *testing.B) float64 {
	rateOnce.Do(func() {
		if r, err := strconv.ParseFloat(os.Getenv("TIDELINE_BENCH_RATE"), 64); err == nil && r > 0 {
			rate = r
			return
		}
		bs := startBenchStack(b, true)
		events := preparePayments(bs, rand.New(rand.NewPCG(3, 3)), 100_000)
		start := time.Now()
		publishPayments(b, bs, events)
		for bs.applied() < uint64(len(events)) {
			time.Sleep(time.Millisecond)
		}
		rate = float64(len(events)) / time.Since(start).Seconds() / 2
		bs.stop()
	})
	return rate
}

var (
	rateOnce sync.Once
	rate     float64
)

// publishAtRate publishes payments at rate for d, calling sent with each
// event's window key and the time it was published.
func publishAtRate(b *testing.B, bs *benchStack, d time.Duration, sent func(i int, ev map[string]any, at time.Time)) {
	r := rand.New(rand.NewPCG(9, 9))
	rate := freshnessRate(b)
	start := time.Now()
	n := int(rate * d.Seconds())
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); wait > 0 {
			time.Sleep(wait)
		}
		now := time.Now()
		ev := payments.Payment(r, i, now.UTC())
		data, _ := json.Marshal(ev)
		sent(i, ev, now)
		if _, err := bs.js.PublishAsync(PublishSubject(bs.st, ev["payment_id"].(string)), data, jetstream.WithMsgID(ev["payment_id"].(string))); err != nil {
			b.Fatal(err)
		}
	}
	<-bs.js.PublishAsyncComplete()
}

func reportLatencies(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		b.Fatal("no latency measured")
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	b.ReportMetric(freshnessRate(b), "rate-ev/s")
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(p99.Nanoseconds()), "ns/op")
}

// BenchmarkFreshness publishes payments at half the maximum rate and
// measures, for each, the time from its publish to the first update of the
// merchant_minute view that counts it. ns/op is the p99.
func BenchmarkFreshness(b *testing.B) {
	bs := startBenchStack(b, true)
	benchFreshness(b, bs, func(u UpdateJSON) string {
		return u.WindowStart.Format(time.RFC3339) + "/" + fmt.Sprint(u.Dims["merchant_id"])
	}, func(ev map[string]any) string {
		ts, _ := time.Parse(time.RFC3339Nano, ev["ts"].(string))
		return ts.Truncate(time.Minute).Format(time.RFC3339) + "/" + ev["merchant_id"].(string)
	})
}

// benchFreshness publishes payments at half the maximum rate on bs and
// measures, for each, the time from its publish to the first update of
// merchant_minute that counts it. updateKey names the series an update
// line counts (a window and merchant, and a partition for a partitioned
// stream), and eventKey the series a payment is in.
func benchFreshness(b *testing.B, bs *benchStack, updateKey func(UpdateJSON) string, eventKey func(map[string]any) string) {
	var mu sync.Mutex
	sentAt := map[string][]time.Time{}
	seenCount := map[string]int{}
	var lat []time.Duration
	sub, err := bs.nc.Subscribe(ViewSubject("merchant_minute"), func(m *nats.Msg) {
		now := time.Now()
		for line := range strings.Lines(string(m.Data)) {
			var u UpdateJSON
			if json.Unmarshal([]byte(line), &u) != nil {
				b.Errorf("update is not JSON: %s", line)
				return
			}
			k := updateKey(u)
			c, _ := strconv.Atoi(string(u.Measures["payments"]))
			mu.Lock()
			for i := seenCount[k]; i < c && i < len(sentAt[k]); i++ {
				lat = append(lat, now.Sub(sentAt[k][i]))
			}
			seenCount[k] = max(seenCount[k], c)
			mu.Unlock()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	for b.Loop() {
		publishAtRate(b, bs, 4*time.Second, func(_ int, ev map[string]any, at time.Time) {
			k := eventKey(ev)
			mu.Lock()
			sentAt[k] = append(sentAt[k], at)
			mu.Unlock()
		})
		time.Sleep(300 * time.Millisecond) // the last flush
	}
	mu.Lock()
	defer mu.Unlock()
	reportLatencies(b, lat)
}

// BenchmarkFreshnessAnchorDelivery is the floor under freshness: publish to
// delivery through JetStream to an ordered consumer, at the same rate, with
// no processing.
func BenchmarkFreshnessAnchorDelivery(b *testing.B) {
	benchDelivery(b, startBenchStack(b, false))
}

// benchDelivery measures publish to delivery on bs, as
// BenchmarkFreshnessAnchorDelivery does.
func benchDelivery(b *testing.B, bs *benchStack) {
	var mu sync.Mutex
	sentAt := map[string]time.Time{}
	var lat []time.Duration
	cons, err := bs.js.OrderedConsumer(context.Background(), StreamName(bs.st), jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		id := m.Headers().Get(jetstream.MsgIDHeader)
		mu.Lock()
		if t, ok := sentAt[id]; ok {
			lat = append(lat, now.Sub(t))
		}
		mu.Unlock()
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	for b.Loop() {
		publishAtRate(b, bs, 4*time.Second, func(_ int, ev map[string]any, at time.Time) {
			mu.Lock()
			sentAt[ev["payment_id"].(string)] = at
			mu.Unlock()
		})
		time.Sleep(300 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	reportLatencies(b, lat)
}
