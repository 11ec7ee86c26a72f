package spec

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestExampleSpec(t *testing.T) {
	s, err := Load("../examples/payments/tideline.yaml")
	if err != nil {
		t.Fatalf("example spec: %v", err)
	}
	pay := s.Stream("payments")
	if pay == nil || s.Stream("decisions") == nil {
		t.Fatalf("want payments and decisions streams, got %d streams", len(s.Streams))
	}
	if pay.Partition != 5*time.Minute || pay.Contract.Fields[pay.Contract.ID].Name != "payment_id" {
		t.Errorf("payments: partition %s, id %q", pay.Partition, pay.Contract.Fields[pay.Contract.ID].Name)
	}
	for _, name := range []string{"merchant_minute", "country_minute", "card_5m", "merchant_flag_rate"} {
		if s.View(name) == nil {
			t.Errorf("missing view %s", name)
		}
	}
	card := s.View("card_5m")
	if card.Tumbling() || card.Size != 5*time.Minute || card.Hop != time.Minute {
		t.Errorf("card_5m window: size %s hop %s", card.Size, card.Hop)
	}
	if len(pay.Views) != 5 {
		t.Errorf("payments has %d views, want 5", len(pay.Views))
	}
	if cs := s.View("card_sessions"); !cs.Session() || cs.Gap != 5*time.Minute || cs.Max != 15*time.Minute || cs.Reach() != 15*time.Minute || cs.Lookback() != 5*time.Minute {
		t.Errorf("card_sessions window: %+v", cs.Window)
	}
	if sc := s.Scoring; sc == nil || sc.Stream != pay || sc.Decisions != s.Stream("decisions") || sc.Threshold != 60 || len(sc.Rules) != 9 {
		t.Errorf("scoring: %+v", sc)
	}
}

// TestScoringErrors breaks the shape of the example's scoring section in
// the ways a user might, and wants each named at its place. What the rules
// read is the scorer's to check: score's TestCheckNamesRuleErrors.
func TestScoringErrors(t *testing.T) {
	data, err := os.ReadFile("../examples/payments/tideline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ from, to, want string }{
		{"decisions: decisions\n  threshold", "decisions: decisionz\n  threshold", `scoring decisions: no stream "decisionz"`},
		{"threshold: 60", "threshold: lots", `scoring threshold "lots" is not a whole number`},
		{"weight: 40}", "wieght: 40}", `unknown key "wieght" in rule card_testing (did you mean weight?)`},
	} {
		src := strings.Replace(string(data), tt.from, tt.to, 1)
		if src == string(data) {
			t.Fatalf("%q is not in the example", tt.from)
		}
		_, err := Parse("tideline.yaml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s -> %s: got %v, want %q", tt.from, tt.to, err, tt.want)
		}
	}
}

func TestBrokenSpecReportsEveryError(t *testing.T) {
	_, err := Load("testdata/broken.yaml")
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want ErrorList, got %v", err)
	}
	want := []string{
		`testdata/broken.yaml:9:22: unknown field type "decimel" (did you mean decimal?)`,
		`testdata/broken.yaml:15:14: filter: unknown field "countyr" (did you mean country?)`,
		`testdata/broken.yaml:19:14: avg is not mergeable exactly`,
	}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), list)
	}
	for i, w := range want {
		if !strings.HasPrefix(list[i].Error(), w) {
			t.Errorf("error %d:\n got %s\nwant %s", i, list[i], w)
		}
	}
}

const goodStream = `
streams:
  s:
    subjects: [s.>]
    id: id
    event_time: ts
    fields:
      id: {type: string, required: true}
      ts: {type: timestamp, required: true}
      n: int
      d: {type: decimal, scale: 2}
`

func TestSpecErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // "line:col: message substring"
	}{
		{"yaml syntax", "streams:\n  s: [\n", []string{"2:1: cannot parse YAML"}},
		{"empty", "", []string{"1:1: spec is empty"}},
		{"unknown top key", "streems: {}\n", []string{`1:1: unknown key "streems" in the spec (did you mean streams?)`, "1:1: the spec is missing streams"}},
		{"missing id and subjects", "streams:\n  s:\n    event_time: ts\n    fields:\n      ts: {type: timestamp, required: true}\n",
			[]string{"3:5: stream s is missing subjects", "3:5: stream s is missing id"}},
		{"optional id", strings.Replace(goodStream, "id: {type: string, required: true}", "id: string", 1),
			[]string{`5:9: id field "id" must be required`}},
		{"time not timestamp", strings.Replace(goodStream, "event_time: ts", "event_time: n", 1),
			[]string{`6:17: event_time field "n" is int`}},
		{"bad subject", strings.Replace(goodStream, "[s.>]", "[s.>.x, tl.foo]", 1),
			[]string{`4:16: subject "s.>.x" has > before its last token`, `4:23: subject "tl.foo" is reserved`}},
		{"overlap", goodStream + "  t:\n    subjects: [s.x]\n    id: id\n    event_time: ts\n    fields:\n      id: {type: string, required: true}\n      ts: {type: timestamp, required: true}\n",
			[]string{`12:3: subject "s.x" of stream t overlaps "s.>" of stream s`}},
		{"scale on int", strings.Replace(goodStream, "n: int", "n: {type: int, scale: 2}", 1),
			[]string{"10:22: scale applies only to decimal fields"}},
		{"min over max", strings.Replace(goodStream, "n: int", "n: {type: int, min: 5, max: 1}", 1),
			[]string{"10:27: min is greater than max"}},
		{"bound precision", strings.Replace(goodStream, "scale: 2}", "scale: 2, max: 1.234}", 1),
			[]string{`11:41: bound of d: "1.234" has more than 2 decimal places`}},
		{"bad partition", strings.Replace(goodStream, "event_time: ts", "event_time: ts\n    partition: 7m", 1),
			[]string{"7:16: partition 7m does not divide a day"}},
		{"view errors", goodStream + `views:
  v:
    stream: s
    window: {size: 90s, hop: 60s}
    filter: n + 1
    derive:
      big: d > 'x'
      n: n * 2
    group_by: [nn]
    measures:
      a: sum(id)
      b: count_if(n)
      c: count(n)
      window_start: count
`, []string{
			"15:13: window hop 1m0s does not divide size 1m30s",
			"16:13: filter is int, not a condition",
			"18:14: derived field big: cannot compare decimal with string",
			`19:7: derived field "n" clashes`,
			`20:16: group_by names unknown field "nn" (did you mean n?)`,
			"22:10: sum needs an int or decimal field, id is string",
			"23:10: count_if needs a bool field, n is int",
			"24:10: count takes no field",
			`25:7: measure "window_start" clashes`,
		}},
		{"count_distinct of many values", goodStream + "views:\n  v:\n    stream: s\n    window: 1m\n    derive: {m: n * 2}\n    measures: {a: count_distinct(n), b: count_distinct(m)}\n",
			[]string{"17:19: count_distinct counts a field of at most 63 values", "17:41: count_distinct counts a contract field, m is derived"}},
		{"session windows", goodStream + "views:\n" +
			"  a: {stream: s, window: {session: 5m}, measures: {c: count}}\n" +
			"  b: {stream: s, window: {session: 5m, max: 48h}, measures: {c: count}}\n" +
			"  c: {stream: s, window: {session: 10m, max: 5m}, measures: {c: count}}\n" +
			"  d: {stream: s, window: {session: 1500ms, max: 1h}, measures: {c: count}}\n" +
			"  e: {stream: s, window: {size: 1m, session: 5m, max: 1h}, measures: {c: count}}\n" +
			"  f: {stream: s, window: {session: 5m, max: 1h}, measures: {c: approx_count_distinct(nn)}}\n",
			[]string{
				"13:26: session window needs session and max",
				"14:26: session max 48h0m0s does not fit gap 5m0s",
				"15:26: session max 5m0s does not fit gap 10m0s",
				"16:26: session gap and max must be whole seconds",
				"17:26: a window is fixed (size) or a session, not both",
				`18:64: measure c reads unknown field "nn"`,
			}},
		{"unknown stream", goodStream + "views:\n  v:\n    stream: t\n    window: 1m\n    measures: {c: count}\n",
			[]string{`14:13: view v reads unknown stream "t"`}},
		{"window longer than partition", goodStream + "views:\n  v:\n    stream: s\n    window: 2h\n    measures: {c: count}\n",
			[]string{"15:13: window of view v does not fit the partitions of stream s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.yaml))
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("want errors, got %v", err)
			}
			if len(list) != len(tt.want) {
				t.Errorf("got %d errors, want %d:\n%v", len(list), len(tt.want), list)
			}
			for i, w := range tt.want {
				if i >= len(list) {
					break
				}
				if !strings.Contains(list[i].Error(), "f.yaml:"+w) {
					t.Errorf("error %d:\n got %s\nwant f.yaml:%s", i, list[i], w)
				}
				if list[i].Hint == "" {
					t.Errorf("error %d has no hint: %s", i, list[i])
				}
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"30s": 30 * time.Second, "7d": 7 * 24 * time.Hour, "1h30m": 90 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "7", "-1d", "1.5d", "d"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}
