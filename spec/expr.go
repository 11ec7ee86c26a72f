package spec

import (
	"fmt"
	"strconv"
	"strings"
)

// Expr is a type-checked expression of the spec's expression language: a
// view's filter or a derived field. The language has literals (int, decimal,
// 'string', true, false), field names, arithmetic (+ - * / %), comparisons
// (= != < <= > >=), and/or/not, [not] in (literal, ...), and is [not] null.
//
// Semantics are SQL's, so Eval and SQL agree: a null operand makes a
// comparison or arithmetic null, and/or/not use three-valued logic, and a
// filter keeps only rows where it is true. Integer division and modulo
// truncate toward zero, and division by zero is null. Decimal operands are
// int64 minor units; operands of different scales are rescaled to the larger
// one, and a product's scale is the sum of its operands' scales.
type Expr struct {
	Source string
	Type   Type
	Scale  int // for TypeDecimal
	root   node
}

// Column is something an expression can read: a contract field, or a derived
// field defined before it. Index is its position in a Row.
type Column struct {
	Name  string
	Type  Type
	Scale int
	Index int
	// Derived is the expression of a derived field, nil for a contract field.
	Derived *Expr
}

// Row is an event's values followed by the view's derived values.
type Row []Value

type node interface {
	eval(r Row) Value
	sql(b *strings.Builder)
	typ() (Type, int)
}

// ExprError is a problem in an expression, at a byte offset into its source.
type ExprError struct {
	Offset  int
	Msg     string
	Hint    string
	Unknown string // the unknown field named, if that is the problem
}

func (e *ExprError) Error() string { return e.Msg }

// ParseExpr parses and type-checks src against the columns it may read.
func ParseExpr(src string, cols []*Column) (*Expr, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &exprParser{toks: toks, cols: cols}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, &ExprError{Offset: t.pos, Msg: fmt.Sprintf("unexpected %q", t.text), Hint: "join conditions with and/or, and check the parentheses"}
	}
	typ, scale := n.typ()
	return &Expr{Source: src, Type: typ, Scale: scale, root: n}, nil
}

// Eval evaluates the expression over a row.
func (e *Expr) Eval(r Row) Value { return e.root.eval(r) }

// SQL renders the expression as DuckDB SQL over columns named like the fields.
func (e *Expr) SQL() string {
	var b strings.Builder
	e.root.sql(&b)
	return b.String()
}

// ---- lexer ----

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tInt
	tDecimal
	tString
	tOp
	tKeyword
)

type token struct {
	kind tokKind
	text string
	pos  int
}

var keywords = map[string]bool{"and": true, "or": true, "not": true, "in": true, "is": true, "null": true, "true": true, "false": true}

func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case isIdentStart(c):
			j := i
			for j < len(src) && (isIdentStart(src[j]) || isDigit(src[j])) {
				j++
			}
			word := src[i:j]
			if keywords[strings.ToLower(word)] {
				toks = append(toks, token{tKeyword, strings.ToLower(word), i})
			} else {
				toks = append(toks, token{tIdent, word, i})
			}
			i = j
		case isDigit(c):
			j := i
			for j < len(src) && isDigit(src[j]) {
				j++
			}
			kind := tInt
			if j < len(src) && src[j] == '.' {
				kind = tDecimal
				j++
				k := j
				for j < len(src) && isDigit(src[j]) {
					j++
				}
				if j == k {
					return nil, &ExprError{Offset: i, Msg: fmt.Sprintf("number %q has no digits after the point", src[i:j]), Hint: "write 1.0 or 1"}
				}
			}
			toks = append(toks, token{kind, src[i:j], i})
			i = j
		case c == '\'':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(src) {
					return nil, &ExprError{Offset: i, Msg: "unterminated string", Hint: "close it with ' (write '' for a quote inside)"}
				}
				if src[j] == '\'' {
					if j+1 < len(src) && src[j+1] == '\'' {
						b.WriteByte('\'')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(src[j])
				j++
			}
			toks = append(toks, token{tString, b.String(), i})
			i = j + 1
		case c == '"':
			return nil, &ExprError{Offset: i, Msg: "double quotes are not strings here", Hint: "write strings in single quotes, like 'US'"}
		default:
			two := ""
			if i+1 < len(src) {
				two = src[i : i+2]
			}
			switch two {
			case "==", "!=", "<=", ">=", "<>":
				if two == "==" {
					two = "="
				} else if two == "<>" {
					two = "!="
				}
				toks = append(toks, token{tOp, two, i})
				i += 2
				continue
			}
			if strings.IndexByte("=<>+-*/%(),", c) >= 0 {
				toks = append(toks, token{tOp, string(c), i})
				i++
				continue
			}
			return nil, &ExprError{Offset: i, Msg: fmt.Sprintf("unexpected character %q", c), Hint: "use and/or/not, comparisons, in (...), and + - * / %"}
		}
	}
	return append(toks, token{tEOF, "end of expression", len(src)}), nil
}

