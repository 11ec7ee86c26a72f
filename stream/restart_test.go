package stream

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/examples/payments"
	"tideline/internal/devstack"
)

// TestProcessorSurvivesNATSRestart restarts the NATS server under a running
// processor, with events published before and after, and still gets the
// oracle's answer.
func TestProcessorSurvivesNATSRestart(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := devstack.StartNATS(devstack.NATSOptions{Dir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second)) // as tideline stream connects
	s := fastSpec(t)
	st := s.Stream("payments")
	if err := Setup(ctx, js, s, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.ndjson")
	f, _ := os.Create(out)
	gen := func(seed uint64, start time.Time) {
		if _, err := Generate(ctx, js, st, payments.Payment, GenOptions{Count: 5000, OOO: 0.05, Invalid: 0.01, Seed: seed, Start: start, Out: f}); err != nil {
			t.Fatal(err)
		}
	}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	p := NewProcessor(nc, js, st, ProcessorOptions{})
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	gen(1, genStart)
	time.Sleep(1500 * time.Millisecond) // a checkpoint or two
	ns.Stop()
	time.Sleep(500 * time.Millisecond)
	if ns, err = devstack.StartNATS(devstack.NATSOptions{Dir: dir, Port: port}); err != nil {
		t.Fatal(err)
	}
	defer ns.Stop()
	// Wait for the client to reconnect, then publish more.
	for deadline := time.Now().Add(10 * time.Second); !nc.IsConnected(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("client did not reconnect")
		}
	}
	// Far enough ahead that no event of this batch falls in a window the
	// idle watermark closed while the server was away: those would be
	// late, rightly, and the oracle does not model lateness.
	gen(2, genStart.Add(30*time.Second))
	f.Close()
	waitFinal(t, js, s, loadOracle(t, st, out), 60*time.Second)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
