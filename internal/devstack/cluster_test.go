package devstack

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSClusterKeepsStreamsThroughANodeLoss starts a 3-node cluster,
// makes a stream and a KV bucket of 3 replicas, stops a node and keeps
// writing through the others, then starts it again: nothing is lost, and
// the client never needed the node it lost.
func TestNATSClusterKeepsStreamsThroughANodeLoss(t *testing.T) {
	c, err := StartNATSCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "s", Subjects: []string{"s.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		t.Helper()
		for i := range n {
			for {
				_, err := js.Publish(ctx, "s.x", []byte{byte(i)})
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond) // a new leader is being elected
			}
		}
	}
	publish(100)
	// Stop the node the client is on: it moves to another. The URL is
	// read once: read again after the stop, it named the node the client
	// had moved to, and that was stopped too, leaving no quorum (the
	// publishes below then timed out, in about half the runs).
	on := nc.ConnectedUrl()
	for i, n := range c.Nodes {
		if n.Server.ClientURL() == on {
			c.StopNode(i)
			defer func() {
				if err := c.StartNode(i); err != nil {
					t.Error(err)
				}
			}()
			break
		}
	}
	publish(100)
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 200 || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream holds %d messages with %d other replicas, want 200 and 2", info.State.Msgs, len(info.Cluster.Replicas))
	}
}
