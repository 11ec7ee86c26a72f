package spec

import (
	"time"
	"unicode/utf8"
	"unsafe"
)

// decodeFast decodes the common case of a valid event in one pass without
// reflection: a flat JSON object with plain strings, plain numbers and
// RFC 3339 timestamps. It reports ok only for an event that is valid and
// that Decode's general path would decode to the same values; anything
// unusual (escapes, exponents, nesting, any validation failure) returns
// false and Decode takes the general path, which also writes the errors.
// FuzzDecodeFast holds the two paths to agreeing.
func (c *Contract) decodeFast(data []byte, receivedAt time.Time, ev *Event, borrow bool) bool {
	d := fastDecoder{b: data, borrow: borrow}
	seen := uint64(0)
	var unknown [8][]byte // undeclared keys so far, to refuse repeats like the general path
	nUnknown := 0
	if len(c.Fields) > 64 { // outside strings only ASCII parses; plainString checks inside
		return false
	}
	d.ws()
	if !d.eat('{') {
		return false
	}
	d.ws()
	if d.eat('}') {
		return c.finishFast(&d, seen, ev)
	}
	for {
		d.ws()
		key, ok := d.plainString()
		if !ok {
			return false
		}
		d.ws()
		if !d.eat(':') {
			return false
		}
		d.ws()
		i, known := c.lookup(key)
		switch {
		case !known:
			if c.RejectUnknown || nUnknown == len(unknown) || !d.skipValue(0) {
				return false
			}
			for _, u := range unknown[:nUnknown] {
				if string(u) == string(key) {
					return false
				}
			}
			unknown[nUnknown] = key
			nUnknown++
		case seen&(1<<i) != 0:
			return false
		default:
			seen |= 1 << i
			if !c.Fields[i].decodeFast(&d, receivedAt, &ev.Values[i]) {
				return false
			}
		}
		d.ws()
		if d.eat('}') {
			return c.finishFast(&d, seen, ev)
		}
		if !d.eat(',') {
			return false
		}
	}
}

// lookup finds a field by name among the few of the same length: cheaper
// than hashing the key for the handful of fields a contract has.
func (c *Contract) lookup(key []byte) (int, bool) {
	if len(key) >= len(c.byLen) {
		return 0, false
	}
	for _, i := range c.byLen[len(key)] {
		if c.Fields[i].Name == string(key) {
			return i, true
		}
	}
	return 0, false
}

func (c *Contract) finishFast(d *fastDecoder, seen uint64, ev *Event) bool {
	d.ws()
	if d.i != len(d.b) {
		return false
	}
	for i, f := range c.Fields {
		if seen&(1<<i) == 0 {
			ev.Values[i].Null = true
		}
		if ev.Values[i].Null && f.Required {
			return false
		}
	}
	return true
}

type fastDecoder struct {
	b      []byte
	i      int
	borrow bool // string values point into b (DecodeInto)
}

