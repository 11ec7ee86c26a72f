package spec

import (
	"errors"
	"testing"
	"time"
)

func paymentsContract(t testing.TB) *Contract {
	t.Helper()
	s, err := Load("../examples/payments/tideline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return s.Stream("payments").Contract
}

func TestDecode(t *testing.T) {
	c := paymentsContract(t)
	recv := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	const ok = `"payment_id":"p1","ts":"2026-11-25T11:59:00.5Z","card_id":"c1","merchant_id":"m1","country":"US","currency":"USD","channel":"pos"`
	tests := []struct {
		name, json string
		want       map[string]Reason // field -> reason; nil means valid
	}{
		{"valid", `{` + ok + `,"amount":12.34,"card_present":true}`, nil},
		{"decimal as string", `{` + ok + `,"amount":"0.01"}`, nil},
		{"exponent", `{` + ok + `,"amount":1.5e2}`, nil},
		{"unknown field ignored", `{` + ok + `,"amount":1,"extra":[1,2]}`, nil},
		{"not json", `{"payment_id":`, map[string]Reason{"": ReasonJSON}},
		{"array", `[1]`, map[string]Reason{"": ReasonJSON}},
		{"trailing", `{` + ok + `,"amount":1} {}`, map[string]Reason{"": ReasonJSON}},
		{"bad utf8", "{\"payment_id\":\"\xff\"}", map[string]Reason{"": ReasonJSON}},
		{"missing required", `{"payment_id":"p1","ts":"2026-11-25T11:59:00Z","amount":1,"card_id":"c","merchant_id":"m","country":"US","channel":"pos"}`,
			map[string]Reason{"currency": ReasonMissing}},
		{"null required", `{` + ok + `,"amount":null}`, map[string]Reason{"amount": ReasonMissing}},
		{"wrong types", `{"payment_id":7,"ts":"2026-11-25T11:59:00Z","card_id":"c","merchant_id":"m","country":"US","currency":"USD","channel":"pos","amount":"x","card_present":"yes"}`,
			map[string]Reason{"payment_id": ReasonType, "amount": ReasonType, "card_present": ReasonType}},
		{"precision", `{` + ok + `,"amount":1.234}`, map[string]Reason{"amount": ReasonPrecision}},
		{"range", `{` + ok + `,"amount":0}`, map[string]Reason{"amount": ReasonRange}},
		{"huge", `{` + ok + `,"amount":1e30}`, map[string]Reason{"amount": ReasonRange}},
		{"enum", `{"payment_id":"p1","ts":"2026-11-25T11:59:00Z","card_id":"c1","merchant_id":"m1","country":"US","currency":"XXX","channel":"pos","amount":1}`,
			map[string]Reason{"currency": ReasonEnum}},
		{"too long", `{"payment_id":"p1","ts":"2026-11-25T11:59:00Z","card_id":"c1","merchant_id":"m1","country":"USA","currency":"USD","channel":"pos","amount":1}`,
			map[string]Reason{"country": ReasonTooLong}},
		{"future", `{"payment_id":"p1","ts":"2026-11-25T14:00:00Z","card_id":"c1","merchant_id":"m1","country":"US","currency":"USD","channel":"pos","amount":1}`,
			map[string]Reason{"ts": ReasonRange}},
		{"past", `{"payment_id":"p1","ts":"1999-11-25T14:00:00Z","card_id":"c1","merchant_id":"m1","country":"US","currency":"USD","channel":"pos","amount":1}`,
			map[string]Reason{"ts": ReasonRange}},
		{"far future", `{"payment_id":"p1","ts":"9999-11-25T14:00:00Z","card_id":"c1","merchant_id":"m1","country":"US","currency":"USD","channel":"pos","amount":1}`,
			map[string]Reason{"ts": ReasonRange}},
		{"no zone", `{"payment_id":"p1","ts":"2026-11-25 11:00:00","card_id":"c1","merchant_id":"m1","country":"US","currency":"USD","channel":"pos","amount":1}`,
			map[string]Reason{"ts": ReasonType}},
		{"duplicate key", `{` + ok + `,"amount":1,"amount":2}`, map[string]Reason{"amount": ReasonDuplicate}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := c.Decode([]byte(tt.json), recv)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				if len(ev.Values) != len(c.Fields) {
					t.Fatalf("got %d values, want %d", len(ev.Values), len(c.Fields))
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("want *ValidationError, got %v", err)
			}
			got := map[string]Reason{}
			for _, fe := range ve.Errs {
				got[fe.Field] = fe.Reason
				if fe.Msg == "" {
					t.Errorf("error for %q has no message", fe.Field)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %v, want %v (%v)", got, tt.want, err)
			}
			for f, r := range tt.want {
				if got[f] != r {
					t.Errorf("field %q: got reason %q, want %q (%v)", f, got[f], r, err)
				}
			}
		})
	}
}

func TestDecodeValues(t *testing.T) {
	c := paymentsContract(t)
	ev, err := c.Decode([]byte(`{"payment_id":"p1","ts":"2026-11-25T11:59:00.123456+01:00","card_id":"c1","merchant_id":"m1","country":"US","currency":"USD","channel":"pos","amount":"1234.5"}`), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ev.Values[c.Field("amount")].Int; got != 123450 {
		t.Errorf("amount = %d minor units, want 123450", got)
	}
	want := time.Date(2026, 11, 25, 10, 59, 0, 123456000, time.UTC).UnixMicro()
	if got := ev.Values[c.Time].Int; got != want {
		t.Errorf("ts = %d, want %d", got, want)
	}
	if !ev.Values[c.Field("card_present")].Null {
		t.Error("absent optional field is not null")
	}
}

func TestParseDecimal(t *testing.T) {
	tests := []struct {
		in    string
		scale int
		want  int64
		err   error
	}{
		{"0", 2, 0, nil},
		{"12.34", 2, 1234, nil},
		{"-12.3", 2, -1230, nil},
		{"1.50", 1, 15, nil},
		{"1.2e3", 2, 120000, nil},
		{"125e-2", 2, 125, nil},
		{"9223372036854775807", 0, 9223372036854775807, nil},
		{"-9223372036854775808", 0, -9223372036854775808, nil},
		{"9223372036854775808", 0, 0, errOverflow},
		{"92233720368547758.08", 2, 0, errOverflow},
		{"1.001", 2, 0, errPrecision},
		{"1e-3", 2, 0, errPrecision},
	}
	for _, tt := range tests {
		got, err := ParseDecimal(tt.in, tt.scale)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("ParseDecimal(%q, %d) error = %v, want %v", tt.in, tt.scale, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseDecimal(%q, %d) = %d, %v; want %d", tt.in, tt.scale, got, err, tt.want)
		}
		if back, err := ParseDecimal(FormatDecimal(got, tt.scale), tt.scale); err != nil || back != got {
			t.Errorf("FormatDecimal(%d, %d) = %q does not parse back", got, tt.scale, FormatDecimal(got, tt.scale))
		}
	}
	for _, bad := range []string{"", "-", "1.", ".5", "1..2", "0x10", "1e", "+1", "1,5"} {
		if _, err := ParseDecimal(bad, 2); err == nil {
			t.Errorf("ParseDecimal(%q) accepted", bad)
		}
	}
}

// TestDecodeInto reuses one buffer: nothing of an earlier event shows
// through, and borrowed strings read the message they came from.
func TestDecodeInto(t *testing.T) {
	c := paymentsContract(t)
	const rest = `"ts":"2026-11-25T11:59:00Z","card_id":"c1","merchant_id":"m1","country":"US","currency":"USD","channel":"pos","amount":1`
	first := []byte(`{"payment_id":"p1",` + rest + `,"card_present":true}`)
	second := []byte(`{"payment_id":"p2",` + rest + `}`)
	buf := make([]Value, len(c.Fields))
	if _, err := c.DecodeInto(buf, first, time.Time{}, true); err != nil {
		t.Fatal(err)
	}
	ev, err := c.DecodeInto(buf, second, time.Time{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if &ev.Values[0] != &buf[0] {
		t.Error("DecodeInto did not write into the buffer it was given")
	}
	if cp := ev.Values[c.Field("card_present")]; !cp.Null || cp.Bool {
		t.Errorf("card_present of the second event = %+v, want null: the first event's value showed through", cp)
	}
	id := c.Field("payment_id")
	if got := ev.Values[id].Str; got != "p2" {
		t.Fatalf("payment_id = %q, want p2", got)
	}
	copy(second[len(`{"payment_id":"`):], "q")
	if got := ev.Values[id].Str; got != "q2" {
		t.Errorf("a borrowed payment_id reads %q after its message changed to q2: it was copied", got)
	}
	if got := ev.Values[c.Field("currency")].Str; got != "USD" {
		t.Errorf("currency = %q, want USD (an enum's own string)", got)
	}
}