func isIdentStart(c byte) bool { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }

// ---- parser and type checker ----

type exprParser struct {
	toks []token
	i    int
	cols []*Column
}

func (p *exprParser) peek() token { return p.toks[p.i] }
func (p *exprParser) next() token { t := p.toks[p.i]; p.i++; return t }

func (p *exprParser) accept(kind tokKind, text string) bool {
	if t := p.peek(); t.kind == kind && t.text == text {
		p.i++
		return true
	}
	return false
}

func (p *exprParser) fail(t token, hint, format string, args ...any) error {
	return &ExprError{Offset: t.pos, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

func (p *exprParser) or() (node, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if !p.accept(tKeyword, "or") {
			return l, nil
		}
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		if err := p.wantBool(t, "or", l, r); err != nil {
			return nil, err
		}
		l = &logic{and: false, l: l, r: r}
	}
}

func (p *exprParser) and() (node, error) {
	l, err := p.not()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if !p.accept(tKeyword, "and") {
			return l, nil
		}
		r, err := p.not()
		if err != nil {
			return nil, err
		}
		if err := p.wantBool(t, "and", l, r); err != nil {
			return nil, err
		}
		l = &logic{and: true, l: l, r: r}
	}
}

func (p *exprParser) wantBool(t token, op string, ns ...node) error {
	for _, n := range ns {
		if typ, _ := n.typ(); typ != TypeBool {
			return p.fail(t, "compare it first, for example x > 0", "%s needs bool operands, got %s", op, typ)
		}
	}
	return nil
}

func (p *exprParser) not() (node, error) {
	t := p.peek()
	if p.accept(tKeyword, "not") {
		x, err := p.not()
		if err != nil {
			return nil, err
		}
		if err := p.wantBool(t, "not", x); err != nil {
			return nil, err
		}
		return &notNode{x}, nil
	}
	return p.cmp()
}

func (p *exprParser) cmp() (node, error) {
	l, err := p.add()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	switch {
	case t.kind == tOp && isCmpOp(t.text):
		p.next()
		r, err := p.add()
		if err != nil {
			return nil, err
		}
		lt, ls := l.typ()
		rt, rs := r.typ()
		switch {
		case lt.Numeric() && rt.Numeric():
			s := max(ls, rs)
			return &compare{op: t.text, l: rescale(l, ls, s), r: rescale(r, rs, s)}, nil
		case lt == rt:
			return &compare{op: t.text, l: l, r: r}, nil
		}
		return nil, p.fail(t, "compare values of the same type", "cannot compare %s with %s", lt, rt)
	case t.kind == tKeyword && (t.text == "in" || t.text == "not"):
		neg := p.accept(tKeyword, "not")
		if !p.accept(tKeyword, "in") {
			return nil, p.fail(p.peek(), "write x not in ('a', 'b')", "expected in after not, got %q", p.peek().text)
		}
		return p.inList(t, l, neg)
	case t.kind == tKeyword && t.text == "is":
		p.next()
		neg := p.accept(tKeyword, "not")
		if !p.accept(tKeyword, "null") {
			return nil, p.fail(p.peek(), "write x is null or x is not null", "expected null after is, got %q", p.peek().text)
		}
		return &isNull{x: l, neg: neg}, nil
	}
	return l, nil
}

func isCmpOp(s string) bool {
	switch s {
	case "=", "!=", "<", "<=", ">", ">=":
		return true
	}
	return false
}

