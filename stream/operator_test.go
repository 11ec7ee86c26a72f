package stream

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"tideline/spec"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// recv is when the broker received the tests' events, unless a test says
// otherwise: after all of them, so the receive-time bound on event time
// (I7) does not hold them back.
var recv = t0.Add(time.Hour)

func payment(id string, at time.Duration, merchant string, amount string) []byte {
	return fmt.Appendf(nil, `{"payment_id":%q,"ts":%q,"card_id":"c1","merchant_id":%q,"country":"US","amount":%q,"currency":"USD","channel":"pos"}`,
		id, t0.Add(at).Format(time.RFC3339Nano), merchant, amount)
}

func TestOperatorWindowsAndWatermark(t *testing.T) {
	s := fastSpec(t)
	op := NewOperator(s.Stream("payments"))
	seq := uint64(0)
	apply := func(data []byte) Outcome {
		seq++
		out, err := op.Apply(data, seq, recv)
		if out == Invalid && err == nil {
			t.Fatal("invalid without an error")
		}
		return out
	}
	// merchant_minute is now 5s tumbling with 1s lateness; ooo bound 500ms.
	if got := apply(payment("a", 1*time.Second, "m1", "10.00")); got != Applied {
		t.Fatalf("first event: %v", got)
	}
	if got := apply(payment("b", 2*time.Second, "m1", "5.50")); got != Applied {
		t.Fatalf("second: %v", got)
	}
	if got := apply(payment("a", 2*time.Second, "m1", "10.00")); got != Duplicate {
		t.Fatalf("same id again: %v, want Duplicate", got)
	}
	if got := apply([]byte(`{"payment_id":"x"}`)); got != Invalid {
		t.Fatalf("invalid: %v", got)
	}
	// Out of order within the bound: still applied.
	apply(payment("c", 6500*time.Millisecond, "m2", "1.00"))
	if got := apply(payment("d", 6100*time.Millisecond, "m1", "2.00")); got != Applied {
		t.Fatalf("out of order within bound: %v", got)
	}
	// Watermark now 6.0s; window [0,5s) closes at 6.0s: a new event in it is late.
	if op.Watermark != t0.Add(6*time.Second).UnixMicro() {
		t.Fatalf("watermark %v, want t0+6s", time.UnixMicro(op.Watermark).UTC())
	}
	if got := apply(payment("e", 4*time.Second, "m1", "3.00")); got != Applied {
		// Still applied: card_5m's hopping window [0,10s) is open.
		t.Fatalf("event in a closed tumbling window but an open hopping one: %v", got)
	}
	if n := op.LateEvents()["merchant_minute"]; n != 1 {
		t.Errorf("merchant_minute counted %d late events, want 1", n)
	}
	apply(payment("f", 20*time.Second, "m3", "1.00")) // moves the watermark to 19.5s
	if got := apply(payment("g", 1*time.Second, "m1", "1.00")); got != Late {
		t.Fatalf("event whose every window closed: %v, want Late", got)
	}
	updates := op.Drain(nil)
	finals := map[string]string{}
	for _, u := range updates {
		if u.Final && u.View.Name == "merchant_minute" {
			finals[fmt.Sprintf("%s %v", time.UnixMicro(u.Start).UTC().Format("15:04:05"), u.Dims[0].Str)] = fmt.Sprint(u.Measures[0].Int, " ", u.Measures[1].Int)
		}
	}
	want := map[string]string{"12:00:00 m1": "2 1550", "12:00:05 m1": "1 200", "12:00:05 m2": "1 100"}
	if fmt.Sprint(finals) != fmt.Sprint(want) {
		t.Errorf("final merchant_minute windows %v, want %v", finals, want)
	}
	// Only the window holding the event at 20s stays open for that view.
	for _, u := range op.Windows("merchant_minute") {
		if time.UnixMicro(u.Start).UTC() != t0.Add(20*time.Second) {
			t.Errorf("window at %v still open", time.UnixMicro(u.Start).UTC())
		}
	}
	// Ids of closed windows are forgotten; a later event with id "a" and an
	// old time is late, not a duplicate.
	if _, ok := op.seen[idHash(spec.Value{Str: "a"}, spec.TypeString)]; ok {
		t.Error("id a is still remembered after every window holding it closed")
	}
}

