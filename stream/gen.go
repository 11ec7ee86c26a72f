package stream

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/spec"
)

// PublishSubject is the concrete subject an event with this id goes to:
// the stream's first subject with its wildcards filled by the id's token
// (spec.IDToken), so events spread over subjects; a partitioned stream's
// mapping reads its partition from that token.
func PublishSubject(st *spec.Stream, id string) string {
	tok := spec.IDToken(id)
	if st.Partitioned() {
		return st.SubjectPrefix() + "." + tok
	}
	toks := strings.Split(st.Subjects[0], ".")
	for i, t := range toks {
		if t == "*" || t == ">" {
			toks[i] = tok
		}
	}
	return strings.Join(toks, ".")
}

// EventFunc makes event number i at event time ts, as a JSON object.
type EventFunc func(r *rand.Rand, i int, ts time.Time) map[string]any

// GenOptions shape a generated run.
type GenOptions struct {
	Rate    float64 // events per second; 0 is as fast as the server takes them
	Count   int     // events to publish; 0 runs until ctx ends
	OOO     float64 // fraction out of order, within the out-of-orderness bound
	Late    float64 // fraction later than every view's allowed lateness
	Dup     float64 // fraction published again with the same id
	Invalid float64 // fraction malformed
	Seed    uint64
	// Start fixes event time to Start + i/Rate instead of the wall clock,
	// for a run that is the same every time.
	Start time.Time
	// Out receives one line per message published: {"i", "kind",
	// "subject", "msg_id", "data"}; kind is valid, ooo, late, dup or
	// invalid. It is what an oracle recomputes the answer from.
	Out io.Writer
}

// GenStats counts what a run published.
type GenStats struct {
	Published, Valid, OOO, Late, Dup, Invalid int
	Elapsed                                   time.Duration
}

// OutLine is one line of GenOptions.Out.
type OutLine struct {
	I       int    `json:"i"`
	Kind    string `json:"kind"`
	Subject string `json:"subject"`
	MsgID   string `json:"msg_id"`
	Data    string `json:"data"`
}

// Generate publishes events made by newEvent to st's subjects, with the mix of
// disorder, lateness, duplicates and malformed events the options ask for.
func Generate(ctx context.Context, js jetstream.JetStream, st *spec.Stream, newEvent EventFunc, o GenOptions) (GenStats, error) {
	r := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	var out *bufio.Writer
	if o.Out != nil {
		out = bufio.NewWriterSize(o.Out, 1<<16)
		defer out.Flush()
	}
	var horizon time.Duration
	for _, v := range st.Views {
		horizon = max(horizon, v.Horizon())
	}
	c := st.Contract
	var stats GenStats
	begin := time.Now()
	emit := func(i int, kind, subject, id string, data []byte) error {
		m := nats.NewMsg(subject)
		m.Data = data
		if _, err := js.PublishMsgAsync(m, jetstream.WithMsgID(MsgID(id))); err != nil {
			return fmt.Errorf("cannot publish event %d to %s: %w", i, subject, err)
		}
		stats.Published++
		if out != nil {
			line, _ := json.Marshal(OutLine{I: stats.Published, Kind: kind, Subject: subject, MsgID: id, Data: string(data)})
			out.Write(line)
			out.WriteByte('\n')
		}
		return nil
	}
	for i := 0; o.Count == 0 || i < o.Count; i++ {
		if o.Rate > 0 {
			due := begin.Add(time.Duration(float64(i) / o.Rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					return stats, finish(ctx, js, &stats, begin)
				case <-time.After(d):
				}
			}
		} else if ctx.Err() != nil {
			break
		}
		now := time.Now()
		if !o.Start.IsZero() {
			now = o.Start.Add(time.Duration(float64(i) / max(o.Rate, 1000) * float64(time.Second)))
		}
		ts, kind := now, "valid"
		switch x := r.Float64(); {
		case x < o.Late:
			ts, kind = now.Add(-horizon-st.OutOfOrderness-time.Second-time.Duration(r.Int64N(int64(30*time.Second)))), "late"
		case x < o.Late+o.OOO && st.OutOfOrderness > 0:
			ts, kind = now.Add(-time.Duration(r.Int64N(int64(st.OutOfOrderness)))), "ooo"
		}
		ev := newEvent(r, i, ts.UTC().Truncate(time.Microsecond))
		id := fmt.Sprint(ev[c.Fields[c.ID].Name])
		if r.Float64() < o.Invalid {
			data := corrupt(r, c, ev)
			if err := emit(i, "invalid", PublishSubject(st, id), "invalid-"+id, data); err != nil {
				return stats, err
			}
			stats.Invalid++
			continue
		}
		data, err := json.Marshal(ev)
		if err != nil {
			return stats, fmt.Errorf("cannot encode event %d: %w", i, err)
		}
		subject := PublishSubject(st, id)
		if err := emit(i, kind, subject, id, data); err != nil {
			return stats, err
		}
		stats.Valid++
		switch kind {
		case "ooo":
			stats.OOO++
		case "late":
			stats.Late++
		}
		if r.Float64() < o.Dup {
			if err := emit(i, "dup", subject, id, data); err != nil {
				return stats, err
			}
			stats.Dup++
		}
	}
	return stats, finish(ctx, js, &stats, begin)
}

func finish(ctx context.Context, js jetstream.JetStream, stats *GenStats, begin time.Time) error {
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		return fmt.Errorf("cannot confirm publishes: %d unacknowledged after 30s", js.PublishAsyncPending())
	}
	stats.Elapsed = time.Since(begin)
	return nil
}

// corrupt breaks an event in one of the ways producers do.
func corrupt(r *rand.Rand, c *spec.Contract, ev map[string]any) []byte {
	bad := make(map[string]any, len(ev))
	for k, v := range ev {
		bad[k] = v
	}
	var required, numeric, enums []*spec.Field
	for _, f := range c.Fields {
		if f.Required {
			required = append(required, f)
		}
		if f.Type.Numeric() {
			numeric = append(numeric, f)
		}
		if len(f.Enum) > 0 {
			enums = append(enums, f)
		}
	}
	switch r.IntN(6) {
	case 0: // truncated in transit
		data, _ := json.Marshal(ev)
		return data[:len(data)/2]
	case 1:
		return []byte("not json at all")
	case 2:
		delete(bad, required[r.IntN(len(required))].Name)
	case 3:
		if len(numeric) > 0 {
			bad[numeric[r.IntN(len(numeric))].Name] = "oops"
		} else {
			bad[c.Fields[c.Time].Name] = 12
		}
	case 4:
		if len(enums) > 0 {
			bad[enums[r.IntN(len(enums))].Name] = "NOT-AN-ENUM-VALUE"
		} else {
			bad[c.Fields[c.Time].Name] = "yesterday"
		}
	default:
		bad[c.Fields[c.Time].Name] = "2026-13-45T99:00:00Z"
	}
	data, _ := json.Marshal(bad)
	return data
}