func (p *exprParser) inList(t token, x node, neg bool) (node, error) {
	if !p.accept(tOp, "(") {
		return nil, p.fail(p.peek(), "write x in ('a', 'b')", "expected ( after in")
	}
	xt, xs := x.typ()
	in := &inNode{x: x, neg: neg}
	for {
		lt := p.next()
		var v Value
		switch {
		case xt == TypeString && lt.kind == tString:
			v.Str = lt.text
		case xt.Numeric() && (lt.kind == tInt || lt.kind == tDecimal || (lt.kind == tOp && lt.text == "-")):
			neg := lt.text == "-"
			if neg {
				lt = p.next()
			}
			n, s, err := parseNumLit(lt)
			if err != nil {
				return nil, err
			}
			if s > xs {
				return nil, p.fail(lt, "drop the extra digits", "%s has more decimal places than %s", lt.text, describeNode(x))
			}
			v.Int = n * pow10(xs-s)
			if neg {
				v.Int = -v.Int
			}
		case xt == TypeBool && lt.kind == tKeyword && (lt.text == "true" || lt.text == "false"):
			v.Bool = lt.text == "true"
		default:
			return nil, p.fail(lt, "list literals of the same type as the left side", "in-list item %q does not match %s", lt.text, xt)
		}
		in.list = append(in.list, v)
		if p.accept(tOp, ")") {
			return in, nil
		}
		if !p.accept(tOp, ",") {
			return nil, p.fail(p.peek(), "separate items with commas and close with )", "expected , or ) in the in-list, got %q", p.peek().text)
		}
	}
}

func describeNode(n node) string {
	if c, ok := n.(*colRef); ok {
		return "field " + c.col.Name
	}
	return "the left side"
}

func (p *exprParser) add() (node, error) {
	l, err := p.mul()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if !(t.kind == tOp && (t.text == "+" || t.text == "-")) {
			return l, nil
		}
		p.next()
		r, err := p.mul()
		if err != nil {
			return nil, err
		}
		if l, err = p.arith(t, l, r); err != nil {
			return nil, err
		}
	}
}

func (p *exprParser) mul() (node, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if !(t.kind == tOp && (t.text == "*" || t.text == "/" || t.text == "%")) {
			return l, nil
		}
		p.next()
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		if l, err = p.arith(t, l, r); err != nil {
			return nil, err
		}
	}
}

func (p *exprParser) arith(t token, l, r node) (node, error) {
	lt, ls := l.typ()
	rt, rs := r.typ()
	if !lt.Numeric() || !rt.Numeric() {
		return nil, p.fail(t, "arithmetic works on int and decimal fields", "cannot apply %s to %s and %s", t.text, lt, rt)
	}
	switch t.text {
	case "+", "-":
		s := max(ls, rs)
		return &arith{op: t.text, l: rescale(l, ls, s), r: rescale(r, rs, s), scale: s}, nil
	case "*":
		if ls+rs > 18 {
			return nil, p.fail(t, "use fewer decimal places", "the product has %d decimal places, at most 18 fit in int64", ls+rs)
		}
		return &arith{op: "*", l: l, r: r, scale: ls + rs}, nil
	default:
		if ls != 0 || rs != 0 {
			return nil, p.fail(t, "divide ints, or compare scaled values instead", "%s is only defined for ints, not decimals", t.text)
		}
		return &arith{op: t.text, l: l, r: r}, nil
	}
}

func (p *exprParser) unary() (node, error) {
	t := p.peek()
	if p.accept(tOp, "-") {
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		xt, xs := x.typ()
		if !xt.Numeric() {
			return nil, p.fail(t, "negate an int or decimal", "cannot negate %s", xt)
		}
		return &arith{op: "-", l: &lit{v: Value{Int: 0}, t: xt, scale: xs}, r: x, scale: xs}, nil
	}
	return p.primary()
}

