package score

import (
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tideline/internal/stacktest"
)

// benchRate is the request rate of the decision benchmarks.
const benchRate = 5000

// BenchmarkDecision sends 1,000 payments by request-reply at 5,000/s and
// measures each decision's latency; ns/op is the p99. The scorer stores
// each payment in JetStream and publishes its decision before replying.
func BenchmarkDecision(b *testing.B) {
	nc, _, _ := scorerStack(b)
	var lat []time.Duration
	seed := uint64(0)
	for b.Loop() {
		seed++ // new payment ids each time
		_, replies, l := sendPayments(b, nc, 1000, benchRate, seed)
		for i, r := range replies {
			if r.Error != "" || r.Decision == nil {
				b.Fatalf("payment %d: %+v", i, r)
			}
		}
		lat = append(lat, l...)
	}
	reportLatency(b, lat)
}

// BenchmarkDecisionAnchorEcho is the floor under it: the same requests at
// the same rate to a responder on the same server that replies at once.
func BenchmarkDecisionAnchorEcho(b *testing.B) {
	_, nc, _ := stacktest.NATS(b)
	sub, err := nc.Subscribe(RequestSubject, func(m *nats.Msg) { _ = m.Respond([]byte(`{"decision":{}}`)) })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	var lat []time.Duration
	for b.Loop() {
		_, _, l := sendPayments(b, nc, 1000, benchRate, 1)
		lat = append(lat, l...)
	}
	reportLatency(b, lat)
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(p99.Nanoseconds()), "ns/op")
}
