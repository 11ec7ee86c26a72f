package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Type is the type of a contract field or an expression.
type Type int

// The field types of a data contract.
const (
	TypeString Type = iota + 1
	TypeInt
	TypeDecimal // int64 minor units with Field.Scale digits
	TypeBool
	TypeTimestamp // int64 UTC microseconds since the Unix epoch
)

var typeNames = map[Type]string{
	TypeString: "string", TypeInt: "int", TypeDecimal: "decimal", TypeBool: "bool", TypeTimestamp: "timestamp",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("Type(%d)", int(t))
}

// DuckDB is the DuckDB column type that holds values of t.
func (t Type) DuckDB() string {
	switch t {
	case TypeString:
		return "VARCHAR"
	case TypeBool:
		return "BOOLEAN"
	case TypeTimestamp:
		return "TIMESTAMPTZ"
	}
	return "BIGINT"
}

// Numeric reports whether values of t are int64 numbers that can be summed.
func (t Type) Numeric() bool { return t == TypeInt || t == TypeDecimal }

// Field is one typed field of a data contract.
type Field struct {
	Name     string
	Type     Type
	Scale    int // decimal places of a decimal field
	Required bool
	// Enum lists the allowed values of a string field; empty allows any.
	Enum []string
	// Min and Max bound int, decimal (in minor units) and timestamp
	// (microseconds) fields, inclusive.
	Min, Max *int64
	// MaxLength bounds a string field's length in bytes; 0 is unbounded.
	MaxLength int
	// MaxFuture rejects a timestamp later than the time the event was
	// received plus this; 0 disables the check. Received time is the
	// broker's, so the check is repeatable on replay.
	MaxFuture time.Duration
}

// Contract is the typed shape every event of a stream must have.
type Contract struct {
	Fields        []*Field
	ID            int // index of the id (dedup key) field
	Time          int // index of the event-time field
	RejectUnknown bool
	index         map[string]int
	byLen         [][]int // field indexes by name length, for the fast decoder
}

// Field returns the index of the field called name, or -1.
func (c *Contract) Field(name string) int {
	if i, ok := c.index[name]; ok {
		return i
	}
	return -1
}

// Value is one field value of an event or a row. Which member holds it
// depends on the type: Int for int, decimal, timestamp; Str; Bool.
type Value struct {
	Int  int64
	Str  string
	Null bool
	Bool bool
}

// Event is a decoded, valid event: one value per contract field, in order.
type Event struct {
	Values []Value
}

// Reason classifies why a field is invalid.
type Reason string

// The reasons an event is invalid.
const (
	ReasonJSON      Reason = "json"      // not a JSON object
	ReasonMissing   Reason = "missing"   // a required field is absent or null
	ReasonType      Reason = "type"      // wrong JSON type or unparsable value
	ReasonRange     Reason = "range"     // outside min/max or too far in the future
	ReasonEnum      Reason = "enum"      // not one of the allowed values
	ReasonPrecision Reason = "precision" // more decimal places than the scale
	ReasonTooLong   Reason = "too_long"  // string longer than max_length
	ReasonUnknown   Reason = "unknown"   // a field the contract does not declare
	ReasonDuplicate Reason = "duplicate" // the same key twice in one object
)

// FieldError says why one field of an event is invalid.
type FieldError struct {
	Field  string // empty when the whole event is unreadable
	Reason Reason
	Msg    string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.Reason, e.Msg)
	}
	return fmt.Sprintf("field %q: %s: %s", e.Field, e.Reason, e.Msg)
}

// ValidationError holds every problem with one event.
type ValidationError struct {
	Errs []*FieldError
}

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		msgs[i] = fe.Error()
	}
	return "invalid event: " + strings.Join(msgs, "; ")
}

// ErrInvalidEvent matches every *ValidationError with errors.Is.
var ErrInvalidEvent = errors.New("invalid event")

func (e *ValidationError) Is(target error) bool { return target == ErrInvalidEvent }

// Decode validates a JSON event against the contract and returns its typed
// values. receivedAt is when the broker received it, for max_future checks.
// Every problem is reported in one *ValidationError.
func (c *Contract) Decode(data []byte, receivedAt time.Time) (Event, error) {
	return c.DecodeInto(nil, data, receivedAt, false)
}

// DecodeInto is Decode for a hot loop. The values are written into buf's
// storage when it is large enough. With borrow, the string values that are
// not an enum's point into data instead of copying it: the event then reads
// data, which must not change while the event is used, and a string kept
// past that must be cloned (strings.Clone). Only the common path borrows;
// an event it cannot decode is copied as by Decode.
func (c *Contract) DecodeInto(buf []Value, data []byte, receivedAt time.Time, borrow bool) (Event, error) {
	var ev Event
	if cap(buf) >= len(c.Fields) {
		ev.Values = buf[:len(c.Fields)]
		clear(ev.Values)
	} else {
		ev.Values = make([]Value, len(c.Fields))
	}
	if c.decodeFast(data, receivedAt, &ev, borrow) {
		return ev, nil
	}
	clear(ev.Values)
	return c.decodeGeneral(data, receivedAt, ev)
}