func (p *exprParser) primary() (node, error) {
	t := p.next()
	switch t.kind {
	case tInt, tDecimal:
		n, s, err := parseNumLit(t)
		if err != nil {
			return nil, err
		}
		typ := TypeInt
		if t.kind == tDecimal {
			typ = TypeDecimal
		}
		return &lit{v: Value{Int: n}, t: typ, scale: s}, nil
	case tString:
		return &lit{v: Value{Str: t.text}, t: TypeString}, nil
	case tKeyword:
		switch t.text {
		case "true", "false":
			return &lit{v: Value{Bool: t.text == "true"}, t: TypeBool}, nil
		case "null":
			return nil, p.fail(t, "write x is null", "a bare null is not allowed")
		}
	case tIdent:
		for _, c := range p.cols {
			if c.Name == t.text {
				return &colRef{col: c}, nil
			}
		}
		names := make([]string, len(p.cols))
		for i, c := range p.cols {
			names[i] = c.Name
		}
		err := p.fail(t, suggest(t.text, names, "fields are"), "unknown field %q", t.text).(*ExprError)
		err.Unknown = t.text
		return nil, err
	case tOp:
		if t.text == "(" {
			n, err := p.or()
			if err != nil {
				return nil, err
			}
			if !p.accept(tOp, ")") {
				return nil, p.fail(p.peek(), "close it with )", "missing ) for the ( at offset %d", t.pos)
			}
			return n, nil
		}
	}
	return nil, p.fail(t, "expected a field, a literal or (", "unexpected %q", t.text)
}

