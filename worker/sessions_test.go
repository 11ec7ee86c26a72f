package worker

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"tideline/activities"
	"tideline/examples/payments"
	"tideline/stream"
)

// TestLateEventMergesSessions runs a late event that bridges two closed
// sessions through the whole system: the speed layer serves the two
// sessions and counts the event late; compaction, recompute and the
// tideline's advance (on real NATS, Temporal and MinIO) make them one
// session in the batch view, equal to the oracle; and the corrections
// record the merged session's gain and the other's removal, which add up
// to the one late event.
func TestLateEventMergesSessions(t *testing.T) {
	h := startHarness(t)
	h.startWorker()
	// card_sessions in the fast spec: gap 3s, max 45s, lateness 1s. Card
	// "sessions-card" pays at T and T+1s, then at T+6s and T+7s: two
	// sessions. Other cards pay for a minute after, so the watermark
	// closes both.
	at := []time.Duration{0, time.Second, 6 * time.Second, 7 * time.Second}
	t0 := genStart.Add(10 * time.Second)
	own := func(i int, ts time.Time, d time.Duration) map[string]any {
		ev := payments.Payment(rand.New(rand.NewPCG(uint64(i), 1)), i, ts)
		ev["payment_id"], ev["card_id"], ev["ts"] = fmt.Sprintf("sess-%d", i), "sessions-card", t0.Add(d).Format(time.RFC3339Nano)
		ev["merchant_id"] = fmt.Sprintf("m-%04d", i)
		return ev
	}
	// Payments 100ms apart, in order, the card's among them.
	h.generateWith(stream.GenOptions{Count: 600, Seed: 31, Start: t0}, func(r *rand.Rand, i int, ts time.Time) map[string]any {
		d := time.Duration(i) * 100 * time.Millisecond
		for k, a := range at {
			if a == d {
				return own(k, ts, a)
			}
		}
		return payments.Payment(r, i, t0.Add(d))
	})
	h.waitSpeed()
	// Now the bridge, at T+3.5s: 2.5s after the first session's last
	// payment and before the second's first.
	h.generateWith(stream.GenOptions{Count: 1, Seed: 32, Start: t0}, func(r *rand.Rand, i int, ts time.Time) map[string]any {
		return own(99, ts, 3500*time.Millisecond)
	})
	late := h.waitSpeed()
	if late["card_sessions"] != 1 {
		t.Fatalf("the speed layer counted %d late events in card_sessions, want the bridge alone", late["card_sessions"])
	}
	res := h.compact("sessions")
	if len(res.Failed) > 0 {
		t.Fatalf("compaction failed: %v", res.Failed)
	}
	h.checkBatch(h.oracle())
	rows := h.sessionRows()
	if len(rows) != 1 || !strings.HasPrefix(rows[0], t0.Format("15:04:05")+" 5 ") {
		t.Errorf("sessions-card's batch sessions %v, want one from %s with 5 payments", rows, t0.Format("15:04:05"))
	}
	if got := h.corrected("card_sessions", activities.KindSpeed); got != 1 {
		t.Errorf("card_sessions' corrections add %d payments, want the one late event", got)
	}
	changes := h.correctionRows("card_sessions")
	if len(changes) != 2 {
		t.Errorf("corrections %v, want the first session's gain and the second's removal", changes)
	}
}

// sessionRows lists sessions-card's batch sessions as "start payments
// merchants".
func (h *harness) sessionRows() []string {
	h.t.Helper()
	_, paths := h.lakeFiles("views/card_sessions")
	return h.lines(fmt.Sprintf("SELECT concat_ws(' ', strftime(window_start, '%%H:%%M:%%S'), payments, merchants) FROM %s WHERE card_id = 'sessions-card' ORDER BY 1", readParquet(paths)))
}

// correctionRows lists the payments corrections of sessions-card as
// "start old->new", -1 for none.
func (h *harness) correctionRows(view string) []string {
	h.t.Helper()
	_, paths := h.lakeFiles("corrections/" + view)
	if len(paths) == 0 {
		return nil
	}
	return h.lines(fmt.Sprintf("SELECT concat(strftime(window_start, '%%H:%%M:%%S'), ' ', coalesce(old_value, -1), '->', coalesce(new_value, -1)) FROM %s WHERE measure = 'payments' AND dims LIKE '%%sessions-card%%' ORDER BY 1", readParquet(paths)))
}

// lines runs a query of one text column.
func (h *harness) lines(q string) []string {
	h.t.Helper()
	rows, err := h.db.QueryContext(h.t.Context(), q)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		h.t.Fatal(err)
	}
	return out
}
