package score

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/examples/payments"
	"tideline/internal/stacktest"
	"tideline/lake"
	"tideline/spec"
	"tideline/stream"
)

func exampleSpec(t testing.TB) *spec.Spec {
	t.Helper()
	s, err := spec.Load("../examples/payments/tideline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Scoring == nil {
		t.Fatal("the example spec has no scoring section")
	}
	return s
}

func newScorer(t testing.TB, s *spec.Spec) *Scorer {
	t.Helper()
	sc, err := New(s.Scoring)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func exampleMerchants() map[string]Merchant {
	out := map[string]Merchant{}
	for _, m := range payments.MerchantTable() {
		out[m.ID] = Merchant{Category: m.Category, Risk: m.Risk}
	}
	return out
}

func payment(t testing.TB, s *spec.Spec, ev map[string]any) spec.Event {
	t.Helper()
	data, _ := json.Marshal(ev)
	e, err := s.Scoring.Stream.Contract.Decode(data, time.Now())
	if err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	return e
}

// TestRules scores hand-made payments against the example's rules: a
// card-testing burst is flagged from its fifth payment, an amount spike
// only with the card's history, and without the lake the decisions are
// marked fallback and rules needing history do not hold.
func TestRules(t *testing.T) {
	s := exampleSpec(t)
	sc := newScorer(t, s)
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Hour)
	pay := func(id, card, merchant, amount string, at time.Duration) map[string]any {
		return map[string]any{"payment_id": id, "ts": base.Add(at).Format(time.RFC3339Nano), "card_id": card, "merchant_id": merchant,
			"country": "US", "amount": amount, "currency": "USD", "channel": "ecom"}
	}
	// No lake: fallback, speed rules only.
	var got []string
	for i := range 8 {
		d, ok := sc.Score(payment(t, s, pay(fmt.Sprint("b", i), "card-x", fmt.Sprintf("m-%04d", i), "1.50", time.Duration(i)*3*time.Second)), time.Now())
		if !ok || !d.Fallback {
			t.Fatalf("burst payment %d: ok %v, %+v; want a fallback decision", i, ok, d)
		}
		got = append(got, d.Decision)
	}
	want := []string{Approved, Approved, Approved, Approved, Flagged, Flagged, Flagged, Flagged}
	if !slices.Equal(got, want) {
		t.Errorf("burst decisions %v, want %v", got, want)
	}
	if _, ok := sc.Score(payment(t, s, pay("b3", "card-x", "m-0001", "1.50", 30*time.Second)), time.Now()); ok {
		t.Errorf("a payment id scored twice")
	}
	spike := pay("s1", "card-y", "m-0001", "5000.00", time.Minute)
	d, _ := sc.Score(payment(t, s, spike), time.Now())
	if d.Decision != Approved || d.Reasons != "big_amount" {
		t.Errorf("a spike without history: %+v; want approved on big_amount alone", d)
	}

	// With history and the merchant table.
	sc.SetBatch(Batch{"card-y": {Payments: 10, AmountSum: 20000, AmountMax: 4000, Countries: map[string]bool{"US": true}}})
	sc.SetMerchants(map[string]Merchant{"m-0001": {Category: "gaming", Risk: "high"}})
	spike["payment_id"] = "s2"
	d, _ = sc.Score(payment(t, s, spike), time.Now())
	if d.Decision != Flagged || d.Fallback || d.MerchantCategory != "gaming" || !strings.Contains(d.Reasons, "amount_spike") || !strings.Contains(d.Reasons, "risky_merchant") {
		t.Errorf("a spike with history: %+v; want flagged on amount_spike, big_amount and risky_merchant", d)
	}
	abroad := pay("a1", "card-y", "m-0002", "12.00", 2*time.Minute)
	abroad["country"], abroad["currency"] = "BR", "BRL"
	d, _ = sc.Score(payment(t, s, abroad), time.Now())
	if !strings.Contains(d.Reasons, "unusual_country") || d.Decision != Approved {
		t.Errorf("a small payment abroad: %+v; want approved with unusual_country", d)
	}
	d, _ = sc.Score(payment(t, s, pay("n1", "card-new", "m-0003", "12.00", 3*time.Minute)), time.Now())
	if d.Reasons != "" || d.Decision != Approved || d.Fallback {
		t.Errorf("an ordinary payment of a card with no history: %+v", d)
	}
	// A card whose busiest session saw one merchant pays at three in ten
	// minutes: a spree. One with no session in the lake has no such rule.
	sc.SetBatch(Batch{
		"card-z": {Payments: 9, AmountSum: 9000, AmountMax: 1000, Countries: map[string]bool{"US": true}, SessionMerchants: 1},
		"card-w": {Payments: 9, AmountSum: 9000, AmountMax: 1000, Countries: map[string]bool{"US": true}, SessionMerchants: -1},
	})
	for _, card := range []string{"card-z", "card-w"} {
		for i := range 3 {
			d, _ = sc.Score(payment(t, s, pay(fmt.Sprint(card, i), card, fmt.Sprintf("m-%04d", 10+i), "12.00", 4*time.Minute+time.Duration(i)*time.Minute)), time.Now())
		}
		if spree := strings.Contains(d.Reasons, "merchant_spree"); spree != (card == "card-z") {
			t.Errorf("%s's third merchant in 3 minutes: %+v", card, d)
		}
	}
}