func TestOperatorIdleAdvance(t *testing.T) {
	s := fastSpec(t)
	op := NewOperator(s.Stream("payments"))
	op.Apply(payment("a", time.Second, "m1", "1.00"), 1, recv)
	arrival := time.Now()
	op.Tick(arrival.Add(100*time.Millisecond), arrival) // under the 200ms idle timeout
	if op.Watermark != t0.Add(500*time.Millisecond).UnixMicro() {
		t.Fatalf("watermark moved before the idle timeout: %v", time.UnixMicro(op.Watermark).UTC())
	}
	op.Tick(arrival.Add(12*time.Second), arrival)
	if len(op.Windows("merchant_minute")) != 1 {
		t.Fatal("window gone before Drain")
	}
	finals := 0
	for _, u := range op.Drain(nil) {
		if u.Final {
			finals++
		}
	}
	want := 0 // one window per tumbling view, size/hop per hopping one
	for _, v := range s.Stream("payments").Views {
		want += int(v.Size / v.Hop)
	}
	if finals != want || op.OpenWindows() != 0 {
		t.Errorf("after idling past every window: %d finals, %d open windows; want %d and 0", finals, op.OpenWindows(), want)
	}
}

// TestOperatorCheckpointResume splits a run at every point with a
// checkpoint and restore, and gets the same final windows as without.
func TestOperatorCheckpointResume(t *testing.T) {
	s := fastSpec(t)
	var events [][]byte
	for i := range 60 {
		at := time.Duration(i) * 300 * time.Millisecond
		if i%7 == 3 {
			at -= 400 * time.Millisecond // out of order
		}
		events = append(events, payment(fmt.Sprint("p", i%50), at, fmt.Sprint("m", i%3), fmt.Sprintf("%d.25", i)))
	}
	run := func(split int) string {
		op := NewOperator(s.Stream("payments"))
		var finals []string
		collect := func() {
			for _, u := range op.Drain(nil) {
				if u.Final {
					finals = append(finals, fmt.Sprint(u.View.Name, u.Start, u.Dims, u.Measures))
				}
			}
		}
		for i, e := range events {
			if i == split {
				collect()
				data, err := op.Checkpoint()
				if err != nil {
					t.Fatal(err)
				}
				open := op.OpenWindows()
				op = NewOperator(s.Stream("payments"))
				if err := op.Restore(data); err != nil {
					t.Fatal(err)
				}
				if op.OpenWindows() != open {
					t.Fatalf("restored %d open windows, checkpointed %d", op.OpenWindows(), open)
				}
			}
			op.Apply(e, uint64(i+1), recv)
			if i%5 == 0 {
				collect()
			}
		}
		op.Tick(time.Now().Add(time.Minute), time.Now())
		collect()
		sort.Strings(finals)
		return fmt.Sprint(finals)
	}
	want := run(-1)
	for split := range len(events) {
		if got := run(split); got != want {
			t.Fatalf("resumed at event %d:\n got %s\nwant %s", split, got, want)
		}
	}
}

