package lake

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"tideline/spec"
)

func paymentsSpec(t testing.TB) *spec.Spec {
	t.Helper()
	s, err := spec.Load("../examples/payments/tideline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// genPayments returns n raw payment rows with event times spread over span
// from base, sequences from firstSeq, and some nulls in optional fields.
func genPayments(t testing.TB, n int, seed uint64, base time.Time, span time.Duration, firstSeq int64) *Rows {
	t.Helper()
	rows, err := genPaymentRows(paymentsSpec(t).Stream("payments").Contract, n, seed, base, span, firstSeq)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// genPaymentRows is genPayments for any goroutine: it fails with an error.
func genPaymentRows(c *spec.Contract, n int, seed uint64, base time.Time, span time.Duration, firstSeq int64) (*Rows, error) {
	rows := NewRows(RawSchema(c), n)
	r := rand.New(rand.NewPCG(seed, 1))
	countries := []string{"US", "DE", "GB", "BR", "JP", "FR"}
	row := make([]spec.Value, len(c.Fields)+2)
	for i := range n {
		ts := base.Add(time.Duration(r.Int64N(int64(span)))).UnixMicro()
		for j, f := range c.Fields {
			v := spec.Value{}
			switch f.Name {
			case "payment_id":
				v.Str = fmt.Sprintf("p-%d-%d", seed, i)
			case "ts":
				v.Int = ts
			case "card_id":
				v.Str = fmt.Sprintf("card-%04d", r.IntN(5000))
			case "merchant_id":
				v.Str = fmt.Sprintf("m-%03d", r.IntN(200))
			case "country":
				v.Str = countries[r.IntN(len(countries))]
			case "amount":
				v.Int = 1 + r.Int64N(100000)
			case "currency":
				v.Str = f.Enum[r.IntN(len(f.Enum))]
			case "channel":
				v.Str = f.Enum[r.IntN(len(f.Enum))]
			case "card_present":
				if r.IntN(5) == 0 {
					v.Null = true
				} else {
					v.Bool = r.IntN(2) == 0
				}
			case "device": // an optional field added to the contract
				if r.IntN(4) == 0 {
					v.Null = true
				} else {
					v.Str = []string{"ios", "android", "web"}[r.IntN(3)]
				}
			default:
				return nil, fmt.Errorf("genPayments does not know field %s", f.Name)
			}
			row[j] = v
		}
		row[len(c.Fields)] = spec.Value{Int: firstSeq + int64(i)}
		row[len(c.Fields)+1] = spec.Value{Int: ts + r.Int64N(2e6)}
		rows.Append(row...)
	}
	return rows, nil
}
