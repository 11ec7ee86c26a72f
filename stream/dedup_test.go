package stream

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"tideline/examples/payments"
)

// TestDedupSurvivesRestartWithoutIDs runs a processor whose checkpoints
// leave the dedup ids out (as large ones do), restarts it, and then
// republishes earlier events under new message ids, which JetStream cannot
// catch: the rebuilt dedup set must, so the answer stays the oracle's.
func TestDedupSurvivesRestartWithoutIDs(t *testing.T) {
	_, nc, js := natsForTest(t)
	ctx := t.Context()
	s := fastSpec(t)
	st := s.Stream("payments")
	if err := Setup(ctx, js, s, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.ndjson")
	f, _ := os.Create(out)
	if _, err := Generate(ctx, js, st, payments.Payment, GenOptions{Count: 6000, OOO: 0.05, Seed: 3, Start: genStart, Out: f}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run := func() (stop func()) {
		pctx, cancel := context.WithCancel(ctx)
		p := NewProcessor(nc, js, st, ProcessorOptions{MaxCheckpointIDs: 1})
		done := make(chan error, 1)
		go func() { done <- p.Run(pctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	stop := run()
	time.Sleep(1500 * time.Millisecond) // everything applied and checkpointed; windows still open
	stop()
	// Republish the last 300 events under fresh message ids: duplicates by
	// event id that only the processor can see.
	main, _ := js.Stream(ctx, StreamName(st))
	info, _ := main.Info(ctx)
	for seq := info.State.LastSeq - 299; seq <= info.State.LastSeq; seq++ {
		m, err := main.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(m.Subject)
		msg.Data = m.Data
		msg.Header.Set(nats.MsgIdHdr, "again-"+m.Header.Get(nats.MsgIdHdr))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	defer run()()
	waitFinal(t, js, s, loadOracle(t, st, out), 60*time.Second)
}
