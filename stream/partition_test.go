package stream

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	"tideline/spec"
)

// TestPartitionsMergeAsOne splits a stream among partitions as JetStream's
// mapping does, folds each partition with an operator of its own, sends
// each partial window through its wire form (as the KV bucket holds it),
// and merges them as readers do: the merged windows equal View.SQL over
// every event the partitions applied, for every window kind and measure.
// A merged window called final never changes after.
func TestPartitionsMergeAsOne(t *testing.T) {
	s, err := spec.Parse("agree.yaml", []byte(agreeSpec))
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stream("s")
	events := agreeEvents(6000, 7)
	for _, tc := range []struct {
		view   string
		parts  int
		jitter time.Duration
	}{
		{"sessions", 4, 15 * time.Second},
		{"sessions", 3, 3 * time.Minute},
		{"tumbling", 4, 3 * time.Minute},
		{"hopping", 2, 10 * time.Second},
	} {
		t.Run(fmt.Sprintf("%s/%d/%s", tc.view, tc.parts, tc.jitter), func(t *testing.T) {
			one := *st
			one.Partitions = tc.parts
			one.Views = []*spec.View{s.View(tc.view)}
			v := one.Views[0]
			ops := make([]*Operator, tc.parts)
			for p := range ops {
				ops[p] = NewOperator(&one)
				ops[p].Part = p + 1
			}
			kv := map[string]Update{} // the view's bucket: the latest of every key
			var applied []agreeEvent
			late, gone := 0, 0
			drain := func(p int) {
				texts := newJSONTexts()
				for _, u := range ops[p].Drain(nil) {
					if u.Part != p+1 {
						t.Fatalf("partition %d's operator reported an update of part %d", p, u.Part)
					}
					if u.Gone {
						delete(kv, u.Key())
						gone++
						continue
					}
					back, _, err := ParseUpdate(v, u.appendJSON(nil, texts, ops[p].Watermark))
					if err != nil {
						t.Fatal(err)
					}
					if back.Key() != u.Key() {
						t.Fatalf("key %s read back as %s", u.Key(), back.Key())
					}
					kv[u.Key()] = back
				}
			}
			merged := func() map[string]Update {
				wms := make([]int64, len(ops))
				for p, op := range ops {
					wms[p] = op.Watermark
				}
				out := map[string]Update{}
				for _, u := range MergeParts(v, slices.Collect(maps.Values(kv)), ViewWatermark(v, wms)) {
					k := fmt.Sprint(u.Start, u.Dims)
					if _, dup := out[k]; dup {
						t.Fatalf("window %s merged twice", k)
					}
					out[k] = u
				}
				return out
			}
			finals := map[string]string{} // what a merge called final, when
			order := arrive(events, tc.jitter, 3)
			for i := 0; i < len(order); i += 50 {
				j := min(len(order), i+1+i%7)
				order = slices.Insert(order, j, order[i])
			}
			for i, e := range order {
				tok := spec.IDToken(e.id)
				p := one.PartitionOf(tok)
				switch out, err := ops[p].ApplySubject(e.data, fmt.Sprintf("s.%d.%s", p, tok), uint64(i+1), time.Time{}); out {
				case Applied:
					applied = append(applied, e)
				case Late:
					late++
				case Invalid:
					t.Fatal(err)
				}
				if i%17 == 0 {
					drain(p)
				}
				if i%1000 == 500 {
					for q, op := range ops {
						drain(q)
						data, err := op.Checkpoint()
						if err != nil {
							t.Fatal(err)
						}
						ops[q] = NewOperator(&one)
						ops[q].Part = q + 1
						if err := ops[q].Restore(data); err != nil {
							t.Fatal(err)
						}
					}
				}
				if i%400 == 0 {
					for q := range ops {
						drain(q)
					}
					for k, u := range merged() {
						if u.Final {
							if _, ok := finals[k]; !ok {
								finals[k] = agreeRow(v, u.Start, u.End, u.Dims, u.Measures)
							}
						}
					}
				}
			}
			for q, op := range ops {
				op.Tick(time.UnixMicro(op.MaxEvent).Add(100*time.Hour), time.UnixMicro(op.MaxEvent))
				drain(q)
			}
			got := map[string]string{}
			for k, u := range merged() {
				if !u.Final {
					t.Errorf("window %s not final after every partition's watermark passed it", k)
				}
				got[k] = agreeRow(v, u.Start, u.End, u.Dims, u.Measures)
			}
			want := sqlWindows(t, v, applied)
			t.Logf("%d partitions: %d events applied, %d late, %d windows, %d partial sessions gone, %d windows seen final before the end", tc.parts, len(applied), late, len(want), gone, len(finals))
			if len(finals) == 0 {
				t.Fatal("no window was final before the end: the test does not exercise finality")
			}
			sameWindows(t, "merged", got, want)
			for k, f := range finals {
				if got[k] != f {
					t.Errorf("window %s was merged final as %q, and ended %q", k, f, got[k])
				}
			}
		})
	}
}

// TestPartitionTakesOnlyItsIDsToken: an event whose subject token is not
// its id's is invalid in a partition, for copies of one id published under
// two tokens would land in two partitions and count twice.
func TestPartitionTakesOnlyItsIDsToken(t *testing.T) {
	s, err := spec.Parse("agree.yaml", []byte(agreeSpec))
	if err != nil {
		t.Fatal(err)
	}
	st := *s.Stream("s")
	st.Partitions = 4
	op := NewOperator(&st)
	op.Part = 1
	data := []byte(`{"id":"x1","ts":"2026-03-01T10:00:00Z","user":"u1"}`)
	tok := spec.IDToken("x1")
	other := spec.IDToken("x2")
	if out, err := op.ApplySubject(data, "s.0."+other, 1, time.Time{}); out != Invalid || err == nil {
		t.Fatalf("wrong token: %v, %v; want invalid", out, err)
	} else {
		t.Log(err)
	}
	if out, err := op.ApplySubject(data, "s.0."+tok, 2, time.Time{}); out != Applied {
		t.Fatalf("its own token: %v, %v; want applied", out, err)
	}
	if ViewWatermark(st.Views[0], []int64{5, math.MinInt64}) != math.MinInt64 {
		t.Fatal("a partition with no watermark must hold the view's back")
	}
}
