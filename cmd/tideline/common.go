package main

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"tideline/spec"
)

// commonFlags are the flags every part that reads the spec or talks to
// NATS takes.
type commonFlags struct {
	specPath string
	natsURL  string
}

func (c *commonFlags) register(f *pflag.FlagSet) {
	f.StringVar(&c.specPath, "spec", envOr("TIDELINE_SPEC", "examples/payments/tideline.yaml"), "pipeline spec file (env TIDELINE_SPEC)")
	f.StringVar(&c.natsURL, "nats", envOr("TIDELINE_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (env TIDELINE_NATS_URL)")
}

func (c *commonFlags) spec() (*spec.Spec, error) {
	s, err := spec.Load(c.specPath)
	var list spec.ErrorList
	if errors.As(err, &list) {
		return nil, fmt.Errorf("the spec has %d error(s); run `tideline spec check %s`:\n%s", len(list), c.specPath, list)
	}
	return s, err
}

func (c *commonFlags) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(c.natsURL, nats.Name("tideline "+name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach NATS at %s: %w; is it running (`tideline dev` starts one), or set --nats / TIDELINE_NATS_URL", c.natsURL, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("cannot use JetStream on %s: %w", c.natsURL, err)
	}
	return nc, js, nil
}

// newRegistry is a Prometheus registry with the Go and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