// TestOperatorRestoresEarlierCheckpoints reads a checkpoint as written
// before windows were kept a group at a time, so an upgrade resumes; and a
// window changed after the last Drain, checkpointed so, still reports its
// next change after the restore.
func TestOperatorRestoresEarlierCheckpoints(t *testing.T) {
	s := fastSpec(t)
	op := NewOperator(s.Stream("payments"))
	for i := range 40 {
		op.Apply(payment(fmt.Sprint("p", i), time.Duration(i)*200*time.Millisecond, fmt.Sprint("m", i%3), "1.50"), uint64(i+1), recv)
	}
	op.Drain(nil)
	op.Apply(payment("late-change", 7*time.Second, "m1", "2.00"), 41, recv) // dirty, not drained
	snap := op.Snapshot()
	old := snap.s
	old.Views = nil
	for _, v := range snap.s.Views {
		ov := viewSnapshot{Name: v.Name, Late: v.Late}
		for _, g := range v.Groups {
			for at := 0; at < len(g.Wins); at += v.Stride {
				w := g.Wins[at : at+v.Stride]
				acc := make(spec.Accumulator, (v.Stride-winCells)/2)
				for i := range acc {
					acc[i] = spec.Cell{N: w[winCells+2*i], V: w[winCells+2*i+1]}
				}
				ov.Windows = append(ov.Windows, windowSnapshot{Start: w[winStart], Dims: g.Dims, Acc: acc})
			}
		}
		old.Views = append(old.Views, ov)
	}
	oldData, err := Snapshot{old}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	newData, err := snap.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"earlier": oldData, "current": newData} {
		r := NewOperator(s.Stream("payments"))
		if err := r.Restore(data); err != nil {
			t.Fatalf("%s checkpoint: %v", name, err)
		}
		for _, v := range s.Stream("payments").Views {
			if got, want := fmt.Sprint(sortedWindows(r, v.Name)), fmt.Sprint(sortedWindows(op, v.Name)); got != want {
				t.Errorf("%s checkpoint, view %s: restored windows\n%s\nwant\n%s", name, v.Name, got, want)
			}
		}
		r.Apply(payment("after", 7*time.Second, "m1", "3.00"), 42, recv)
		changed := false
		for _, u := range r.Drain(nil) {
			changed = changed || (u.View.Name == "merchant_minute" && u.Dims[0].Str == "m1" && u.Start == t0.Add(5*time.Second).UnixMicro())
		}
		if !changed {
			t.Errorf("%s checkpoint: a change to a window that was dirty when checkpointed is not reported", name)
		}
	}
}

func sortedWindows(op *Operator, view string) []string {
	var out []string
	for _, u := range op.Windows(view) {
		out = append(out, fmt.Sprint(u.Start, u.Dims, u.Measures))
	}
	sort.Strings(out)
	return out
}

// TestOperatorFutureEventCannotMoveTime: one producer whose clock is 59
// minutes ahead (inside the contract's max_future) moves the watermark no
// further than the broker's clock, so the events after it are on time, and
// its own event counts in its own window when that window's time comes.
func TestOperatorFutureEventCannotMoveTime(t *testing.T) {
	s := fastSpec(t)
	op := NewOperator(s.Stream("payments"))
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	if got, _ := op.Apply(payment("a", 0, "m1", "1.00"), 1, at(0)); got != Applied {
		t.Fatalf("on-time event: %v", got)
	}
	if got, err := op.Apply(payment("future", 59*time.Minute, "m-future", "1.00"), 2, at(time.Second)); got != Applied {
		t.Fatalf("event 59 minutes ahead of the broker: %v %v; want it counted in its own window", got, err)
	}
	if wm := time.UnixMicro(op.Watermark).UTC(); wm.After(at(time.Second)) {
		t.Fatalf("watermark %v after one future-dated event received at %v: a producer's clock moved event time", wm, at(time.Second))
	}
	for i := range 10 {
		d := time.Duration(i+2) * time.Second
		if got, _ := op.Apply(payment(fmt.Sprint("b", i), d, "m1", "1.00"), uint64(3+i), at(d)); got != Applied {
			t.Fatalf("on-time event %d after the future-dated one: %v", i, got)
		}
	}
	if n := op.LateEvents()["merchant_minute"]; n != 0 {
		t.Fatalf("%d late events after a future-dated one; want 0", n)
	}
	// When its time comes, its window closes with it counted.
	op.Apply(payment("c", 59*time.Minute+10*time.Second, "m1", "1.00"), 20, at(59*time.Minute+10*time.Second))
	found := false
	for _, u := range op.Drain(nil) {
		if u.Final && u.View.Name == "merchant_minute" && u.Dims[0].Str == "m-future" {
			found = u.Start == at(59*time.Minute).UnixMicro() && u.Measures[0].Int == 1
		}
	}
	if !found {
		t.Error("the future-dated event's window did not close with it counted when its time came")
	}
}

