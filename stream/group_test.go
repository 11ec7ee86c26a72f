package stream

import (
	"context"
	"database/sql"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/examples/payments"
	"tideline/internal/devstack"
	"tideline/internal/oracle"
	"tideline/internal/stacktest"
	"tideline/spec"
)

// partitionedSpec is the fast spec with its payments stream in n
// partitions.
func partitionedSpec(t *testing.T, n int) *spec.Spec {
	t.Helper()
	y := stacktest.PartitionedSpecYAML(t, n)
	s, err := spec.Parse("partitioned.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Stream("payments").Partitioned() {
		t.Fatal("the spec's payments stream is not partitioned")
	}
	return s
}

// mergedRows reads every window of a view near genStart as readers do (ReadSpeedWindows:
// partial windows merged), in the oracle's form, and counts those not final.
func mergedRows(t *testing.T, js jetstream.JetStream, v *spec.View) (map[string]oracle.Row, int) {
	t.Helper()
	ups, err := ReadSpeedWindows(t.Context(), js, v, genStart.Add(-time.Hour).UnixMicro(), genStart.Add(3*time.Hour).UnixMicro())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]oracle.Row{}
	open := 0
	for _, u := range ups {
		if !u.Final {
			open++
		}
		var j UpdateJSON
		if err := json.Unmarshal(u.AppendJSON(nil, 0), &j); err != nil {
			t.Fatal(err)
		}
		r := oracleRow(t, v, j)
		out[oracle.Key(r.Start, r.Dims)] = r
	}
	return out, open
}

// TestPartitionedSpeedLayerMatchesOracle runs a 4-partition stream's speed
// layer as a group on real JetStream: two members split the partitions; a
// third joins and one leaves while events still come, and the partitions
// move with their checkpoints. The merged windows of every view equal
// DuckDB's answer over everything generated (disorder, duplicates without
// message ids, malformed events), and an event published
// under another id's token is dead-lettered, not counted.
func TestPartitionedSpeedLayerMatchesOracle(t *testing.T) {
	_, nc, js := natsForTest(t)
	ctx := t.Context()
	s := partitionedSpec(t, 4)
	st := s.Stream("payments")
	if err := Setup(ctx, js, s, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := Setup(ctx, js, s, SetupOptions{}); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	dir := t.TempDir()
	gen := func(name string, start time.Time, seed uint64) (string, GenStats) {
		out := filepath.Join(dir, name)
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		stats, err := Generate(ctx, js, st, payments.Payment, GenOptions{Count: 12000, OOO: 0.05, Dup: 0.02, Invalid: 0.005, Seed: seed, Start: start, Out: f})
		if err != nil {
			t.Fatal(err)
		}
		return out, stats
	}
	out1, stats1 := gen("one.ndjson", genStart, 7)

	members := map[string]context.CancelFunc{}
	groups := map[string]*Group{}
	done := map[string]chan error{}
	join := func(name string) {
		gctx, cancel := context.WithCancel(ctx)
		g := NewGroup(nc, js, st, GroupOptions{Name: name, LeaseTTL: 4 * time.Second})
		ch := make(chan error, 1)
		members[name], groups[name], done[name] = cancel, g, ch
		go func() { ch <- g.Run(gctx) }()
	}
	leave := func(name string) {
		members[name]()
		if err := <-done[name]; err != nil {
			t.Fatal(err)
		}
	}
	join("a")
	join("b")
	waitSplit := func(names ...string) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			total, each := 0, true
			for _, n := range names {
				h := len(groups[n].Held())
				total += h
				each = each && h == st.Partitions/len(names)
			}
			if total == st.Partitions && each {
				return
			}
			if time.Now().After(deadline) {
				for _, n := range names {
					t.Logf("%s holds %v", n, groups[n].Held())
				}
				t.Fatal("partitions not split evenly among the members within 30s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitSplit("a", "b")
	t.Logf("a holds %v, b holds %v", groups["a"].Held(), groups["b"].Held())
	db := loadOracle(t, st, out1)
	waitMerged(t, js, s, db, 60*time.Second)

	// A third member joins, one leaves; then more events.
	join("c")
	leave("a")
	waitSplit("b", "c")
	t.Logf("after the move: b holds %v, c holds %v", groups["b"].Held(), groups["c"].Held())
	out2, stats2 := gen("two.ndjson", genStart.Add(time.Hour), 8)
	forged := payments.Payment(rand.New(rand.NewPCG(1, 2)), 0, genStart.Add(time.Hour))
	forged["payment_id"] = "forged-1"
	bad, _ := json.Marshal(forged)
	if _, err := js.Publish(ctx, "payments.events."+spec.IDToken("another-id"), bad); err != nil {
		t.Fatal(err)
	}
	db2 := loadOracle(t, st, out1, out2)
	waitMerged(t, js, s, db2, 60*time.Second)
	leave("b")
	leave("c")

	dlq, err := js.Stream(ctx, DLQStreamName(st))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := dlq.Info(ctx)
	if want := stats1.Invalid + stats2.Invalid + 1; int(info.State.Msgs) != want {
		t.Fatalf("dead-letter stream has %d messages, want %d (the generator's invalid ones and the forged token)", info.State.Msgs, want)
	}
	var reason string
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(m.Data), "forged-1") {
			reason = m.Header.Get(DLQHeaderReason)
		}
	}
	if !strings.Contains(reason, "token of id \"forged-1\"") {
		t.Fatalf("the forged token's dead letter says %q", reason)
	}
}

// waitMerged polls until every merged window of every view is final and
// equals the oracle, or fails with the difference.
func waitMerged(t *testing.T, js jetstream.JetStream, s *spec.Spec, db *sql.DB, timeout time.Duration) {
	t.Helper()
	waitRows(t, s, db, timeout, func(v *spec.View) (map[string]oracle.Row, int) { return mergedRows(t, js, v) })
}

// TestSetupRacesOnACluster: three processes setting up a partitioned
// stream at once on a 3-node cluster all succeed. JetStream left the
// losers of the race to create a stream unanswered, and they failed with a
// timeout, until Setup asked again.
func TestSetupRacesOnACluster(t *testing.T) {
	c, err := devstack.StartNATSCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	s := partitionedSpec(t, 8)
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			nc, err := nats.Connect(c.URL())
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			errs <- Setup(t.Context(), js, s, SetupOptions{Replicas: 3})
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
