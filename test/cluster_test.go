package faults

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"tideline/stream"
)

// TestCluster is the scale-out test: the stack on a 3-node NATS cluster
// (every stream and KV bucket with 3 replicas), the payments stream in 8
// partitions shared by 3 `tideline stream` processes, two workers sharing
// the task queue and two serve replicas. Faults a cluster must absorb
// come while events flow: the node leading the payments stream stopped
// while the others carry on (twice; the first started again in between), a
// kill -9 of a stream process that stays dead (its partitions move to the
// others) and of another that restarts, a fourth stream process joining
// (partitions move to it), a kill -9 of each worker in turn and of a serve
// replica. It then holds every view to the oracle through both serve
// replicas, which must answer alike and hold no window twice, with
// corrections accounting for exactly the late events.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("the cluster suite runs the whole stack for about 2 minutes; not with -short")
	}
	s := startStackWith(t, topology{natsNodes: 3, workers: 2, serves: 2, streams: 3, partitions: 8})
	t.Cleanup(func() {
		if t.Failed() {
			s.keepLogs()
		}
	})
	for _, name := range []string{"payments", "KV_tl_checkpoints", "KV_tl_view_card_sessions", "KV_" + stream.GroupBucket} {
		var st jetstream.Stream
		s.waitFor("stream "+name, time.Minute, func() (err error) {
			st, err = s.js.Stream(t.Context(), name)
			return err
		})
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("stream %s has %d replicas, want 3", name, r)
		}
	}
	faults := []struct {
		between bool
		do      func()
	}{
		{false, func() { s.kill9("worker") }},
		{true, func() { s.stopNATSNode(s.streamLeader()) }},
		{false, func() { s.failover("stream2") }},
		{false, func() { s.kill9("worker2") }},
		{true, func() { s.startNATSNodes() }},
		{false, func() { s.join("stream4") }},
		{false, func() { s.kill9("serve2") }},
		{true, func() { s.stopNATSNode(s.streamLeader()) }},
		{false, func() { s.kill9("stream") }},
		{false, func() { s.kill9("worker") }},
	}
	for round, f := range faults {
		if f.between {
			if err := s.generate(round, 3000); err != nil {
				t.Fatal(err)
			}
			f.do()
			continue
		}
		done := make(chan error, 1)
		go func() { done <- s.generate(round, 3000) }()
		time.Sleep(time.Second)
		f.do()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	settle(t, s)
	check(t, s)
}

// failover kills a stream process with SIGKILL for good, and waits until
// every partition has a processor again: the others take its partitions
// once their leases age out. It logs the gap.
func (s *stack) failover(name string) {
	s.t.Logf("fault: kill -9 %s (pid %d), not started again", name, s.procs[name].Process.Pid)
	start := time.Now()
	_ = s.procs[name].Process.Signal(syscall.SIGKILL)
	_, _ = s.procs[name].Process.Wait()
	delete(s.procs, name)
	s.waitPartitions(start, "after the kill")
}

// join starts one more stream process, and waits until every partition
// reports again after the partitions rebalanced onto it.
func (s *stack) join(name string) {
	s.t.Logf("scale out: %s joins the speed layer", name)
	start := time.Now()
	s.start(name)
	s.waitPartitions(start, "after the join")
}

// waitPartitions waits until every partition's processor publishes stats,
// some of them from processors started since start: the partitions that
// moved.
func (s *stack) waitPartitions(start time.Time, what string) {
	st := s.spec.Stream("payments")
	s.waitFor("every partition processed "+what, time.Minute, func() error {
		sub, err := s.nc.SubscribeSync(stream.StatsSubject(st.Name) + ".>")
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		seen, moved := map[string]bool{}, 0
		for deadline := time.Now().Add(3 * time.Second); len(seen) < st.Partitions; {
			m, err := sub.NextMsg(time.Until(deadline))
			if err != nil {
				return fmt.Errorf("%d of %d partitions report", len(seen), st.Partitions)
			}
			x, err := stream.ParseStats(m.Data)
			if err != nil || seen[x.Stream] {
				continue
			}
			seen[x.Stream] = true
			if x.Started.After(start) {
				moved++
			}
		}
		if moved == 0 {
			return fmt.Errorf("no partition has moved yet")
		}
		return nil
	})
	s.t.Logf("every partition processed again %s, %s after it", what, time.Since(start).Round(100*time.Millisecond))
}

// stopNATSNode stops node i of the cluster; clients on it move to another,
// and the streams it led elect another leader.
func (s *stack) stopNATSNode(i int) {
	s.t.Logf("fault: NATS node %d stopped", i)
	s.cluster.StopNode(i)
	s.waitFor("the stream has a leader without the node", 30*time.Second, s.streamAnswers)
}

// startNATSNodes starts every stopped node again on its data; they catch
// up with the others.
func (s *stack) startNATSNodes() {
	for i, n := range s.cluster.Nodes {
		if n != nil {
			continue
		}
		s.t.Logf("fault: NATS node %d started again", i)
		if err := s.cluster.StartNode(i); err != nil {
			s.t.Fatal(err)
		}
	}
	s.waitFor("the stream answers", 30*time.Second, s.streamAnswers)
}

// streamLeader is the node leading the payments stream: the one whose loss
// costs an election.
func (s *stack) streamLeader() int {
	var leader string
	s.waitFor("the payments stream's leader", 30*time.Second, func() (err error) {
		leader, err = s.leaderName()
		return err
	})
	for i, o := range s.cluster.Opts {
		if o.Name == leader {
			return i
		}
	}
	s.t.Fatalf("the payments stream's leader %q is no node of the cluster", leader)
	return -1
}

func (s *stack) streamAnswers() error {
	_, err := s.leaderName()
	return err
}

// leaderName is the name of the node leading the payments stream.
func (s *stack) leaderName() (string, error) {
	st, err := s.js.Stream(s.t.Context(), "payments")
	if err != nil {
		return "", err
	}
	info, err := st.Info(s.t.Context())
	if err != nil {
		return "", err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("no leader")
	}
	return info.Cluster.Leader, nil
}
