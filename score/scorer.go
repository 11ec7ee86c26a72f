// Package score is the payments example's fraud scorer: for every payment
// it computes features of the card and merchant, sums the weights of the
// spec's scoring rules that hold, and decides approved or flagged.
//
//   - Speed features (the card's payments and amount in the last 1 and 5
//     minutes, distinct merchants and countries in the last 10) come from
//     the scorer's own state of recent payments, by event time. At start it
//     reads the last 10 minutes of the stream back into that state. Its
//     clock is the largest event time seen, each bounded by when the
//     payment was received, and it keeps at most MaxRecentPerCard payments
//     per card, so neither a wrong producer clock nor a hot card can blind
//     it or make it slow.
//   - Batch features (the card's 30-day payments, average and largest
//     amount, and the countries it uses) come from the lake's batch view
//     card_country_minute, and the most merchants of one of its sessions
//     from card_sessions; reference features (merchant category and risk)
//     from the lake's merchant table, which the scorer seeds when it is
//     missing. They are reloaded when their tables change.
//   - The features are this package's (features.go): the spec's rules are
//     compiled against them here (Check), and spec knows none of them.
//   - Without them (the lake unreachable) those features are null, so rules
//     reading them do not hold, and the decision is marked fallback: the
//     scorer keeps deciding on speed rules rather than stall payments.
//   - Runner scores every payment of the stream (a durable consumer, so
//     none is skipped across restarts) and publishes each decision to the
//     decisions stream with the payment id as Nats-Msg-Id. It also answers
//     request-reply on payments.score: the payment is stored in the stream
//     and its decision returned at once.
package score

import (
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tideline/spec"
)

// Decision is what the scorer publishes for a payment: the decisions
// stream's contract.
type Decision struct {
	PaymentID        string    `json:"payment_id"`
	TS               time.Time `json:"ts"`
	CardID           string    `json:"card_id"`
	MerchantID       string    `json:"merchant_id"`
	MerchantCategory string    `json:"merchant_category,omitempty"`
	Country          string    `json:"country"`
	Amount           string    `json:"amount"` // exact decimal
	Score            int64     `json:"score"`
	Decision         string    `json:"decision"` // approved or flagged
	Reasons          string    `json:"reasons"`  // the rules that held, comma separated
	Fallback         bool      `json:"fallback"` // batch or reference features were unavailable
}

// The decisions.
const (
	Approved = "approved"
	Flagged  = "flagged"
)

// History is a card's 30 days from the lake.
type History struct {
	Payments  int64
	AmountSum int64
	AmountMax int64
	Countries map[string]bool
	// SessionMerchants is the most merchants in one of its sessions; -1
	// when the lake has no session of the card (or no session view).
	SessionMerchants int64
}

// Batch is the batch features of every card with history; a card not in it
// has none.
type Batch map[string]*History

// Merchant is a merchant's reference data.
type Merchant struct{ Category, Risk string }

// Scorer holds the speed state and the loaded batch and reference features.
// It is safe for concurrent use.
type Scorer struct {
	sc    *spec.Scoring
	rules *rules
	// Field positions in the scored stream's events.
	id, ts, card, merchant, country, amount int
	amountScale                             int

	mu    sync.Mutex
	cards map[string][]recent // per card, by event time
	seen  map[string]int64    // payment ids in the speed state, with their event time
	// decided is the payment ids this scorer has decided, with their
	// event time. With several scorers each holds every payment (each
	// reads the whole stream), but decides only those it is handed.
	decided map[string]int64
	maxTS   int64
	scored  int

	batch     atomic.Pointer[Batch]               // nil: unavailable
	merchants atomic.Pointer[map[string]Merchant] // nil: unavailable
}

type recent struct {
	ts, amount            int64
	id, merchant, country string
}

// keep is how far back, in event time, the speed state reaches: the
// longest feature window.
const keep = 10 * time.Minute

// MaxRecentPerCard bounds the payments the speed state keeps per card, so a
// card's cost per payment and its memory do not grow with its history. A
// card past it in the last 11 minutes has its speed features computed over
// its latest MaxRecentPerCard payments: counts saturate there, far above
// any rule's threshold.
const MaxRecentPerCard = 256

// New returns a scorer for the spec's scoring section, or the problems
// Check finds in it.
func New(sc *spec.Scoring) (*Scorer, error) {
	r, err := compile(sc)
	if err != nil {
		return nil, err
	}
	c := sc.Stream.Contract
	idx := func(name string) int {
		for i, f := range c.Fields {
			if f.Name == name {
				return i
			}
		}
		return -1
	}
	s := &Scorer{sc: sc, rules: r, id: c.ID, ts: c.Time, card: idx("card_id"), merchant: idx("merchant_id"), country: idx("country"), amount: idx("amount"),
		cards: map[string][]recent{}, seen: map[string]int64{}, decided: map[string]int64{}, maxTS: math.MinInt64}
	s.amountScale = c.Fields[s.amount].Scale
	return s, nil
}

// SetBatch installs batch features; nil marks them unavailable.
func (s *Scorer) SetBatch(b Batch) {
	if b == nil {
		s.batch.Store(nil)
		return
	}
	s.batch.Store(&b)
}

// SetMerchants installs the merchant table; nil marks it unavailable.
func (s *Scorer) SetMerchants(m map[string]Merchant) {
	if m == nil {
		s.merchants.Store(nil)
		return
	}
	s.merchants.Store(&m)
}

// Remember adds a payment to the speed state without scoring it: the
// replay of recent payments at start, and every payment of the stream
// after, from whichever scorer it was decided by. received is when the
// broker (or the scorer, for a request) received it. A payment already in
// the state is not added again.
func (s *Scorer) Remember(ev spec.Event, received time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := ev.Values[s.id].Str
	if _, dup := s.seen[id]; dup {
		return
	}
	s.add(ev, received)
}

