package faults

import (
	"fmt"
	"testing"
	"time"
)

// TestCluster runs the stack on a 3-node NATS cluster (every stream and KV
// bucket with 3 replicas), with two workers sharing the task queue and two
// serve replicas, and faults that a cluster must absorb: the node leading
// the payments stream stopped while the others carry on (twice; the first
// started again in between), a kill -9 of each worker in turn, of the
// speed layer and of a serve replica. It then
// holds every view to the oracle through both serve replicas, which must
// answer alike, with corrections accounting for exactly the late events.
//
// The speed layer is still one processor per stream (issue 19's
// partitioned speed layer is not built): here it runs on the cluster.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("the cluster suite runs the whole stack for about 2 minutes; not with -short")
	}
	s := startStackWith(t, topology{natsNodes: 3, workers: 2, serves: 2})
	for _, name := range []string{"payments", "KV_tl_checkpoints", "KV_tl_view_card_sessions"} {
		st, err := s.js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("stream %s has %d replicas, want 3", name, r)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.keepLogs()
		}
	})
	faults := []struct {
		between bool
		do      func()
	}{
		{false, func() { s.kill9("worker") }},
		{true, func() { s.stopNATSNode(s.streamLeader()) }},
		{false, func() { s.kill9("worker2") }},
		{false, func() { s.kill9("stream") }},
		{true, func() { s.startNATSNodes() }},
		{false, func() { s.kill9("serve2") }},
		{true, func() { s.stopNATSNode(s.streamLeader()) }},
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
