package stream

import (
	"encoding/json"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"tideline/examples/payments"
	"tideline/spec"
)

var (
	benchEventsOnce sync.Once
	benchEvents     payloads
)

// payloads are messages kept in one buffer: the garbage collector has no
// pointer to follow in them, so the later benchmarks of the binary (the
// freshness one above all) do not pay for a million cached events.
type payloads struct {
	data []byte
	ends []int32
}

func (p *payloads) len() int { return len(p.ends) }

func (p *payloads) at(i int) []byte {
	start := int32(0)
	if i > 0 {
		start = p.ends[i-1]
	}
	return p.data[start:p.ends[i]:p.ends[i]]
}

// benchPayments returns n payments as JSON, 1 in 20 out of order within
// the bound, made once per test binary: -count runs them again.
func benchPayments(b *testing.B, n int) payloads {
	const made = 1 << 20
	benchEventsOnce.Do(func() {
		r := rand.New(rand.NewPCG(1, 2))
		for i := range made {
			ts := genStart.Add(time.Duration(i) * 100 * time.Microsecond) // 10k events/s of event time
			if r.IntN(20) == 0 {
				ts = ts.Add(-time.Duration(r.Int64N(int64(4 * time.Second)))) // out of order, within 5s
			}
			data, err := json.Marshal(payments.Payment(r, i, ts))
			if err != nil {
				panic(err)
			}
			benchEvents.data = append(benchEvents.data, data...)
			benchEvents.ends = append(benchEvents.ends, int32(len(benchEvents.data)))
		}
	})
	if n > made {
		b.Fatalf("%d events asked, %d made", n, made)
	}
	return payloads{benchEvents.data, benchEvents.ends[:n]}
}

// BenchmarkOperator is the speed layer's in-process operator on one core:
// decode, validate, dedup and aggregate into the payments example's 5
// payments views (tumbling, hopping and session windows, with
// count_distinct and approx_count_distinct), windows closing as the
// watermark passes. Published anchors:
// Flink 1.13 about 155-175K events/s per core on Nexmark q0-q2, DBSP 1.1M.
func BenchmarkOperator(b *testing.B) {
	s, err := spec.Load("../examples/payments/tideline.yaml")
	if err != nil {
		b.Fatal(err)
	}
	benchOperator(b, s.Stream("payments"))
}

// BenchmarkOperatorFixedViews is BenchmarkOperator without the example's
// session view (card sessions, with an approx_count_distinct of merchants):
// what that view costs is the difference.
func BenchmarkOperatorFixedViews(b *testing.B) {
	s, err := spec.Load("../examples/payments/tideline.yaml")
	if err != nil {
		b.Fatal(err)
	}
	st := fixedOnly(s.Stream("payments"))
	if len(st.Views) == len(s.Stream("payments").Views) {
		b.Fatal("the example has no session view to leave out")
	}
	benchOperator(b, st)
}

func benchOperator(b *testing.B, st *spec.Stream) {
	events := benchPayments(b, 1<<20)
	op := NewOperator(st)
	var updates []Update
	b.SetBytes(int64(len(events.at(0))))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := op.Apply(events.at(i%events.len()), uint64(i+1), genStart.Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
		i++
		if i%events.len() == 0 {
			op = NewOperator(st) // a second pass would be all duplicates
		}
		if i%5000 == 0 { // the processor drains every flush interval
			updates = op.Drain(updates[:0])
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkOperatorAnchorJSONMap only parses the same events with
// encoding/json into a map: what any consumer pays before doing any work.
func BenchmarkOperatorAnchorJSONMap(b *testing.B) {
	events := benchPayments(b, 1<<16)
	b.SetBytes(int64(len(events.at(0))))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		var m map[string]any
		if err := json.Unmarshal(events.at(i%events.len()), &m); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
