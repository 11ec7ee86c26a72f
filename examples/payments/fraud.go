package payments

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Labels of generated payments, in the "label" field (the contract ignores
// unknown fields, so they pass through to --out files for oracles).
const (
	LabelOrdinary    = "ordinary"
	LabelCardTesting = "card_testing"
	LabelAmountSpike = "amount_spike"
)

// BurstLen is how many payments a card-testing burst makes.
const BurstLen = 8

// Fraud returns a generator profile (stateful: one per run) that mixes
// ordinary payments with fraud a scorer should catch:
//   - card-testing bursts: BurstLen small online payments on one card at
//     different merchants, 1 to 4 seconds apart in event time between
//     ordinary payments, started with probability burstRate per payment;
//   - amount spikes: with probability spikeRate, a payment of 3,000 to
//     9,000 on an ordinary card.
//
// Every payment carries its label.
func Fraud(burstRate, spikeRate float64) func(r *rand.Rand, i int, ts time.Time) map[string]any {
	var burstCard string
	var burstLeft int
	var burstNext time.Time
	return func(r *rand.Rand, i int, ts time.Time) map[string]any {
		if burstLeft == 0 && r.Float64() < burstRate {
			burstCard, burstLeft, burstNext = fmt.Sprintf("card-t%05d", r.IntN(100000)), BurstLen, ts
		}
		// Burst payments come between ordinary ones, 1 to 4 s apart.
		if burstLeft > 0 && !ts.Before(burstNext) {
			ev := Payment(r, i, ts)
			burstNext = ts.Add(time.Duration(1+r.IntN(4)) * time.Second)
			burstLeft--
			cents := 100 + r.Int64N(200)
			ev["card_id"] = burstCard
			ev["merchant_id"] = fmt.Sprintf("m-%04d", (BurstLen*i+burstLeft)%Merchants)
			ev["amount"] = fmt.Sprintf("%d.%02d", cents/100, cents%100)
			ev["channel"] = "ecom"
			ev["card_present"] = false
			ev["label"] = LabelCardTesting
			return ev
		}
		ev := Payment(r, i, ts)
		ev["label"] = LabelOrdinary
		if r.Float64() < spikeRate {
			cents := 300000 + r.Int64N(600000)
			ev["amount"] = fmt.Sprintf("%d.%02d", cents/100, cents%100)
			ev["label"] = LabelAmountSpike
		}
		return ev
	}
}

// Merchant is a row of the merchant reference table the scorer joins.
type Merchant struct {
	ID, Category, Risk string
}

var categories = []string{"grocery", "electronics", "travel", "restaurants", "fuel", "fashion", "gaming", "pharmacy"}

// MerchantTable is the example's merchant reference table: every generated
// merchant with a category and a risk tier (gaming is high risk, travel and
// electronics medium).
func MerchantTable() []Merchant {
	out := make([]Merchant, Merchants)
	for i := range out {
		cat := categories[i%len(categories)]
		risk := "low"
		switch cat {
		case "gaming":
			risk = "high"
		case "travel", "electronics":
			risk = "medium"
		}
		out[i] = Merchant{ID: fmt.Sprintf("m-%04d", i), Category: cat, Risk: risk}
	}
	return out
}
