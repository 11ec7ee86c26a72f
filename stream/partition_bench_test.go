package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/examples/payments"
	"tideline/spec"
)

// benchPartitions is how many partitions the partitioned benchmarks'
// stream has.
const benchPartitions = 8

// startPartitionedBench is startBenchStack with the payments stream in
// benchPartitions partitions and instances group members in-process, each
// with a connection of its own, the partitions split evenly among them.
func startPartitionedBench(b *testing.B, instances int, ttl time.Duration) (*benchStack, []*Group, []*nats.Conn) {
	b.Helper()
	ns, nc, js, s := benchServer(b, benchPartitions)
	bs := &benchStack{ns: ns, nc: nc, js: js, st: s.Stream("payments")}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var groups []*Group
	var conns []*nats.Conn
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil)) // logs would break the benchmark's output lines
	for i := range instances {
		gnc, err := nats.Connect(ns.URL)
		if err != nil {
			b.Fatal(err)
		}
		gjs, _ := jetstream.New(gnc, jetstream.WithPublishAsyncMaxPending(16384))
		g := NewGroup(gnc, gjs, bs.st, GroupOptions{Name: fmt.Sprintf("m%d", i), LeaseTTL: ttl, Log: quiet, Processor: ProcessorOptions{Log: quiet}})
		groups, conns = append(groups, g), append(conns, gnc)
		wg.Go(func() { _ = g.Run(ctx); gnc.Close() })
	}
	for deadline := time.Now().Add(time.Minute); instances > 0; time.Sleep(50 * time.Millisecond) {
		even, total := true, 0
		for _, g := range groups {
			h := len(g.Held())
			even = even && (h == benchPartitions/instances || h == benchPartitions/instances+1)
			total += h
		}
		if even && total == benchPartitions {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("partitions not split among the members within a minute")
		}
	}
	var once sync.Once
	bs.stop = func() { once.Do(func() { cancel(); wg.Wait(); nc.Close(); ns.Stop() }) }
	b.Cleanup(bs.stop)
	return bs, groups, conns
}

// BenchmarkEndToEndPartitioned is BenchmarkEndToEnd with the stream in 8
// partitions, processed by 1, 2 and 3 group members in one process.
func BenchmarkEndToEndPartitioned(b *testing.B) {
	for _, n := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			bs, groups, _ := startPartitionedBench(b, n, 5*time.Second)
			publishBatches(b, bs, func() uint64 {
				var sum uint64
				for _, g := range groups {
					sum += g.Consumed()
				}
				return sum
			})
		})
	}
}

// BenchmarkEndToEndPartitionedAnchorPubConsume is the publish-and-consume
// floor of BenchmarkEndToEndPartitioned: the same publishes to the
// partitioned stream, counted by one ordered consumer.
func BenchmarkEndToEndPartitionedAnchorPubConsume(b *testing.B) {
	bs, _, _ := startPartitionedBench(b, 0, time.Second)
	benchPubConsume(b, bs)
}

// BenchmarkFailover publishes payments steadily to an 8-partition stream
// held by two members, cuts one off (its connection closed, as a crash or
// a network partition would), and measures the time until every partition
// it held publishes fresh windows from the other: the failover gap, with
// the default lease TTL of 5s. ns/op is the gap.
func BenchmarkFailover(b *testing.B) {
	for b.Loop() {
		bs, groups, conns := startPartitionedBench(b, 2, 5*time.Second)
		victim := groups[0].Held()
		var mu sync.Mutex
		var cut time.Time
		fresh := map[int]time.Duration{}
		sub, err := bs.nc.Subscribe(ViewSubject("merchant_minute"), func(m *nats.Msg) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if cut.IsZero() || now.Sub(cut) < 500*time.Millisecond {
				return // the member cut off may have sent some just before
			}
			for line := range strings.Lines(string(m.Data)) {
				var u UpdateJSON
				if json.Unmarshal([]byte(line), &u) != nil || u.Partition == nil {
					continue
				}
				if _, ok := fresh[*u.Partition]; !ok {
					fresh[*u.Partition] = now.Sub(cut)
				}
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			publishSteadily(ctx, bs, 2000)
		}()
		time.Sleep(2 * time.Second)
		mu.Lock()
		cut = time.Now()
		mu.Unlock()
		conns[0].Close()
		var gap time.Duration
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			all := true
			gap = 0
			for _, p := range victim {
				d, ok := fresh[p]
				all = all && ok
				gap = max(gap, d)
			}
			mu.Unlock()
			if all {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("partitions %v of the member cut off have no fresh windows a minute later", victim)
			}
		}
		stop()
		<-done
		_ = sub.Unsubscribe()
		b.ReportMetric(float64(gap.Nanoseconds()), "ns/op")
		b.ReportMetric(gap.Seconds(), "gap-s")
		bs.stop()
	}
}

// publishSteadily publishes fresh payments at rate a second until ctx ends.
func publishSteadily(ctx context.Context, bs *benchStack, rate int) {
	r := rand.New(rand.NewPCG(11, 11))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for range rate / 100 {
			ev := payments.Payment(r, i, time.Now().UTC())
			i++
			data, _ := json.Marshal(ev)
			id := ev["payment_id"].(string)
			_, _ = bs.js.PublishAsync(PublishSubject(bs.st, id), data, jetstream.WithMsgID(id))
		}
	}
}

// BenchmarkFreshnessPartitioned is BenchmarkFreshness with the stream in 8
// partitions, processed by 1, 2 and 3 group members: the time from publish
// to the first partial update of merchant_minute, from its partition,
// that counts the payment. ns/op is the p99.
func BenchmarkFreshnessPartitioned(b *testing.B) {
	for _, n := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			bs, _, _ := startPartitionedBench(b, n, 5*time.Second)
			benchFreshness(b, bs, func(u UpdateJSON) string {
				if u.Partition == nil {
					b.Errorf("update of window %s is not a partial one", u.WindowStart)
					return ""
				}
				return fmt.Sprint(u.WindowStart.Format(time.RFC3339), "/", u.Dims["merchant_id"], "/", *u.Partition)
			}, func(ev map[string]any) string {
				ts, _ := time.Parse(time.RFC3339Nano, ev["ts"].(string))
				p := bs.st.PartitionOf(spec.IDToken(ev["payment_id"].(string)))
				return fmt.Sprint(ts.Truncate(time.Minute).Format(time.RFC3339), "/", ev["merchant_id"], "/", p)
			})
		})
	}
}

// BenchmarkFreshnessPartitionedAnchorDelivery is the floor under
// BenchmarkFreshnessPartitioned: publish to delivery through the
// partitioned stream to an ordered consumer, at the same rate.
func BenchmarkFreshnessPartitionedAnchorDelivery(b *testing.B) {
	bs, _, _ := startPartitionedBench(b, 0, time.Second)
	benchDelivery(b, bs)
}
