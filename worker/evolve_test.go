package worker

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"

	"tideline/activities"
	"tideline/examples/payments"
	"tideline/internal/stacktest"
	"tideline/lake"
	"tideline/spec"
	"tideline/stream"
	"tideline/workflows"
)

// evolveSpec is the fast payments spec with each old text replaced by its
// new one, in pairs.
func evolveSpec(t *testing.T, pairs ...string) *spec.Spec {
	t.Helper()
	text := stacktest.FastSpecYAML(t)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("the fast spec has no %q", pairs[i])
		}
		text = strings.Replace(text, pairs[i], pairs[i+1], 1)
	}
	s, err := spec.Parse("evolved.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const cardPresent = "      card_present: {type: bool}\n"

var (
	// v2 adds an optional field and a view grouped by it.
	v2Changes = []string{
		cardPresent, cardPresent + "      device:       {type: string, max_length: 16}\n",
		"\nviews:\n", "\nviews:\n  device_minute:\n    stream: payments\n    window: 5s\n    lateness: 1s\n    group_by: [device]\n    measures:\n      payments: count\n      amount: sum(amount)\n\n",
	}
	// v3 adds an enum value.
	v3Changes = append(append([]string{}, v2Changes...), "enum: [USD, EUR, GBP, JPY, BRL]", "enum: [USD, EUR, GBP, JPY, BRL, CHF]")
)

// retries counts activity attempts after the first in a workflow's
// history, and failed attempts.
func (h *harness) retries(id string) (retried, failed int) {
	h.t.Helper()
	it := h.tc.GetWorkflowHistory(h.t.Context(), id, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			h.t.Fatal(err)
		}
		if a := e.GetActivityTaskStartedEventAttributes(); a != nil && a.Attempt > 1 {
			retried++
		}
		if e.GetActivityTaskFailedEventAttributes() != nil || e.GetActivityTaskTimedOutEventAttributes() != nil {
			failed++
		}
	}
	return retried, failed
}