// TestOperatorHealsPoisonedCheckpoint: a checkpoint whose event time a
// future-dated event moved an hour ahead (as before the receive-time bound)
// is taken back to the clock on restore, and the events after it count.
func TestOperatorHealsPoisonedCheckpoint(t *testing.T) {
	s := fastSpec(t)
	op := NewOperator(s.Stream("payments"))
	op.Apply(payment("a", 0, "m1", "1.00"), 1, recv)
	op.Apply(payment("future", 59*time.Minute, "m1", "1.00"), 2, time.Time{}) // no receive time: unbounded, as before
	data, err := op.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	r := NewOperator(s.Stream("payments"))
	if err := r.Restore(data); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(2 * time.Second)
	if ahead := r.Heal(now); ahead < 58*time.Minute {
		t.Fatalf("Heal took back %v; the checkpoint's event time was 59 minutes ahead", ahead)
	}
	if wm := time.UnixMicro(r.Watermark).UTC(); wm.After(now) {
		t.Fatalf("watermark %v after healing at %v", wm, now)
	}
	if got, _ := r.Apply(payment("b", 3*time.Second, "m1", "1.00"), 3, t0.Add(3*time.Second)); got != Applied {
		t.Fatalf("on-time event after healing: %v, want Applied", got)
	}
	if ahead := r.Heal(t0.Add(3 * time.Second)); ahead != 0 {
		t.Errorf("healing a healthy operator took back %v", ahead)
	}
}

// TestOperatorSinceOfANewView restores a checkpoint into a spec with one
// more view: the views the checkpoint had have held their windows from the
// start, the new one only after the latest event time applied before it,
// and a checkpoint of the new state keeps that.
func TestOperatorSinceOfANewView(t *testing.T) {
	s := fastSpec(t)
	op := NewOperator(s.Stream("payments"))
	for i := range 20 {
		op.Apply(payment(fmt.Sprint("p", i), time.Duration(i)*time.Second, "m1", "1.00"), uint64(i+1), recv)
	}
	max := op.MaxEvent
	op.Drain(nil)
	data, err := op.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := spec.Parse("v2.yaml", []byte(strings.Replace(fastSpecYAML(t), "\nviews:\n", `
views:
  channel_minute:
    stream: payments
    window: 5s
    group_by: [channel]
    measures:
      payments: count
`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	op2 := NewOperator(s2.Stream("payments"))
	if err := op2.Restore(data); err != nil {
		t.Fatal(err)
	}
	since := op2.Since()
	if since["channel_minute"] != max+1 {
		t.Errorf("the new view holds windows since %d, want %d (after the latest event applied)", since["channel_minute"], max+1)
	}
	if since["merchant_minute"] != math.MinInt64 {
		t.Errorf("a view of the checkpoint holds windows since %d, want from the start", since["merchant_minute"])
	}
	op2.Drain(nil)
	snap := op2.Snapshot()
	if snap.Since("channel_minute") != max+1 || snap.Since("merchant_minute") != math.MinInt64 {
		t.Errorf("snapshot: since %d and %d", snap.Since("channel_minute"), snap.Since("merchant_minute"))
	}
	data, _ = snap.Encode()
	op3 := NewOperator(s2.Stream("payments"))
	if err := op3.Restore(data); err != nil {
		t.Fatal(err)
	}
	if got := op3.Since()["channel_minute"]; got != max+1 {
		t.Errorf("after a second restore the new view holds windows since %d, want %d", got, max+1)
	}
}
