package spec

import (
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkDecode validates one payment event against its contract as the
// speed layer does: into a reused buffer, strings borrowed from the message.
// Its anchor decodes the same bytes with encoding/json into a map, unchecked.
func BenchmarkDecode(b *testing.B) {
	c := paymentsContract(b)
	var lines [][]byte
	for _, l := range genEvents(c, 1024, 7) {
		lines = append(lines, []byte(l))
	}
	recv := time.Now()
	buf := make([]Value, len(c.Fields))
	b.ReportAllocs()
	b.SetBytes(int64(len(lines[0])))
	for i := 0; b.Loop(); i++ {
		if _, err := c.DecodeInto(buf, lines[i%len(lines)], recv, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeAnchorJSON decodes the same events with encoding/json into
// a map[string]any, with no checks: the floor under any JSON validator.
func BenchmarkDecodeAnchorJSON(b *testing.B) {
	lines := genEvents(paymentsContract(b), 1024, 7)
	b.ReportAllocs()
	b.SetBytes(int64(len(lines[0])))
	for i := 0; b.Loop(); i++ {
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[i%len(lines)]), &m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViewAdd measures the speed layer's per-event work for one view:
// derive, filter, assign windows and fold into the accumulator.
func BenchmarkViewAdd(b *testing.B) {
	s, err := Load("../examples/payments/tideline.yaml")
	if err != nil {
		b.Fatal(err)
	}
	v := s.View("merchant_minute")
	c := v.Stream.Contract
	events := benchEvents(b, c)
	acc := v.NewAccumulator()
	var starts []int64
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		row, ok := v.Prepare(events[i%len(events)])
		if !ok {
			continue
		}
		starts = v.Assign(row[c.Time].Int, starts[:0])
		v.Add(acc, row, nil)
	}
}

// BenchmarkViewAddAnchorMap is the floor under BenchmarkViewAdd: a bare Go
// map summing the amount per merchant, with no derive, filter or windows.
func BenchmarkViewAddAnchorMap(b *testing.B) {
	c := paymentsContract(b)
	events := benchEvents(b, c)
	merchant, amount := c.Field("merchant_id"), c.Field("amount")
	sums := map[string]int64{}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev := events[i%len(events)]
		sums[ev.Values[merchant].Str] += ev.Values[amount].Int
	}
}

func benchEvents(b *testing.B, c *Contract) []Event {
	var events []Event
	for _, l := range genEvents(c, 1024, 7) {
		ev, err := c.Decode([]byte(l), time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		events = append(events, ev)
	}
	return events
}