// scorerStack is real NATS with the example's streams, a file lake with the
// merchant table seeded, and a Runner.
func scorerStack(t testing.TB) (*nats.Conn, jetstream.JetStream, *spec.Spec) {
	return scorersStack(t, 1)
}

// scorersStack is scorerStack with n scorers sharing the work, as n
// `tideline score` processes do.
func scorersStack(t testing.TB, n int) (*nats.Conn, jetstream.JetStream, *spec.Spec) {
	t.Helper()
	ctx := t.Context()
	s := exampleSpec(t)
	_, nc, js := stacktest.NATS(t)
	if err := stream.Setup(ctx, js, s, stream.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	store, err := lake.Open(ctx, "file://"+t.TempDir(), lake.S3Config{}, lake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := SeedMerchants(ctx, store, exampleMerchants()); err != nil {
		t.Fatal(err)
	}
	if err := SeedMerchants(ctx, store, exampleMerchants()); err != nil { // once is enough; again is harmless
		t.Fatal(err)
	}
	ready := make(chan struct{}, n)
	for range n { // each with its own DuckDB, as processes have
		db, err := lake.OpenDuckDB(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		cache, err := lake.NewCache(t.TempDir(), 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		r := &Runner{Scorer: newScorer(t, s), NC: nc, JS: js, Loader: &Loader{Spec: s, Catalog: lake.NewCatalog(db, store, cache), Store: store}, Log: quiet,
			Ready: func() { ready <- struct{}{} }}
		done := make(chan error, 1)
		rctx, stop := contextWithCancel(t)
		go func() { done <- r.Run(rctx) }()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	// Ready when every scorer answers.
	for range n {
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			t.Fatal("a scorer did not start answering within 20s")
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if m, err := nc.Request(RequestSubject, []byte(`{}`), time.Second); err == nil && strings.Contains(string(m.Data), "invalid payment") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the scorer does not answer requests")
		}
	}
	return nc, js, s
}

// sendPayments sends n payments of the fraud profile (seed picks which) by
// request-reply at rate per second, each from its own goroutine at its time, and returns
// the replies in send order with each one's latency.
func sendPayments(t testing.TB, nc *nats.Conn, n int, rate float64, seed uint64) ([]map[string]any, []Reply, []time.Duration) {
	gen := payments.Fraud(0.01, 0.002)
	r := rand.New(rand.NewPCG(seed, seed))
	base := time.Now().Add(-5 * time.Minute).UTC()
	evs := make([]map[string]any, n)
	for i := range evs {
		evs[i] = gen(r, i, base.Add(time.Duration(i)*200*time.Millisecond)) // 5 payments/s of event time
	}
	replies, lat := make([]Reply, n), make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i, ev := range evs {
		if wait := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); wait > 0 {
			time.Sleep(wait)
		}
		data, _ := json.Marshal(ev)
		// Sent in order, answered concurrently: the scorer decides in
		// arrival order.
		inbox := nats.NewInbox()
		ch := make(chan *nats.Msg, 1)
		sub, err := nc.ChanSubscribe(inbox, ch)
		if err != nil {
			t.Fatal(err)
		}
		sent := time.Now()
		if err := nc.PublishRequest(RequestSubject, inbox, data); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer sub.Unsubscribe()
			select {
			case m := <-ch:
				lat[i] = time.Since(sent)
				if err := json.Unmarshal(m.Data, &replies[i]); err != nil {
					replies[i].Error = err.Error()
				}
			case <-time.After(10 * time.Second):
				replies[i].Error = "no reply in 10s"
			}
		})
	}
	wg.Wait()
	return evs, replies, lat
}

// TestRequestReply sends 1,000 payments of the fraud profile by
// request-reply at a steady 1,000/s and checks every one gets its
// decision, every card-testing burst is flagged, few ordinary payments
// are, and both the payments and their decisions are in their streams.
func TestRequestReply(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("scorers=%d", n), func(t *testing.T) { requestReply(t, n) })
	}
}

