package spec

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	for _, p := range []string{"../examples/payments/tideline.yaml", "testdata/broken.yaml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(agreeSpec))
	f.Add([]byte(goodStream))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error is not a non-empty ErrorList: %v", err)
			}
			for _, e := range list {
				if e.Line < 1 || e.Column < 1 || e.Msg == "" {
					t.Fatalf("error without a position or message: %+v", e)
				}
			}
			return
		}
		for _, v := range s.Views {
			if v.SQL("events") == "" {
				t.Fatalf("view %s renders no SQL", v.Name)
			}
		}
	})
}

func FuzzDecode(f *testing.F) {
	c := paymentsContract(f)
	f.Add([]byte(`{"payment_id":"p1","ts":"2026-11-25T11:59:00.5Z","card_id":"c1","merchant_id":"m1","country":"US","currency":"USD","channel":"pos","amount":12.34,"card_present":true}`))
	f.Add([]byte(`{"payment_id":"p1","ts":"2026-11-25T11:59:00+05:30","card_id":"c1","merchant_id":"m1","country":"US","currency":"EUR","channel":"ecom","amount":"1e3"}`))
	f.Add([]byte(`{"amount":1,"amount":2}`))
	f.Add([]byte(`[]`))
	recv := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := c.Decode(data, recv)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Errs) == 0 {
				t.Fatalf("error is not a non-empty *ValidationError: %v", err)
			}
			return
		}
		// A valid event re-encoded canonically decodes to the same values.
		again, err := c.Decode(encode(c, ev), recv)
		if err != nil {
			t.Fatalf("re-encoded event is invalid: %v\n%s", err, encode(c, ev))
		}
		if !reflect.DeepEqual(ev, again) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, again)
		}
	})
}

func FuzzParseExpr(f *testing.F) {
	s, err := Parse("agree.yaml", []byte(agreeSpec))
	if err != nil {
		f.Fatal(err)
	}
	cols := s.View("tumble").Columns
	for _, e := range agreeExprs {
		f.Add(e)
	}
	row := make(Row, len(cols))
	row[5] = Value{Null: true}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := ParseExpr(src, cols)
		if err != nil {
			var ee *ExprError
			if !errors.As(err, &ee) || ee.Offset < 0 || ee.Offset > len(src) {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		_ = e.Eval(row)
		if e.SQL() == "" {
			t.Fatal("no SQL")
		}
	})
}

func encode(c *Contract, ev Event) []byte {
	obj := map[string]any{}
	for i, f := range c.Fields {
		v := ev.Values[i]
		switch {
		case v.Null:
			obj[f.Name] = nil
		case f.Type == TypeString:
			obj[f.Name] = v.Str
		case f.Type == TypeBool:
			obj[f.Name] = v.Bool
		case f.Type == TypeTimestamp:
			obj[f.Name] = FormatTimestamp(v.Int)
		default:
			obj[f.Name] = json.Number(FormatDecimal(v.Int, f.Scale))
		}
	}
	b, _ := json.Marshal(obj)
	return b
}

// FuzzDecodeFast holds the fast path to the general one: whatever the fast
// path accepts, the general path accepts with the same values.
func FuzzDecodeFast(f *testing.F) {
	c := paymentsContract(f)
	for _, l := range genEvents(c, 20, 3) {
		f.Add([]byte(l))
	}
	f.Add([]byte(`{"payment_id":"p1","ts":"2026-11-25T11:59:00.123+05:30","card_id":"c1","merchant_id":"m1","country":"US","currency":"EUR","channel":"ecom","amount":"12.5","x":{"a":[1,"b",null]},"card_present":null}`))
	f.Add([]byte(` {"payment_id":"p1" , "ts":"2024-02-29T23:59:59Z","card_id":"c1","merchant_id":"m1","country":"US","currency":"USD","channel":"pos","amount":0.01,"y":1,"y":2} `))
	// UTF-8 is checked inside strings only: outside them nothing but ASCII parses.
	const rest = `"ts":"2026-11-25T11:59:00Z","card_id":"c1","merchant_id":"m1","country":"US","currency":"USD","channel":"pos","amount":1`
	f.Add([]byte(`{"payment_id":"pé€😀1",` + rest + `}`))
	f.Add([]byte("{\"payment_id\":\"p\xff1\"," + rest + "}"))
	f.Add([]byte("{\"payment_id\":\"p\xe2\x82\"," + rest + "}"))
	f.Add([]byte("{\"payment_id\":\"p1\",\xc2\xa0" + rest + "}"))
	recv := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		fast := Event{Values: make([]Value, len(c.Fields))}
		borrow := len(data)%2 == 0 // borrowing or not, the same values
		if !c.decodeFast(data, recv, &fast, borrow) {
			return
		}
		slow, err := c.decodeGeneral(data, recv, Event{Values: make([]Value, len(c.Fields))})
		if err != nil {
			t.Fatalf("fast path accepted what the general path rejects: %v\n%s", err, data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("paths disagree on %s:\nfast    %+v\ngeneral %+v", data, fast, slow)
		}
	})
}