// decodeGeneral is the path every event can take: encoding/json's tokenizer,
// every rule checked, every problem reported.
func (c *Contract) decodeGeneral(data []byte, receivedAt time.Time, ev Event) (Event, error) {
	seen := make([]bool, len(c.Fields))
	var errs []*FieldError
	fail := func(field string, r Reason, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: r, Msg: fmt.Sprintf(format, args...)})
	}
	if !utf8.Valid(data) {
		fail("", ReasonJSON, "event is not valid UTF-8; send UTF-8 encoded JSON")
		return Event{}, &ValidationError{errs}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		fail("", ReasonJSON, "event must be a JSON object like {\"field\": value}")
		return Event{}, &ValidationError{errs}
	}
	var unknown map[string]bool
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			fail("", ReasonJSON, "cannot parse JSON: %v", err)
			return Event{}, &ValidationError{errs}
		}
		key := tok.(string) // inside an object, a token before a value is always its key
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			fail("", ReasonJSON, "cannot parse JSON value of %q: %v", key, err)
			return Event{}, &ValidationError{errs}
		}
		i, ok := c.index[key]
		if !ok {
			if unknown[key] {
				fail(key, ReasonDuplicate, "the key appears more than once; send it once")
			} else if c.RejectUnknown {
				fail(key, ReasonUnknown, "the contract does not declare this field; remove it or add it to the contract")
			}
			if unknown == nil {
				unknown = map[string]bool{}
			}
			unknown[key] = true
			continue
		}
		if seen[i] {
			fail(key, ReasonDuplicate, "the key appears more than once; send it once")
			continue
		}
		seen[i] = true
		if fe := c.Fields[i].decode(raw, receivedAt, &ev.Values[i]); fe != nil {
			errs = append(errs, fe)
		}
	}
	if _, err := dec.Token(); err != nil {
		fail("", ReasonJSON, "cannot parse JSON: %v", err)
		return Event{}, &ValidationError{errs}
	}
	if _, err := dec.Token(); err != io.EOF {
		fail("", ReasonJSON, "trailing data after the JSON object; send one object per event")
	}
	for i, f := range c.Fields {
		if !seen[i] {
			ev.Values[i].Null = true
		}
		if ev.Values[i].Null && f.Required && !hasErrFor(errs, f.Name) {
			fail(f.Name, ReasonMissing, "required %s field is missing or null", f.Type)
		}
	}
	if len(errs) > 0 {
		return Event{}, &ValidationError{errs}
	}
	return ev, nil
}

func hasErrFor(errs []*FieldError, field string) bool {
	for _, e := range errs {
		if e.Field == field {
			return true
		}
	}
	return false
}

func (f *Field) decode(raw json.RawMessage, receivedAt time.Time, v *Value) *FieldError {
	bad := func(r Reason, format string, args ...any) *FieldError {
		return &FieldError{Field: f.Name, Reason: r, Msg: fmt.Sprintf(format, args...)}
	}
	if string(raw) == "null" {
		v.Null = true
		return nil
	}
	switch f.Type {
	case TypeString:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return bad(ReasonType, "want a JSON string, got %s", describeJSON(raw))
		}
		if f.MaxLength > 0 && len(s) > f.MaxLength {
			return bad(ReasonTooLong, "is %d bytes long, the contract allows at most %d", len(s), f.MaxLength)
		}
		if len(f.Enum) > 0 && !contains(f.Enum, s) {
			return bad(ReasonEnum, "%q is not one of %s", s, strings.Join(f.Enum, ", "))
		}
		v.Str = s
		return nil
	case TypeBool:
		switch string(raw) {
		case "true":
			v.Bool = true
		case "false":
		default:
			return bad(ReasonType, "want true or false, got %s", describeJSON(raw))
		}
		return nil
	case TypeInt, TypeDecimal:
		text := string(raw)
		if len(raw) > 0 && raw[0] == '"' {
			if f.Type == TypeInt {
				return bad(ReasonType, "want a JSON number, got %s", describeJSON(raw))
			}
			_ = json.Unmarshal(raw, &text) // a decimal may come as a string to keep its exact digits
		} else if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
			return bad(ReasonType, "want a JSON number, got %s", describeJSON(raw))
		}
		n, err := ParseDecimal(text, f.Scale)
		if err != nil {
			r := ReasonType
			if errors.Is(err, errPrecision) {
				r = ReasonPrecision
			} else if errors.Is(err, errOverflow) {
				r = ReasonRange
			}
			return bad(r, "%v", err)
		}
		if f.Min != nil && n < *f.Min {
			return bad(ReasonRange, "%s is below the minimum %s", text, FormatDecimal(*f.Min, f.Scale))
		}
		if f.Max != nil && n > *f.Max {
			return bad(ReasonRange, "%s is above the maximum %s", text, FormatDecimal(*f.Max, f.Scale))
		}
		v.Int = n
		return nil
	case TypeTimestamp:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return bad(ReasonType, "want an RFC 3339 string like \"2026-01-02T15:04:05Z\", got %s", describeJSON(raw))
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return bad(ReasonType, "cannot parse %q as RFC 3339; write it like \"2026-01-02T15:04:05.123Z\"", s)
		}
		us, ok := timeMicros(t)
		if !ok {
			return bad(ReasonRange, "%q is outside the years 1678 to 2261", s)
		}
		if f.Min != nil && us < *f.Min {
			return bad(ReasonRange, "%s is before the minimum %s", s, FormatTimestamp(*f.Min))
		}
		if f.Max != nil && us > *f.Max {
			return bad(ReasonRange, "%s is after the maximum %s", s, FormatTimestamp(*f.Max))
		}
		if f.MaxFuture > 0 && !receivedAt.IsZero() && t.After(receivedAt.Add(f.MaxFuture)) {
			return bad(ReasonRange, "%s is more than %s after it was received (%s)", s, f.MaxFuture, receivedAt.UTC().Format(time.RFC3339))
		}
		v.Int = us
		return nil
	}
	return bad(ReasonType, "field has unknown type %v", f.Type)
}

