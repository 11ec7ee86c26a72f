package score

import (
	"errors"
	"os"
	"strings"
	"testing"

	"tideline/spec"
)

// TestCheckNamesRuleErrors breaks the example's scoring rules and streams in
// the ways a user might: Check (as tideline spec check and the scorer run
// it) names each at its place in the file, as spec's own errors are.
func TestCheckNamesRuleErrors(t *testing.T) {
	data, err := os.ReadFile("../examples/payments/tideline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ from, to, want string }{
		{`"card_payments_1m >= 5"`, `"card_paymnts_1m >= 5"`, `rule card_testing: unknown field "card_paymnts_1m" (did you mean card_payments_1m?)`},
		{`"amount >= 3000", weight: 30`, `"amount + 1", weight: 30`, "rule big_amount: when is decimal, not a condition"},
		{"decisions: decisions\n  threshold", "decisions: payments\n  threshold", "scoring decisions: stream payments has no string field decision"},
	} {
		src := strings.Replace(string(data), tt.from, tt.to, 1)
		if src == string(data) {
			t.Fatalf("%q is not in the example", tt.from)
		}
		s, err := spec.Parse("tideline.yaml", []byte(src))
		if err != nil {
			t.Fatalf("%s -> %s: the spec itself is fine, got %v", tt.from, tt.to, err)
		}
		err = Check(s.Scoring)
		var list spec.ErrorList
		if !errors.As(err, &list) || !strings.Contains(list[0].Error(), tt.want) {
			t.Fatalf("%s -> %s: got %v, want %q", tt.from, tt.to, err, tt.want)
		}
		line := 1 + strings.Count(src[:strings.Index(src, tt.to)], "\n")
		if list[0].File != "tideline.yaml" || list[0].Line != line {
			t.Errorf("%s -> %s: error at line %d, the change is at line %d", tt.from, tt.to, list[0].Line, line)
		}
	}
	s, err := spec.Parse("tideline.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(s.Scoring); err != nil {
		t.Fatalf("the example: %v", err)
	}
}
