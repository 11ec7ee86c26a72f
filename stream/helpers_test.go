package stream

import (
	"os"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"tideline/spec"
)

// fastSpecYAML is the payments example with windows, lateness and idle
// timeouts shrunk to seconds, so tests see windows close quickly.
func fastSpecYAML(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile("../examples/payments/tideline.yaml")
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

func fastSpec(t testing.TB) *spec.Spec {
	t.Helper()
	s, err := spec.Parse("fast.yaml", []byte(fastSpecYAML(t)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jetstreamConfig(name string, subjects ...string) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: name, Subjects: subjects}
}