// timeMicros converts t to UTC microseconds, refusing times that int64
// nanoseconds cannot hold, so every engine agrees on the value.
func timeMicros(t time.Time) (int64, bool) {
	if t.Year() < 1678 || t.Year() > 2261 {
		return 0, false
	}
	return t.UnixMicro(), true
}

// FormatTimestamp renders UTC microseconds as RFC 3339.
func FormatTimestamp(us int64) string {
	return time.UnixMicro(us).UTC().Format(time.RFC3339Nano)
}

func describeJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a bool"
	case 'n':
		return "null"
	}
	return "the number " + string(raw)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var (
	errPrecision = errors.New("too many decimal places")
	errOverflow  = errors.New("out of the int64 range")
)

// decimalError is a message for the user that errors.Is can classify.
type decimalError struct {
	msg  string
	kind error
}

func (e *decimalError) Error() string { return e.msg }
func (e *decimalError) Unwrap() error { return e.kind }

// ParseDecimal parses a decimal number ("-12.34", "1e3") exactly into int64
// units of 10^-scale. It refuses digits beyond the scale rather than rounding.
func ParseDecimal(s string, scale int) (int64, error) {
	orig := s
	neg := false
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	exp := 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || e > 40 || e < -40 {
			return 0, fmt.Errorf("cannot parse %q as a number", orig)
		}
		exp, s = e, s[:i]
	}
	intPart, frac, _ := strings.Cut(s, ".")
	if intPart == "" || !allDigits(intPart) || !allDigits(frac) || (strings.Contains(s, ".") && frac == "") {
		return 0, fmt.Errorf("cannot parse %q as a number", orig)
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	// value = digits * 10^(exp - len(frac)); we want value * 10^scale.
	shift := exp - len(frac) + scale
	if shift < 0 {
		cut := len(digits) + shift
		if cut < 0 {
			cut = 0
		}
		if strings.Trim(digits[cut:], "0") != "" {
			return 0, &decimalError{fmt.Sprintf("%q has more than %d decimal places", orig, scale), errPrecision}
		}
		digits = digits[:cut]
	} else {
		if len(digits) > 0 {
			digits += strings.Repeat("0", shift)
		}
	}
	if digits == "" {
		return 0, nil
	}
	if len(digits) > 19 {
		return 0, &decimalError{fmt.Sprintf("%q does not fit in int64 minor units", orig), errOverflow}
	}
	u, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || (!neg && u > math.MaxInt64) || (neg && u > 1<<63) {
		return 0, &decimalError{fmt.Sprintf("%q does not fit in int64 minor units", orig), errOverflow}
	}
	if neg {
		return int64(-u), nil //nolint:gosec // u <= 1<<63 checked above
	}
	return int64(u), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatDecimal renders int64 minor units with scale decimal places.
func FormatDecimal(n int64, scale int) string { return string(AppendDecimal(nil, n, scale)) }

// AppendDecimal appends FormatDecimal(n, scale) to b.
func AppendDecimal(b []byte, n int64, scale int) []byte {
	if scale == 0 {
		return strconv.AppendInt(b, n, 10)
	}
	if n < 0 {
		b = append(b, '-')
	}
	var tmp [64]byte
	d := strconv.AppendUint(tmp[:0], absU(n), 10)
	if pad := scale + 1 - len(d); pad > 0 { // at least one digit before the point
		d = append(d, make([]byte, pad)...)
		copy(d[pad:], d[:len(d)-pad])
		for i := range pad {
			d[i] = '0'
		}
	}
	b = append(b, d[:len(d)-scale]...)
	b = append(b, '.')
	return append(b, d[len(d)-scale:]...)
}

func absU(n int64) uint64 {
	if n < 0 {
		return uint64(-(n + 1)) + 1
	}
	return uint64(n)
}