func (d *fastDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *fastDecoder) eat(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

func (d *fastDecoder) literal(s string) bool {
	if len(d.b)-d.i >= len(s) && string(d.b[d.i:d.i+len(s)]) == s {
		d.i += len(s)
		return true
	}
	return false
}

// plainByte marks the bytes a plain string holds as they are: not a quote,
// a backslash, a control character or part of a multi-byte character.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainString reads a string with no escapes and no control characters,
// in valid UTF-8.
func (d *fastDecoder) plainString() ([]byte, bool) {
	if !d.eat('"') {
		return nil, false
	}
	start, ascii := d.i, true
	for {
		for d.i < len(d.b) && plainByte[d.b[d.i]] {
			d.i++
		}
		if d.i == len(d.b) {
			return nil, false
		}
		switch c := d.b[d.i]; {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			return s, ascii || utf8.Valid(s)
		case c < 0x80: // a backslash or a control character
			return nil, false
		}
		ascii = false
		d.i++
	}
}

// number reads a JSON integer or decimal without exponent, as digits and
// the count of digits after the point.
func (d *fastDecoder) number() (neg bool, digits []byte, frac int, ok bool) {
	if d.eat('-') {
		neg = true
	}
	start := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	intLen := d.i - start
	if intLen == 0 || (intLen > 1 && d.b[start] == '0') {
		return false, nil, 0, false
	}
	if d.eat('.') {
		fs := d.i
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
		}
		frac = d.i - fs
		if frac == 0 {
			return false, nil, 0, false
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		return false, nil, 0, false
	}
	return neg, d.b[start:d.i], frac, true
}

// skipValue skips a JSON value of an undeclared field, bailing on anything
// it would need a real parser for.
func (d *fastDecoder) skipValue(depth int) bool {
	if d.i >= len(d.b) || depth > 16 {
		return false
	}
	switch c := d.b[d.i]; {
	case c == '"':
		_, ok := d.plainString()
		return ok
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, _, _, ok := d.number()
		return ok
	case c == '[' || c == '{':
		closer := byte(']')
		if c == '{' {
			closer = '}'
		}
		d.i++
		d.ws()
		if d.eat(closer) {
			return true
		}
		for {
			d.ws()
			if c == '{' {
				if _, ok := d.plainString(); !ok {
					return false
				}
				d.ws()
				if !d.eat(':') {
					return false
				}
				d.ws()
			}
			if !d.skipValue(depth + 1) {
				return false
			}
			d.ws()
			if d.eat(closer) {
				return true
			}
			if !d.eat(',') {
				return false
			}
		}
	}
	return false
}

func (f *Field) decodeFast(d *fastDecoder, receivedAt time.Time, v *Value) bool {
	if d.literal("null") {
		v.Null = true
		return !f.Required
	}
	switch f.Type {
	case TypeString:
		s, ok := d.plainString()
		if !ok || (f.MaxLength > 0 && len(s) > f.MaxLength) {
			return false
		}
		if len(f.Enum) > 0 {
			for _, e := range f.Enum {
				if e == string(s) {
					v.Str = e // shares the spec's string: no allocation
					return true
				}
			}
			return false
		}
		if d.borrow && len(s) > 0 {
			v.Str = unsafe.String(&s[0], len(s))
		} else {
			v.Str = string(s)
		}
		return true
	case TypeBool:
		if d.literal("true") {
			v.Bool = true
			return true
		}
		return d.literal("false")
	case TypeInt, TypeDecimal:
		quoted := f.Type == TypeDecimal && d.eat('"')
		neg, digits, frac, ok := d.number()
		sig := len(digits)
		if frac > 0 {
			sig-- // the point
		}
		if !ok || (quoted && !d.eat('"')) || frac > f.Scale || sig+f.Scale-frac > 18 {
			return false
		}
		var n int64
		for _, c := range digits {
			if c != '.' {
				n = n*10 + int64(c-'0')
			}
		}
		n *= pow10(f.Scale - frac)
		if neg {
			n = -n
		}
		if (f.Min != nil && n < *f.Min) || (f.Max != nil && n > *f.Max) {
			return false
		}
		v.Int = n
		return true
	case TypeTimestamp:
		s, ok := d.plainString()
		if !ok {
			return false
		}
		t, ok := parseRFC3339(s)
		if !ok {
			return false
		}
		us, ok := timeMicros(t)
		if !ok || (f.Min != nil && us < *f.Min) || (f.Max != nil && us > *f.Max) {
			return false
		}
		if f.MaxFuture > 0 && !receivedAt.IsZero() && t.After(receivedAt.Add(f.MaxFuture)) {
			return false
		}
		v.Int = us
		return true
	}
	return false
}

// parseRFC3339 parses YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM) strictly,
// refusing anything time.Parse(time.RFC3339Nano) might treat differently.
func parseRFC3339(s []byte) (time.Time, bool) {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	num := func(a, b int) (int, bool) {
		n := 0
		for _, c := range s[a:b] {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(5, 7)
	day, ok3 := num(8, 10)
	hour, ok4 := num(11, 13)
	minute, ok5 := num(14, 16)
	sec, ok6 := num(17, 19)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	i, nsec := 19, 0
	if s[i] == '.' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		digits := j - i - 1
		if digits == 0 || digits > 9 {
			return time.Time{}, false
		}
		nsec, _ = num(i+1, j)
		for range 9 - digits {
			nsec *= 10
		}
		i = j
	}
	offset := 0
	switch {
	case len(s) == i+1 && s[i] == 'Z':
	case len(s) == i+6 && (s[i] == '+' || s[i] == '-') && s[i+3] == ':':
		oh, ok1 := num(i+1, i+3)
		om, ok2 := num(i+4, i+6)
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		offset = (oh*60 + om) * 60
		if s[i] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	if t.Day() != day { // Feb 30th and the like
		return time.Time{}, false
	}
	return t.Add(-time.Duration(offset) * time.Second), true
}
