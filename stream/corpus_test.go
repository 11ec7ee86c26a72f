package stream

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBadInputCorpus puts malformed and extreme events through HTTP ingest,
// one per line: each is accepted or rejected as the contract says, every
// rejection names its reason and is dead-lettered (cut to size with its
// original length when too large to store), and the lines after the worst
// of them are still read.
func TestBadInputCorpus(t *testing.T) {
	srv, js, s := ingestServer(t)
	ctx := t.Context()

	now := time.Now().UTC()
	ev := func(id string, over map[string]any) string {
		m := map[string]any{"payment_id": id, "ts": now.Format(time.RFC3339Nano), "card_id": "c1", "merchant_id": "m1",
			"country": "US", "amount": "9.99", "currency": "USD", "channel": "pos"}
		for k, v := range over {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	raw := func(id, field, rawJSON string) string { // an event with one field's JSON written by hand
		e := ev(id, map[string]any{field: nil})
		return e[:len(e)-1] + `,"` + field + `":` + rawJSON + `}`
	}
	deep := strings.Repeat(`{"a":`, 100_000) + "1" + strings.Repeat("}", 100_000)
	cases := []struct {
		name, line string
		reason     string // "" means accepted
	}{
		{"ordinary", ev("ok-1", nil), ""},
		{"truncated JSON", ev("t-1", nil)[:40], "json"},
		{"not an object", `[1,2,3]`, "json"},
		{"bare string", `"hello"`, "json"},
		{"trailing garbage", ev("t-2", nil) + "}", "json"},
		{"invalid UTF-8", strings.Replace(ev("u-1", nil), "c1", "c\xff\xfe", 1), "UTF-8"},
		{"NUL escaped in a string", raw("u-2", "card_id", `"c\u0000d"`), ""},
		{"emoji and right-to-left marks", ev("u-3", map[string]any{"card_id": "card-🃏-\u202e-\u200d"}), ""},
		{"lone surrogate escape", raw("u-4", "card_id", `"\ud800"`), ""},
		{"amount as a JSON number", raw("w-1", "amount", `12.5`), ""},
		{"amount as a bool", raw("w-2", "amount", `true`), "type"},
		{"amount with too many places", ev("w-3", map[string]any{"amount": "1.001"}), "precision"},
		{"amount 1e309", raw("w-4", "amount", `1e309`), "type"},
		{"amount negative zero", ev("w-5", map[string]any{"amount": "-0.00"}), "range"},
		{"amount above max", ev("w-6", map[string]any{"amount": "1000000.01"}), "range"},
		{"ts as a number", raw("w-7", "ts", `1735689600`), "type"},
		{"ts without a zone", ev("w-8", map[string]any{"ts": "2026-01-01T00:00:00"}), "type"},
		{"ts in 1970", ev("w-9", map[string]any{"ts": "1970-01-01T00:00:00Z"}), "range"},
		{"ts in 9999", ev("w-10", map[string]any{"ts": "9999-12-31T23:59:59Z"}), "range"},
		{"ts a leap second", ev("w-11", map[string]any{"ts": "2016-12-31T23:59:60Z"}), "type"},
		{"missing id", ev("", map[string]any{"payment_id": nil}), "missing"},
		{"id too long", ev(strings.Repeat("x", 65), nil), "too_long"},
		{"currency not in enum", ev("w-12", map[string]any{"currency": "XBT"}), "enum"},
		{"key twice", strings.Replace(ev("w-13", nil), `"amount":"9.99"`, `"amount":"9.99","amount":"1.00"`, 1), "duplicate"},
		{"unknown field, nested 100,000 deep", raw("d-1", "extra", deep), "max depth"},
		{"a 200 KiB unknown field", raw("h-1", "extra", `"`+strings.Repeat("y", 200<<10)+`"`), ""},
		{"a 2 MiB card id", ev("h-2", map[string]any{"card_id": strings.Repeat("z", 2<<20)}), "too_long"},
		{"a 9 MiB valid event", raw("h-3", "extra", `"`+strings.Repeat("y", 9<<20)+`"`), "longer than 8 MiB"},
		{"ordinary after it all", ev("ok-2", nil), ""},
		// Appended, so the 9 MiB line stays cases[27].
		{"id with CR and LF", ev("ok-1\r\n", nil), ""},
		{"id smuggling a header", ev("x\r\nNats-Msg-Id: ok-2", nil), ""},
		{"ts over max_future ahead", ev("w-14", map[string]any{"ts": now.Add(2 * time.Hour).Format(time.RFC3339)}), "after it was received"},
		{"country too long", ev("w-15", map[string]any{"country": "USA"}), "too_long"},
		{"enum with a newline", ev("w-16", map[string]any{"channel": "pos\n"}), "enum"},
		{"amount NaN", ev("w-17", map[string]any{"amount": "NaN"}), "type"},
		{"empty object", `{}`, "missing"},
		{"null", `null`, "json"},
	}
	lines := make([]string, len(cases))
	for i, c := range cases {
		lines[i] = c.line
	}
	resp, err := http.Post(srv.URL+"/v1/ingest/payments", "application/x-ndjson", strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res IngestResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	rejected := map[int]string{}
	for _, r := range res.Rejected {
		rejected[r.Line] = r.Error
	}
	wantRejected := 0
	for i, c := range cases {
		got, isRejected := rejected[i+1]
		switch {
		case c.reason == "" && isRejected:
			t.Errorf("%s: rejected (%s); the contract accepts it", c.name, got)
		case c.reason != "" && !isRejected:
			t.Errorf("%s: accepted; want rejected for %s", c.name, c.reason)
		case c.reason != "" && !strings.Contains(got, c.reason):
			t.Errorf("%s: rejected with %q; want the reason to say %s", c.name, got, c.reason)
		}
		if c.reason != "" {
			wantRejected++
		}
	}
	if res.Accepted != len(cases)-wantRejected {
		t.Errorf("accepted %d, want %d", res.Accepted, len(cases)-wantRejected)
	}
	dlq, err := js.Stream(ctx, DLQStreamName(s.Stream("payments")))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := dlq.Info(ctx)
	if int(info.State.Msgs) != wantRejected {
		t.Errorf("dead-letter stream has %d messages; want the %d rejected lines", info.State.Msgs, wantRejected)
	}
	truncated := 0
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(DLQHeaderReason) == "" {
			t.Errorf("dead letter %d has no reason", seq)
		}
		if n := m.Header.Get(DLQHeaderTruncated); n != "" {
			truncated++
			if n != fmt.Sprint(len(cases[27].line)) || len(m.Data) == 0 {
				t.Errorf("dead letter %d says it was cut from %s bytes and keeps %d", seq, n, len(m.Data))
			}
		}
	}
	if truncated != 1 {
		t.Errorf("%d dead letters cut to size; want the one line over 8 MiB", truncated)
	}
}
