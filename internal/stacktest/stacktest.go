// Package stacktest holds what tests against the real stack share: the
// payments example shrunk to seconds, so windows close and partitions seal
// within a test.
package stacktest

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"tideline/spec"
)

// FastSpecYAML is the payments example with windows, lateness and idle
// timeouts shrunk to seconds and partitions to a minute.
func FastSpecYAML(t testing.TB) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(here), "../../examples/payments/tideline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(
		"window: 1m", "window: 5s",
		"lateness: 30s", "lateness: 1s",
		"window: {size: 5m, hop: 1m}", "window: {size: 10s, hop: 5s}",
		"out_of_orderness: 5s", "out_of_orderness: 500ms",
		"idle_timeout: 5s", "idle_timeout: 200ms",
		"partition: 5m", "partition: 1m",
	).Replace(string(data))
}

// FastSpec parses FastSpecYAML.
func FastSpec(t testing.TB) *spec.Spec {
	t.Helper()
	s, err := spec.Parse("fast.yaml", []byte(FastSpecYAML(t)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