// Score decides a payment received at received. ok is false when the
// payment was scored before (a retry, or a payment scored by request and
// then read from the stream).
func (s *Scorer) Score(ev spec.Event, received time.Time) (d Decision, ok bool) {
	v := ev.Values
	row := make(spec.Row, len(s.rules.cols))
	copy(row, v)
	f := len(v)
	card, ts, amount := v[s.card].Str, v[s.ts].Int, v[s.amount].Int

	id := v[s.id].Str
	s.mu.Lock()
	if _, dup := s.decided[id]; dup {
		s.mu.Unlock()
		return Decision{}, false
	}
	var n1, a1, n5, a5 int64 = 1, amount, 1, amount
	merchants := map[string]bool{v[s.merchant].Str: true}
	countries := map[string]bool{v[s.country].Str: true}
	for _, r := range s.cards[card] {
		age := ts - r.ts
		if age < 0 || age >= keep.Microseconds() || r.id == id {
			continue // the payment itself may be in the state already: another scorer's stream read it
		}
		if age < time.Minute.Microseconds() {
			n1, a1 = n1+1, a1+r.amount
		}
		if age < 5*time.Minute.Microseconds() {
			n5, a5 = n5+1, a5+r.amount
		}
		merchants[r.merchant], countries[r.country] = true, true
	}
	if _, in := s.seen[id]; !in {
		s.add(ev, received)
	}
	s.decided[id] = ts
	s.mu.Unlock()

	row[f+fPayments1m], row[f+fAmount1m] = spec.Value{Int: n1}, spec.Value{Int: a1}
	row[f+fPayments5m], row[f+fAmount5m] = spec.Value{Int: n5}, spec.Value{Int: a5}
	row[f+fMerchants10m], row[f+fCountries10m] = spec.Value{Int: int64(len(merchants))}, spec.Value{Int: int64(len(countries))}
	for i := f + fPayments30d; i < len(row); i++ {
		row[i] = spec.Value{Null: true}
	}
	fallback := false
	if b := s.batch.Load(); b == nil {
		fallback = true
	} else if h := (*b)[card]; h == nil {
		row[f+fPayments30d] = spec.Value{Int: 0}
	} else {
		row[f+fPayments30d] = spec.Value{Int: h.Payments}
		if h.Payments > 0 {
			row[f+fAvgAmount30d] = spec.Value{Int: h.AmountSum / h.Payments}
			row[f+fMaxAmount30d] = spec.Value{Int: h.AmountMax}
			row[f+fUsualCountry] = spec.Value{Bool: h.Countries[v[s.country].Str]}
		}
		if h.SessionMerchants >= 0 {
			row[f+fSessionMerchants30d] = spec.Value{Int: h.SessionMerchants}
		}
	}
	d = Decision{PaymentID: v[s.id].Str, TS: time.UnixMicro(ts).UTC(), CardID: card, MerchantID: v[s.merchant].Str,
		Country: v[s.country].Str, Amount: spec.FormatDecimal(amount, s.amountScale), Decision: Approved}
	if m := s.merchants.Load(); m == nil {
		fallback = true
	} else if mm, ok := (*m)[d.MerchantID]; ok {
		row[f+fMerchantCategory], row[f+fMerchantRisk] = spec.Value{Str: mm.Category}, spec.Value{Str: mm.Risk}
		d.MerchantCategory = mm.Category
	}
	var reasons []string
	for i, r := range s.sc.Rules {
		if x := s.rules.when[i].Eval(row); !x.Null && x.Bool {
			d.Score += r.Weight
			reasons = append(reasons, r.Name)
		}
	}
	d.Reasons, d.Fallback = strings.Join(reasons, ","), fallback
	if d.Score >= s.sc.Threshold {
		d.Decision = Flagged
	}
	return d, true
}

// add puts a payment in the speed state and prunes what fell out of it.
// Caller holds mu.
func (s *Scorer) add(ev spec.Event, received time.Time) {
	v := ev.Values
	ts, card := v[s.ts].Int, v[s.card].Str
	s.seen[v[s.id].Str] = ts
	rs := append(s.cards[card], recent{ts: ts, amount: v[s.amount].Int, id: v[s.id].Str, merchant: v[s.merchant].Str, country: v[s.country].Str})
	// I7: a payment moves the scorer's clock no further than the time it
	// was received, so a producer whose clock runs ahead cannot age every
	// card's recent payments out of the features.
	if now := min(ts, received.UnixMicro()); now > s.maxTS {
		s.maxTS = now
	}
	horizon := s.maxTS - (keep + time.Minute).Microseconds() // a minute of disorder
	rs = slices.DeleteFunc(rs, func(r recent) bool { return r.ts < horizon })
	if len(rs) > MaxRecentPerCard {
		rs = slices.Delete(rs, 0, len(rs)-MaxRecentPerCard) // the earliest received go first
	}
	s.cards[card] = rs
	if s.scored++; s.scored%10_000 == 0 {
		for c, rs := range s.cards {
			if len(rs) == 0 || rs[len(rs)-1].ts < horizon {
				delete(s.cards, c)
			}
		}
		for _, ids := range []map[string]int64{s.seen, s.decided} {
			for id, t := range ids {
				if t < horizon {
					delete(ids, id)
				}
			}
		}
	}
}

// forget drops a payment from the decided set, so a retry scores it
// again.
func (s *Scorer) forget(id string) {
	s.mu.Lock()
	delete(s.decided, id)
	s.mu.Unlock()
}
