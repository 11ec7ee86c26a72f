package stream

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"tideline/internal/stacktest"
	"tideline/spec"
)

func fastSpecYAML(t testing.TB) string { return stacktest.FastSpecYAML(t) }

func fastSpec(t testing.TB) *spec.Spec { return stacktest.FastSpec(t) }

func jetstreamConfig(name string, subjects ...string) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: name, Subjects: subjects}
}
