package score

import (
	"fmt"
	"maps"
	"slices"

	"tideline/spec"
)

// Feature is something the scorer knows about a payment's card or merchant,
// for the spec's rules to read beside the payment's fields.
type Feature struct {
	Name   string
	Type   spec.Type
	Source string // speed (the scorer's own recent state), batch (the lake's views) or reference (the merchant table)
	Doc    string
}

// Features are the scorer's features, in the order of a rule's row after
// the stream's fields. Amounts are in the stream's amount field's scale.
var Features = []Feature{
	{"card_payments_1m", spec.TypeInt, "speed", "the card's payments in the minute up to this one, this one included"},
	{"card_amount_1m", spec.TypeDecimal, "speed", "their amount"},
	{"card_payments_5m", spec.TypeInt, "speed", "the card's payments in the 5 minutes up to this one"},
	{"card_amount_5m", spec.TypeDecimal, "speed", "their amount"},
	{"card_merchants_10m", spec.TypeInt, "speed", "distinct merchants the card paid in the last 10 minutes"},
	{"card_countries_10m", spec.TypeInt, "speed", "distinct countries the card paid in in the last 10 minutes"},
	{"card_payments_30d", spec.TypeInt, "batch", "the card's payments in the last 30 days below the tideline"},
	{"card_avg_amount_30d", spec.TypeDecimal, "batch", "their average amount"},
	{"card_max_amount_30d", spec.TypeDecimal, "batch", "their largest amount"},
	{"usual_country", spec.TypeBool, "batch", "whether the card paid in this country in the last 30 days; null without history"},
	{"card_session_merchants_30d", spec.TypeInt, "batch", "the most merchants the card paid in one session in the last 30 days (view " + SessionView + "); null without one"},
	{"merchant_category", spec.TypeString, "reference", "the merchant's category, from the lake's merchant table"},
	{"merchant_risk", spec.TypeString, "reference", "the merchant's risk tier: low, medium or high"},
}

// The positions of the features in Features.
const (
	fPayments1m = iota
	fAmount1m
	fPayments5m
	fAmount5m
	fMerchants10m
	fCountries10m
	fPayments30d
	fAvgAmount30d
	fMaxAmount30d
	fUsualCountry
	fSessionMerchants30d
	fMerchantCategory
	fMerchantRisk
)

// The fields a scored stream must have, with their types.
var scoredFields = map[string]spec.Type{"card_id": spec.TypeString, "merchant_id": spec.TypeString, "country": spec.TypeString, "amount": spec.TypeDecimal}

// The fields a decisions stream must have.
var decisionFields = map[string]spec.Type{"payment_id": spec.TypeString, "ts": spec.TypeTimestamp, "score": spec.TypeInt, "decision": spec.TypeString, "reasons": spec.TypeString, "fallback": spec.TypeBool}

// rules is a scoring section compiled for this scorer.
type rules struct {
	sc   *spec.Scoring
	cols []*spec.Column // the stream's fields, then Features
	when []*spec.Expr   // of sc.Rules, in order
}

// Check compiles the spec's scoring section as the scorer runs it: its
// streams have the fields the scorer reads and writes, and its rules'
// conditions read fields and features it has. Each problem is a spec.Error
// at its place in the file.
func Check(sc *spec.Scoring) error {
	_, err := compile(sc)
	return err
}

func compile(sc *spec.Scoring) (*rules, error) {
	var errs spec.ErrorList
	for _, s := range []struct {
		st   *spec.Stream
		at   spec.Position
		key  string
		want map[string]spec.Type
	}{{sc.Stream, sc.StreamAt, "stream", scoredFields}, {sc.Decisions, sc.DecisionsAt, "decisions", decisionFields}} {
		for _, f := range slices.Sorted(maps.Keys(s.want)) {
			t := s.want[f]
			if i := s.st.Contract.Field(f); i < 0 || s.st.Contract.Fields[i].Type != t {
				errs = append(errs, s.at.Errorf(fmt.Sprintf("give stream %s a field %s of type %s", s.st.Name, f, t), "scoring %s: stream %s has no %s field %s", s.key, s.st.Name, t, f))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	c := sc.Stream.Contract
	r := &rules{sc: sc}
	for i, f := range c.Fields {
		r.cols = append(r.cols, &spec.Column{Name: f.Name, Type: f.Type, Scale: f.Scale, Index: i})
	}
	amountScale := c.Fields[c.Field("amount")].Scale
	for _, f := range Features {
		col := &spec.Column{Name: f.Name, Type: f.Type, Index: len(r.cols)}
		if f.Type == spec.TypeDecimal {
			col.Scale = amountScale
		}
		r.cols = append(r.cols, col)
	}
	var err error
	if r.when, err = sc.Compile(r.cols); err != nil {
		return nil, err
	}
	return r, nil
}
