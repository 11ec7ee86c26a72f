package payments

import (
	"fmt"
	"math/rand/v2"
	"time"
)

var (
	countries  = []string{"US", "US", "US", "GB", "DE", "FR", "BR", "JP"}
	currencyOf = map[string]string{"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "BR": "BRL", "JP": "JPY"}
	channels   = []string{"pos", "pos", "ecom", "ecom", "moto"}
)

// Cards and Merchants are the sizes of the generated populations.
const (
	Cards     = 5000
	Merchants = 200
)

// Payment makes payment number i at event time ts: a card from a fixed
// population, usually at home, at a merchant, for a skewed amount.
func Payment(r *rand.Rand, i int, ts time.Time) map[string]any {
	card := r.IntN(Cards)
	home := countries[card%len(countries)]
	country := home
	if r.IntN(20) == 0 {
		country = countries[r.IntN(len(countries))]
	}
	// Mostly small amounts, with a long tail.
	cents := 100 + r.Int64N(5000)
	if r.IntN(10) == 0 {
		cents += r.Int64N(200000)
	}
	ev := map[string]any{
		"payment_id":  fmt.Sprintf("pay-%016x", r.Uint64()),
		"ts":          ts.Format(time.RFC3339Nano),
		"card_id":     fmt.Sprintf("card-%05d", card),
		"merchant_id": fmt.Sprintf("m-%04d", r.IntN(Merchants)),
		"country":     country,
		"amount":      fmt.Sprintf("%d.%02d", cents/100, cents%100),
		"currency":    currencyOf[country],
		"channel":     channels[r.IntN(len(channels))],
	}
	if r.IntN(4) != 0 {
		ev["card_present"] = ev["channel"] == "pos"
	}
	return ev
}
