package spec

import (
	"strings"
	"testing"
)

func contractOf(t *testing.T, fields string) ContractDoc {
	t.Helper()
	s, err := Parse("evolve.yaml", []byte(`
streams:
  s:
    subjects: [s.>]
    id: id
    event_time: ts
    fields:
      id: {type: string, required: true}
      ts: {type: timestamp, required: true}
`+fields))
	if err != nil {
		t.Fatal(err)
	}
	return s.Stream("s").Contract.Doc()
}

func TestCompareContracts(t *testing.T) {
	base := `      amount: {type: decimal, scale: 2, required: true, min: 0}
      currency: {type: string, enum: [USD, EUR], max_length: 3}
      n: {type: int}
`
	for _, tc := range []struct {
		name, fields string
		breaking     bool
		note         string // part of the one change's note
	}{
		{"optional field added", base + "      device: {type: string, max_length: 16}\n", false, "read it as null"},
		{"required field added", base + "      device: {type: string, required: true}\n", true, "no value for a required field"},
		{"enum value added", strings.Replace(base, "[USD, EUR]", "[USD, EUR, CHF]", 1), false, "enum values added"},
		{"enum value removed", strings.Replace(base, "[USD, EUR]", "[USD]", 1), false, "new events only"},
		{"length loosened", strings.Replace(base, "max_length: 3", "max_length: 8", 1), false, "widened"},
		{"range narrowed", strings.Replace(base, "min: 0", "min: 5", 1), false, "narrowed"},
		{"required made optional", strings.Replace(base, "scale: 2, required: true", "scale: 2", 1), false, "no longer required"},
		{"optional made required", strings.Replace(base, "n: {type: int}", "n: {type: int, required: true}", 1), true, "keep it optional"},
		{"type changed", strings.Replace(base, "n: {type: int}", "n: {type: string}", 1), true, "hold int values"},
		{"scale changed", strings.Replace(base, "scale: 2", "scale: 3", 1), true, "scale"},
		{"field removed", strings.Replace(base, "      n: {type: int}\n", "", 1), false, "removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			changes := CompareContracts(contractOf(t, base), contractOf(t, tc.fields))
			if len(changes) != 1 {
				t.Fatalf("got %d changes, want 1: %v", len(changes), changes)
			}
			c := changes[0]
			if c.Breaking != tc.breaking || !strings.Contains(c.Note, tc.note) {
				t.Errorf("got %v, want breaking=%v with %q", c, tc.breaking, tc.note)
			}
			if got := len(Breaking(changes)) > 0; got != tc.breaking {
				t.Errorf("Breaking: %v", got)
			}
		})
	}
	if c := CompareContracts(contractOf(t, base), contractOf(t, base)); len(c) != 0 {
		t.Errorf("the same contract differs: %v", c)
	}
	a, b := contractOf(t, base), contractOf(t, base+"      device: string\n")
	if a.Fingerprint() == b.Fingerprint() || a.Fingerprint() != contractOf(t, base).Fingerprint() {
		t.Errorf("fingerprints: %s %s", a.Fingerprint(), b.Fingerprint())
	}
}