// requestReply is TestRequestReply with n scorers answering. With two,
// each request goes to either, and a card's payments are split between
// them: its bursts are flagged only if each holds every payment.
func requestReply(t *testing.T, n int) {
	nc, js, s := scorersStack(t, n)
	evs, replies, lat := sendPayments(t, nc, 1000, 1000, 42)
	bursts := map[string][]string{} // card -> decisions in order
	var ordinary, falsePos, spikes int
	for i, ev := range evs {
		rep := replies[i]
		if rep.Error != "" || rep.Decision == nil || rep.Decision.PaymentID != ev["payment_id"] {
			t.Fatalf("payment %d: %+v", i, rep)
		}
		if rep.Decision.Fallback {
			t.Fatalf("payment %d decided in fallback, with the lake there: %+v", i, rep.Decision)
		}
		switch ev["label"] {
		case payments.LabelCardTesting:
			bursts[ev["card_id"].(string)] = append(bursts[ev["card_id"].(string)], rep.Decision.Decision)
		case payments.LabelOrdinary:
			ordinary++
			if rep.Decision.Decision == Flagged {
				falsePos++
			}
		case payments.LabelAmountSpike:
			spikes++
		}
	}
	if len(bursts) == 0 {
		t.Fatal("the generator made no card-testing burst")
	}
	for card, ds := range bursts {
		// From its fifth payment on, a card-testing burst has 5 payments
		// in a minute: each is flagged, whichever scorer answers, only if
		// that scorer holds the payments the other answered.
		if len(ds) == payments.BurstLen && slices.Contains(ds[4:], Approved) {
			t.Errorf("burst on %s not flagged from its fifth payment on: %v", card, ds)
		}
	}
	fpr := float64(falsePos) / float64(ordinary)
	if fpr > 0.01 {
		t.Errorf("%d of %d ordinary payments flagged (%.2f%%); want at most 1%%", falsePos, ordinary, 100*fpr)
	}
	slices.Sort(lat)
	t.Logf("%d bursts, %d spikes, %d ordinary with %d flagged (false positives %.2f%%); latency p50 %s p99 %s at 1,000/s",
		len(bursts), spikes, ordinary, falsePos, 100*fpr, lat[len(lat)/2], lat[len(lat)*99/100])

	for _, name := range []string{s.Scoring.Stream.Name, s.Scoring.Decisions.Name} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := js.Stream(t.Context(), name)
			if err != nil {
				t.Fatal(err)
			}
			info, _ := st.Info(t.Context())
			if info.State.Msgs == uint64(len(evs)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stream %s has %d messages; want %d, one per payment", name, info.State.Msgs, len(evs))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestScorerClockCannotBePoisoned: one request dated 59 minutes ahead
// (inside the contract's max_future) does not age every card's recent
// payments out of the features: a card-testing burst after it is still
// seen.
func TestScorerClockCannotBePoisoned(t *testing.T) {
	s := exampleSpec(t)
	sc := newScorer(t, s)
	now := time.Now().UTC()
	pay := func(id, card string, ts time.Time) map[string]any {
		return map[string]any{"payment_id": id, "ts": ts.Format(time.RFC3339Nano), "card_id": card, "merchant_id": "m-0001",
			"country": "US", "amount": "1.00", "currency": "USD", "channel": "ecom"}
	}
	sc.Score(payment(t, s, pay("future", "card-liar", now.Add(59*time.Minute))), now)
	var d Decision
	for i := range 7 {
		at := now.Add(time.Duration(i) * time.Second)
		d, _ = sc.Score(payment(t, s, pay(fmt.Sprint("burst-", i), "card-tested", at)), at)
	}
	if !strings.Contains(d.Reasons, "card_testing") {
		t.Fatalf("7th payment of a burst after a future-dated one: score %d (%s); want card_testing among the reasons", d.Score, d.Reasons)
	}
}

// TestScorerStateBoundedPerCard: a card with tens of thousands of payments
// in minutes keeps at most MaxRecentPerCard of them, so its cost per
// payment does not grow with its history; its counts saturate far above
// every rule's threshold.
func TestScorerStateBoundedPerCard(t *testing.T) {
	s := exampleSpec(t)
	sc := newScorer(t, s)
	now := time.Now().UTC()
	var d Decision
	for i := range 5000 {
		at := now.Add(time.Duration(i) * 10 * time.Millisecond)
		d, _ = sc.Score(payment(t, s, map[string]any{"payment_id": fmt.Sprint("p", i), "ts": at.Format(time.RFC3339Nano), "card_id": "card-hot",
			"merchant_id": "m-0001", "country": "US", "amount": "1.00", "currency": "USD", "channel": "ecom"}), at)
	}
	if n := len(sc.cards["card-hot"]); n > MaxRecentPerCard {
		t.Fatalf("the speed state holds %d payments of one card; want at most %d", n, MaxRecentPerCard)
	}
	if !strings.Contains(d.Reasons, "card_testing") || !strings.Contains(d.Reasons, "velocity") {
		t.Errorf("the 5,000th payment in 50 s: %s; want card_testing and velocity", d.Reasons)
	}
}