// TestSchemaEvolution writes events under contract v1, then v2 adds an
// optional field and a view grouped by it, then v3 adds an enum value:
// every view equals the oracle over the whole range, with no activity
// retried, and the new view's history is not recorded as corrections. A
// breaking v4 is refused with a message naming the field, and compaction
// under it commits nothing.
func TestSchemaEvolution(t *testing.T) {
	h := startHarness(t)
	ctx := t.Context()
	_, stop := h.startWorkerWith(h.spec)

	// v1.
	h.generate(stream.GenOptions{Count: 4000 / scale, OOO: 0.05, Late: 0.02, Dup: 0.01, Invalid: 0.01, Seed: 21})
	h.waitSpeed()
	if res := h.compact("evolve-v1"); len(res.Failed) > 0 {
		t.Fatalf("v1: %v", res.Failed)
	}

	// v2, with the speed layer and the worker restarted on it, as a user
	// deploys a spec change. Its events start inside v1's last partition,
	// so that partition holds files of both contracts.
	restart := func(s *spec.Spec) {
		t.Helper()
		stop()
		if err := lake.CheckSpec(ctx, h.store, s); err != nil {
			t.Fatalf("a compatible change is refused: %v", err)
		}
		if err := stream.Setup(ctx, h.js, s, stream.SetupOptions{}); err != nil {
			t.Fatal(err)
		}
		h.stopSpeed()
		h.startSpeed(s)
		_, stop = h.startWorkerWith(s)
		h.spec = s
	}
	v2 := evolveSpec(t, v2Changes...)
	restart(v2)
	var since int64
	h.proc.Operator(func(op *stream.Operator) { since = op.Since()["device_minute"] })
	devices := []string{"ios", "android", "web"}
	withDevice := func(r *rand.Rand, i int, ts time.Time) map[string]any {
		e := spread(r, i, ts)
		if i%5 != 0 {
			e["device"] = devices[i%3]
		}
		return e
	}
	h.generateWith(stream.GenOptions{Count: 3000 / scale, OOO: 0.05, Late: 0.02, Dup: 0.01, Invalid: 0.01, Seed: 22, Start: genStart.Add(70 * time.Second / scale)}, withDevice)
	h.waitSpeed()
	if res := h.compact("evolve-v2"); len(res.Failed) > 0 {
		t.Fatalf("v2: %v", res.Failed)
	}

	// v3.
	restart(evolveSpec(t, v3Changes...))
	withCHF := func(r *rand.Rand, i int, ts time.Time) map[string]any {
		e := withDevice(r, i, ts)
		if i%4 == 0 {
			e["currency"] = "CHF"
		}
		return e
	}
	h.generateWith(stream.GenOptions{Count: 3000 / scale, OOO: 0.05, Dup: 0.01, Invalid: 0.01, Seed: 23, Start: genStart.Add(130 * time.Second / scale)}, withCHF)
	h.waitSpeed()
	if res := h.compact("evolve-v3"); len(res.Failed) > 0 {
		t.Fatalf("v3: %v", res.Failed)
	}

	// Every view, the old ones and the new, equals the oracle over every
	// event of every contract.
	h.checkBatch(h.oracle())
	for _, id := range []string{"evolve-v1", "evolve-v2", "evolve-v3"} {
		if retried, failed := h.retries(id); retried+failed > 0 {
			t.Errorf("compaction %s: %d activity attempt(s) retried, %d failed", id, retried, failed)
		}
	}
	// The speed layer has held device_minute since it started on v2; the
	// windows before are history, not corrections.
	_, paths := h.lakeFiles(lake.CorrectionsTable("device_minute"))
	if len(paths) > 0 {
		var before int
		if err := h.db.QueryRowContext(ctx, "SELECT count(*) FROM "+readParquet(paths)+" WHERE kind = 'speed' AND window_start < make_timestamptz($1)", since).Scan(&before); err != nil {
			t.Fatal(err)
		}
		if before > 0 {
			t.Errorf("device_minute: %d speed corrections of windows before the speed layer held the view (%s)", before, time.UnixMicro(since).UTC())
		}
	}
	if since <= genStart.UnixMicro() {
		t.Errorf("device_minute is held since %s, before the v1 events", time.UnixMicro(since).UTC())
	}

	// Maintain, through Temporal: Optimize rewrites partitions that hold
	// files of two and three contracts into one file each, in v3's
	// columns, and the views recomputed from them still equal the oracle.
	var m workflows.MaintainResult
	if err := h.run("maintain-evolved", workflows.Maintain, workflows.MaintainInput{Stream: "payments"}, &m); err != nil {
		t.Fatalf("maintain: %v", err)
	}
	if len(m.Optimize.Partitions) == 0 || m.Optimize.FilesIn <= len(m.Optimize.Partitions) {
		t.Errorf("Optimize rewrote %d partitions from %d files", len(m.Optimize.Partitions), m.Optimize.FilesIn)
	}
	snap, err := lake.OpenTable(h.store, lake.RawTable("payments")).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Optimize.Partitions {
		if n := len(snap.In(p)); n != 1 {
			t.Errorf("raw partition %s holds %d files after Optimize", p, n)
		}
	}
	if res := h.compact("evolve-optimized"); len(res.Failed) > 0 || len(res.Recomputed) == 0 {
		t.Errorf("after Optimize: recomputed %d, failed %v", len(res.Recomputed), res.Failed)
	}
	h.checkBatch(h.oracle())

	// v4 breaks: device becomes an int.
	v4 := evolveSpec(t, append(append([]string{}, v3Changes...), "device:       {type: string, max_length: 16}", "device:       {type: int}")...)
	err = lake.CheckSpec(ctx, h.store, v4)
	if !errors.Is(err, lake.ErrIncompatible) {
		t.Fatalf("v4 is not refused: %v", err)
	}
	for _, want := range []string{"field device", "type: string", "type: int", "raw/payments", "commit "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q:\n%v", want, err)
		}
	}
	// A worker run with it anyway commits nothing.
	raw := lake.OpenTable(h.store, lake.RawTable("payments"))
	before, err := raw.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	_, stop = h.startWorkerWith(v4)
	h.generateWith(stream.GenOptions{Count: 100, Seed: 24, Start: genStart.Add(200 * time.Second / scale)}, func(r *rand.Rand, i int, ts time.Time) map[string]any {
		return payments.Payment(r, i, ts)
	})
	var res workflows.CompactionResult
	err = h.run("evolve-v4", workflows.Compaction, workflows.CompactionInput{Stream: "payments"}, &res)
	if err == nil || !strings.Contains(err.Error(), activities.ErrTypeSpec) && !strings.Contains(err.Error(), "field device") {
		t.Errorf("compaction under v4: %v", err)
	}
	after, err := raw.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Version != before.Version {
		t.Errorf("compaction under v4 changed the raw table: version %d -> %d", before.Version, after.Version)
	}
	if retried, _ := h.retries("evolve-v4"); retried > 0 {
		t.Errorf("the refused compaction was retried %d time(s)", retried)
	}
}
