package spec

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// Scoring configures the payments example's fraud scorer: a weighted rule
// set over a payment and features of its card and merchant. A payment whose
// rules that hold add up to Threshold or more is flagged, else approved.
//
//	scoring:
//	  stream: payments        # what is scored
//	  decisions: decisions    # where decisions go
//	  threshold: 60
//	  rules:
//	    card_testing: {when: "card_payments_1m >= 5", weight: 40}
//
// Rules read the scored stream's fields and the Features. A feature the
// scorer does not have (the lake unreachable) is null, so a rule reading it
// does not hold, as in SQL: the rules that remain are the speed-only ones.
type Scoring struct {
	Stream    *Stream
	Decisions *Stream
	Threshold int64
	Rules     []*Rule
	// Columns are what rules read: the scored stream's fields, then the
	// Features in order.
	Columns []*Column
}

// Rule is one weighted condition.
type Rule struct {
	Name   string
	Weight int64
	When   *Expr
}

// Feature is something the scorer knows about a payment's card or merchant.
type Feature struct {
	Name   string
	Type   Type
	Source string // speed (the scorer's own recent state), batch (the lake's views) or reference (the merchant table)
	Doc    string
}

// Features are the scorer's features, in the order of Scoring.Columns after
// the stream's fields. Amounts are in the stream's amount field's scale.
var Features = []Feature{
	{"card_payments_1m", TypeInt, "speed", "the card's payments in the minute up to this one, this one included"},
	{"card_amount_1m", TypeDecimal, "speed", "their amount"},
	{"card_payments_5m", TypeInt, "speed", "the card's payments in the 5 minutes up to this one"},
	{"card_amount_5m", TypeDecimal, "speed", "their amount"},
	{"card_merchants_10m", TypeInt, "speed", "distinct merchants the card paid in the last 10 minutes"},
	{"card_countries_10m", TypeInt, "speed", "distinct countries the card paid in in the last 10 minutes"},
	{"card_payments_30d", TypeInt, "batch", "the card's payments in the last 30 days below the tideline"},
	{"card_avg_amount_30d", TypeDecimal, "batch", "their average amount"},
	{"card_max_amount_30d", TypeDecimal, "batch", "their largest amount"},
	{"usual_country", TypeBool, "batch", "whether the card paid in this country in the last 30 days; null without history"},
	{"merchant_category", TypeString, "reference", "the merchant's category, from the lake's merchant table"},
	{"merchant_risk", TypeString, "reference", "the merchant's risk tier: low, medium or high"},
}

// The fields a scored stream must have, with their types.
var scoredFields = map[string]Type{"card_id": TypeString, "merchant_id": TypeString, "country": TypeString, "amount": TypeDecimal}

// The fields a decisions stream must have.
var decisionFields = map[string]Type{"payment_id": TypeString, "ts": TypeTimestamp, "score": TypeInt, "decision": TypeString, "reasons": TypeString, "fallback": TypeBool}

func (p *parser) scoring(s *Spec, n *yaml.Node) *Scoring {
	sc := &Scoring{}
	var rules *yaml.Node
	p.mapping(n, "scoring", []string{"stream", "decisions", "threshold", "rules"}, []string{"stream", "decisions", "threshold", "rules"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "stream", "decisions":
			name, ok := p.scalar(v, "scoring "+key, "name a stream of the spec")
			if !ok {
				return
			}
			st := s.Stream(name)
			if st == nil {
				p.add(v, suggest(name, streamNames(s), "streams are"), "scoring %s: no stream %q", key, name)
				return
			}
			want := scoredFields
			if key == "decisions" {
				sc.Decisions, want = st, decisionFields
			} else {
				sc.Stream = st
			}
			for f, t := range want {
				i, ok := st.Contract.index[f]
				if !ok || st.Contract.Fields[i].Type != t {
					p.add(v, fmt.Sprintf("give stream %s a field %s of type %s", name, f, t), "scoring %s: stream %s has no %s field %s", key, name, t, f)
				}
			}
		case "threshold":
			sc.Threshold, _ = p.integer(v, "scoring threshold", 1, 1_000_000)
		case "rules":
			rules = v
		}
	})
	if sc.Stream == nil || sc.Decisions == nil || rules == nil || len(p.errs) > 0 {
		return nil
	}
	c := sc.Stream.Contract
	for i, f := range c.Fields {
		sc.Columns = append(sc.Columns, &Column{Name: f.Name, Type: f.Type, Scale: f.Scale, Index: i})
	}
	amountScale := c.Fields[c.index["amount"]].Scale
	for _, f := range Features {
		col := &Column{Name: f.Name, Type: f.Type, Index: len(sc.Columns)}
		if f.Type == TypeDecimal {
			col.Scale = amountScale
		}
		sc.Columns = append(sc.Columns, col)
	}
	p.mapping(rules, "scoring rules", nil, nil, func(name string, k, v *yaml.Node) {
		if !p.name(k, "rule name") {
			return
		}
		r := &Rule{Name: name}
		p.mapping(v, "rule "+name, []string{"when", "weight"}, []string{"when", "weight"}, func(key string, k, v *yaml.Node) {
			switch key {
			case "weight":
				r.Weight, _ = p.integer(v, "rule "+name+" weight", -1_000_000, 1_000_000)
			case "when":
				src, ok := p.scalar(v, "rule "+name+" when", "write a condition like \"card_payments_1m >= 5\"")
				if !ok {
					return
				}
				e, err := ParseExpr(src, sc.Columns)
				if err != nil {
					hint := "rules read the stream's fields and the scorer's features (see the README's spec reference)"
					if ee, ok := err.(*ExprError); ok && ee.Hint != "" {
						hint = ee.Hint
					}
					p.add(v, hint, "rule %s: %v", name, err)
					return
				}
				if e.Type != TypeBool {
					p.add(v, "write a condition that is true or false, like amount >= 1000", "rule %s: when is %s, not a condition", name, e.Type)
					return
				}
				r.When = e
			}
		})
		if r.When != nil {
			sc.Rules = append(sc.Rules, r)
		}
	})
	return sc
}

func streamNames(s *Spec) []string {
	var out []string
	for _, st := range s.Streams {
		out = append(out, st.Name)
	}
	return out
}

// Row returns an empty row for the scoring columns.
func (sc *Scoring) Row() Row { return make(Row, len(sc.Columns)) }

// FeatureIndex is the row position of the named feature, or -1.
func (sc *Scoring) FeatureIndex(name string) int {
	for i, f := range Features {
		if f.Name == name {
			return len(sc.Stream.Contract.Fields) + i
		}
	}
	return -1
}