func parseNumLit(t token) (int64, int, error) {
	if t.kind != tInt && t.kind != tDecimal {
		return 0, 0, &ExprError{Offset: t.pos, Msg: fmt.Sprintf("expected a number, got %q", t.text)}
	}
	_, frac, _ := strings.Cut(t.text, ".")
	n, err := ParseDecimal(t.text, len(frac))
	if err != nil || len(frac) > 18 {
		return 0, 0, &ExprError{Offset: t.pos, Msg: fmt.Sprintf("number %s does not fit in int64", t.text), Hint: "use a smaller number"}
	}
	return n, len(frac), nil
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

func rescale(n node, from, to int) node {
	if from == to {
		return n
	}
	t, _ := n.typ()
	return &arith{op: "*", l: n, r: &lit{v: Value{Int: pow10(to - from)}, t: TypeInt}, scale: to, forceType: t}
}

// ---- nodes ----

type lit struct {
	v     Value
	t     Type
	scale int
}

func (n *lit) eval(Row) Value         { return n.v }
func (n *lit) typ() (Type, int)       { return n.t, n.scale }
func (n *lit) sql(b *strings.Builder) { b.WriteString(sqlLiteral(n.v, n.t)) }

func sqlLiteral(v Value, t Type) string {
	switch t {
	case TypeString:
		return QuoteString(v.Str)
	case TypeBool:
		return strconv.FormatBool(v.Bool)
	}
	// BIGINT, so literal-only arithmetic has the same width as Go's int64.
	return "CAST(" + strconv.FormatInt(v.Int, 10) + " AS BIGINT)"
}

type colRef struct{ col *Column }

func (n *colRef) eval(r Row) Value { return r[n.col.Index] }
func (n *colRef) typ() (Type, int) { return n.col.Type, n.col.Scale }
func (n *colRef) sql(b *strings.Builder) {
	if n.col.Derived != nil {
		b.WriteByte('(')
		n.col.Derived.root.sql(b)
		b.WriteByte(')')
		return
	}
	b.WriteString(QuoteIdent(n.col.Name))
}

// QuoteString quotes a string literal for DuckDB SQL.
func QuoteString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// QuoteIdent quotes a name for DuckDB SQL.
func QuoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

type arith struct {
	op        string
	l, r      node
	scale     int
	forceType Type
}

func (n *arith) typ() (Type, int) {
	if n.forceType != 0 {
		return n.forceType, n.scale
	}
	lt, _ := n.l.typ()
	rt, _ := n.r.typ()
	if lt == TypeDecimal || rt == TypeDecimal {
		return TypeDecimal, n.scale
	}
	return TypeInt, 0
}

func (n *arith) eval(r Row) Value {
	l, rv := n.l.eval(r), n.r.eval(r)
	if l.Null || rv.Null {
		return Value{Null: true}
	}
	a, b := l.Int, rv.Int
	switch n.op {
	case "+":
		return Value{Int: a + b}
	case "-":
		return Value{Int: a - b}
	case "*":
		return Value{Int: a * b}
	case "/":
		if b == 0 {
			return Value{Null: true}
		}
		return Value{Int: a / b}
	default:
		if b == 0 {
			return Value{Null: true}
		}
		return Value{Int: a % b}
	}
}

func (n *arith) sql(b *strings.Builder) {
	b.WriteByte('(')
	n.l.sql(b)
	switch n.op {
	case "/":
		// DuckDB's integer division truncates toward zero and gives null on
		// zero, like Eval. A bare / would produce a double.
		b.WriteString(" // ")
	case "%":
		b.WriteString(" % ")
	default:
		b.WriteString(" " + n.op + " ")
	}
	if n.op == "/" || n.op == "%" {
		b.WriteString("NULLIF(")
		n.r.sql(b)
		b.WriteString(", 0))")
		return
	}
	n.r.sql(b)
	b.WriteByte(')')
}

type compare struct {
	op   string
	l, r node
}

func (n *compare) typ() (Type, int) { return TypeBool, 0 }

func (n *compare) eval(r Row) Value {
	l, rv := n.l.eval(r), n.r.eval(r)
	if l.Null || rv.Null {
		return Value{Null: true}
	}
	t, _ := n.l.typ()
	var c int
	switch t {
	case TypeString:
		c = strings.Compare(l.Str, rv.Str)
	case TypeBool:
		c = boolInt(l.Bool) - boolInt(rv.Bool)
	default:
		c = cmpInt(l.Int, rv.Int)
	}
	var ok bool
	switch n.op {
	case "=":
		ok = c == 0
	case "!=":
		ok = c != 0
	case "<":
		ok = c < 0
	case "<=":
		ok = c <= 0
	case ">":
		ok = c > 0
	default:
		ok = c >= 0
	}
	return Value{Bool: ok}
}

func (n *compare) sql(b *strings.Builder) {
	b.WriteByte('(')
	n.l.sql(b)
	b.WriteString(" " + n.op + " ")
	n.r.sql(b)
	b.WriteByte(')')
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type logic struct {
	and  bool
	l, r node
}

func (n *logic) typ() (Type, int) { return TypeBool, 0 }

func (n *logic) eval(r Row) Value {
	l, rv := n.l.eval(r), n.r.eval(r)
	if n.and {
		if (!l.Null && !l.Bool) || (!rv.Null && !rv.Bool) {
			return Value{Bool: false}
		}
		if l.Null || rv.Null {
			return Value{Null: true}
		}
		return Value{Bool: true}
	}
	if (!l.Null && l.Bool) || (!rv.Null && rv.Bool) {
		return Value{Bool: true}
	}
	if l.Null || rv.Null {
		return Value{Null: true}
	}
	return Value{Bool: false}
}

func (n *logic) sql(b *strings.Builder) {
	b.WriteByte('(')
	n.l.sql(b)
	if n.and {
		b.WriteString(" AND ")
	} else {
		b.WriteString(" OR ")
	}
	n.r.sql(b)
	b.WriteByte(')')
}

type notNode struct{ x node }

func (n *notNode) typ() (Type, int) { return TypeBool, 0 }
func (n *notNode) eval(r Row) Value {
	v := n.x.eval(r)
	if v.Null {
		return v
	}
	return Value{Bool: !v.Bool}
}
func (n *notNode) sql(b *strings.Builder) {
	b.WriteString("(NOT ")
	n.x.sql(b)
	b.WriteByte(')')
}

type inNode struct {
	x    node
	list []Value
	neg  bool
}

func (n *inNode) typ() (Type, int) { return TypeBool, 0 }

func (n *inNode) eval(r Row) Value {
	v := n.x.eval(r)
	if v.Null {
		return v
	}
	found := false
	for _, l := range n.list {
		if l == v {
			found = true
			break
		}
	}
	return Value{Bool: found != n.neg}
}

func (n *inNode) sql(b *strings.Builder) {
	t, _ := n.x.typ()
	b.WriteByte('(')
	n.x.sql(b)
	if n.neg {
		b.WriteString(" NOT")
	}
	b.WriteString(" IN (")
	for i, v := range n.list {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(sqlLiteral(v, t))
	}
	b.WriteString("))")
}

type isNull struct {
	x   node
	neg bool
}

func (n *isNull) typ() (Type, int) { return TypeBool, 0 }
func (n *isNull) eval(r Row) Value { return Value{Bool: n.x.eval(r).Null != n.neg} }
func (n *isNull) sql(b *strings.Builder) {
	b.WriteByte('(')
	n.x.sql(b)
	if n.neg {
		b.WriteString(" IS NOT NULL)")
	} else {
		b.WriteString(" IS NULL)")
	}
}
