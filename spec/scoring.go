package spec

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// Scoring is a spec's scoring section: a weighted rule set that a scorer
// (package score) runs over each event of a stream, with features of its
// own, deciding the event into a decisions stream. An event whose rules
// that hold add up to Threshold or more is flagged, else approved.
//
//	scoring:
//	  stream: payments        # what is scored
//	  decisions: decisions    # where decisions go
//	  threshold: 60
//	  rules:
//	    card_testing: {when: "card_payments_1m >= 5", weight: 40}
//
// spec checks the section's shape; what a rule may read besides the
// stream's fields is the scorer's, so the scorer compiles the conditions
// (Compile) and its problems are reported at their places in the file as
// spec's own are.
type Scoring struct {
	Stream    *Stream
	Decisions *Stream
	Threshold int64
	Rules     []*Rule
	// Where the section names its streams, for the scorer's errors.
	StreamAt, DecisionsAt Position
}

// Position is a place in a spec file.
type Position struct {
	File         string
	Line, Column int
}

// Errorf is a positioned spec error at p.
func (p Position) Errorf(hint, format string, args ...any) *Error {
	return &Error{File: p.File, Line: p.Line, Column: p.Column, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// Rule is one weighted condition, as written.
type Rule struct {
	Name   string
	Weight int64
	When   string // the condition's source
	At     Position
}

// Compile parses each rule's condition over cols (the scored stream's
// fields, then what the scorer adds) and returns them in rule order, or an
// ErrorList naming each problem at its rule.
func (sc *Scoring) Compile(cols []*Column) ([]*Expr, error) {
	var errs ErrorList
	out := make([]*Expr, len(sc.Rules))
	for i, r := range sc.Rules {
		e, err := ParseExpr(r.When, cols)
		if err != nil {
			hint := "rules read the stream's fields and the scorer's features (see the README's spec reference)"
			if ee, ok := err.(*ExprError); ok && ee.Hint != "" {
				hint = ee.Hint
			}
			errs = append(errs, r.At.Errorf(hint, "rule %s: %v", r.Name, err))
			continue
		}
		if e.Type != TypeBool {
			errs = append(errs, r.At.Errorf("write a condition that is true or false, like amount >= 1000", "rule %s: when is %s, not a condition", r.Name, e.Type))
			continue
		}
		out[i] = e
	}
	if len(errs) > 0 {
		errs.sort()
		return nil, errs
	}
	return out, nil
}

func (p *parser) at(n *yaml.Node) Position {
	return Position{File: p.file, Line: n.Line, Column: n.Column}
}

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
			if key == "decisions" {
				sc.Decisions, sc.DecisionsAt = st, p.at(v)
			} else {
				sc.Stream, sc.StreamAt = st, p.at(v)
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
				r.When, _ = p.scalar(v, "rule "+name+" when", "write a condition like \"card_payments_1m >= 5\"")
				r.At = p.at(v)
			}
		})
		if r.When != "" {
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
