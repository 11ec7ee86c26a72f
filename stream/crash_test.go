package stream

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"tideline/examples/payments"
	"tideline/internal/stacktest"
)

// startStream runs `tideline stream` as a child process that dies with the
// test.
func startStream(t *testing.T, bin, natsURL, specPath, logPath string) *exec.Cmd {
	t.Helper()
	return stacktest.Start(t, bin, logPath, nil, "stream", "--nats", natsURL, "--spec", specPath, "--http", "127.0.0.1:0", "--checkpoint-every", "200ms")
}

// TestCrashResumesExactly kills -9 the real `tideline stream` process in the
// middle of a run, restarts it, and gets the oracle's answer: nothing lost,
// nothing counted twice, every invalid event dead-lettered once.
func TestCrashResumesExactly(t *testing.T) {
	ns, _, js := natsForTest(t)
	ctx := t.Context()
	bin := stacktest.BuildTideline(t)
	dir := t.TempDir()
	specPath := filepath.Join(dir, "tideline.yaml")
	if err := os.WriteFile(specPath, []byte(fastSpecYAML(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	s := fastSpec(t)
	st := s.Stream("payments")
	if err := Setup(ctx, js, s, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.ndjson")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	genDone := make(chan error, 1)
	var stats GenStats
	go func() {
		var err error
		stats, err = Generate(context.Background(), js, st, payments.Payment,
			GenOptions{Rate: 8000, Count: 40000, OOO: 0.05, Dup: 0.01, Invalid: 0.005, Seed: 11, Start: genStart, Out: f})
		genDone <- err
	}()
	logPath := filepath.Join(dir, "stream.log")
	proc := startStream(t, bin, ns.URL, specPath, logPath)
	ckpt, err := js.KeyValue(ctx, CheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	// Kill at the first checkpoint after a second of running: mid-run
	// however fast or slow this machine is.
	time.Sleep(time.Second)
	var m manifest
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if e, err := ckpt.Get(ctx, st.Name); err == nil && json.Unmarshal(e.Value(), &m) == nil && m.Seq > 0 {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("no checkpoint within 30s\n%s", log)
		}
	}
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = proc.Wait()
	if e, err := ckpt.Get(ctx, st.Name); err != nil || json.Unmarshal(e.Value(), &m) != nil || m.Seq >= 40000 {
		t.Fatalf("checkpoint at the kill is at sequence %d (%v); the kill should land mid-run", m.Seq, err)
	}
	t.Logf("killed with the checkpoint at sequence %d", m.Seq)
	time.Sleep(500 * time.Millisecond)
	startStream(t, bin, ns.URL, specPath, logPath)
	if err := <-genDone; err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Logf("generated %+v", stats)
	waitFinal(t, js, s, loadOracle(t, st, out), 90*time.Second)

	dlq, _ := js.Stream(ctx, DLQStreamName(st))
	info, _ := dlq.Info(ctx)
	if int(info.State.Msgs) != stats.Invalid {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("dead-letter stream has %d messages, generator made %d invalid\n%s", info.State.Msgs, stats.Invalid, log)
	}
}
