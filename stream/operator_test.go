package stream

import (
	"fmt"
	"math"
	"slices"
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

// fixedOnly is st without its session views, whose ids the operator
// remembers for their max span.
func fixedOnly(st *spec.Stream) *spec.Stream {
	out := *st
	out.Views = slices.DeleteFunc(slices.Clone(st.Views), func(v *spec.View) bool { return v.Session() })
	return &out
}

func TestOperatorWindowsAndWatermark(t *testing.T) {
	s := fastSpec(t)
	op := NewOperator(fixedOnly(s.Stream("payments")))
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
	want := 0 // one window per tumbling or session view, size/hop per hopping one
	for _, v := range s.Stream("payments").Views {
		if v.Session() {
			want++
		} else {
			want += v.PerEvent()
		}
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
	st := fixedOnly(s.Stream("payments")) // no checkpoint before this format had sessions
	op := NewOperator(st)
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
		r := NewOperator(st)
		if err := r.Restore(data); err != nil {
			t.Fatalf("%s checkpoint: %v", name, err)
		}
		for _, v := range st.Views {
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

// TestOperatorSessions walks session windows through what the agreement
// test meets only by chance: an out-of-order event bridging two sessions,
// one moving a session's start earlier (each deleting the key reported
// before), the Max span cutting a session, and late events that would
// bridge a closed session to another, closed or open.
func TestOperatorSessions(t *testing.T) {
	s, err := spec.Parse("agree.yaml", []byte(agreeSpec))
	if err != nil {
		t.Fatal(err)
	}
	one := *s.Stream("s")
	one.Views = []*spec.View{s.View("sessions")} // gap 2m, max 2h, lateness 10s; out-of-orderness 20s
	op := NewOperator(&one)
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	seq := uint64(0)
	apply := func(at time.Duration) Outcome {
		seq++
		out, err := op.Apply(fmt.Appendf(nil, `{"id":"e%d","ts":%q,"user":"u"}`, seq, base.Add(at).Format(time.RFC3339Nano)), seq, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	windows := map[time.Duration]string{} // by start: "count end", as reported
	var gone []time.Duration
	drain := func() {
		for _, u := range op.Drain(nil) {
			at := time.UnixMicro(u.Start).Sub(base)
			if u.Gone {
				gone = append(gone, at)
				delete(windows, at)
				continue
			}
			windows[at] = fmt.Sprintf("%d %s", u.Measures[0].Int, time.UnixMicro(u.End).Sub(base))
		}
	}
	want := func(step string, w map[time.Duration]string, g ...time.Duration) {
		t.Helper()
		drain()
		if fmt.Sprint(windows) != fmt.Sprint(w) || fmt.Sprint(gone) != fmt.Sprint(g) {
			t.Fatalf("%s: windows %v, gone %v; want %v, gone %v", step, windows, gone, w, g)
		}
		gone = nil
	}
	m := time.Minute
	apply(10 * m)
	apply(12*m + 20*time.Second) // watermark 12:00; the first session closes at 12:10
	want("two sessions", map[time.Duration]string{10 * m: "1 12m0s", 12*m + 20*time.Second: "1 14m20s"})
	if got := apply(11*m + 10*time.Second); got != Applied {
		t.Fatalf("bridging event: %v", got)
	}
	want("bridged", map[time.Duration]string{10 * m: "3 14m20s"}, 12*m+20*time.Second)
	apply(8*m + 30*time.Second)
	want("moved earlier", map[time.Duration]string{8*m + 30*time.Second: "4 14m20s"}, 10*m)
	// Before 10:00 is another span: an event at 9:59 joins nothing, and
	// its session would end at 10:00 and have closed at 10:00:10.
	if got := apply(-time.Minute); got != Late {
		t.Fatalf("event in a span the watermark has passed: %v, want Late", got)
	}
	// Spans are 2h from the epoch: 10:00 to 12:00, so 11:59:30 and 12:00:30
	// are two sessions, the first ending at 12:00.
	windows = map[time.Duration]string{}
	apply(119*time.Minute + 30*time.Second)
	apply(120*time.Minute + 30*time.Second)
	want("cut by the span", map[time.Duration]string{8*m + 30*time.Second: "4 14m20s", 119*time.Minute + 30*time.Second: "1 2h0m0s", 120*time.Minute + 30*time.Second: "1 2h2m30s"})
	// Closed sessions at 12:10 and 12:13; an event at 12:11:30 would bridge
	// them: late.
	windows = map[time.Duration]string{}
	apply(130 * time.Minute)
	apply(133 * time.Minute)
	apply(140 * time.Minute) // watermark 12:19:40: both closed
	drain()
	if got := apply(131*time.Minute + 30*time.Second); got != Late {
		t.Fatalf("event bridging two closed sessions: %v, want Late", got)
	}
	// A session closed at 12:20 (watermark 12:22:40 + ...), an open one at
	// 12:23:30: an event at 12:21:30 would join the open one, but also the
	// closed one: late.
	apply(143*time.Minute + 30*time.Second) // 12:23:30, watermark 12:23:10: 12:20's session closed at 12:22:10
	drain()
	if got := apply(141*time.Minute + 30*time.Second); got != Late {
		t.Fatalf("event bridging a closed session to an open one: %v, want Late", got)
	}
	// A session at 12:50 closed; a new one at 12:53 is on time; then an
	// event at 12:51:30 would bridge them: late, though the closed
	// session's own close is minutes past.
	apply(170 * m)
	apply(174*m + 50*time.Second) // watermark 12:54:30
	drain()
	if got := apply(173 * m); got != Applied {
		t.Fatalf("a new session near a closed one: %v", got)
	}
	if got := apply(171*m + 30*time.Second); got != Late {
		t.Fatalf("event bridging a closed session to one opened after it closed: %v, want Late", got)
	}
	// Long after, with the closed session forgotten, an event near it is
	// late on its own.
	apply(200 * m)
	drain()
	if got := apply(141*time.Minute + 30*time.Second + time.Second); got != Late {
		t.Fatalf("event near a forgotten session: %v, want Late", got)
	}
	if n := op.LateEvents()["sessions"]; n != 5 {
		t.Errorf("%d late events, want 5", n)
	}
}
