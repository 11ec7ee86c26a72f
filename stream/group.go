package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/spec"
)

// A partitioned stream's speed layer runs as a group of processes, each
// running a Processor for every partition it holds a lease on. The group
// keeps itself in a KV bucket (GroupBucket) whose entries live LeaseTTL:
//
//   - every member writes <stream>.member.<name> each beat (LeaseTTL/5);
//     the live members are the keys there;
//   - partition i belongs to the i-th of the members in name order,
//     modulo their number: every member computes the same assignment;
//   - a member processes a partition only while it holds its lease,
//     <stream>.lease.<i>, taken with an atomic create and renewed each beat
//     with a compare-and-set on its revision. A member gives up a partition
//     that is no longer its own by stopping the processor (which takes a
//     last checkpoint) and only then deleting the lease; a member that dies
//     gives it up when the lease ages out of the bucket.
//
// So at most one process folds a partition at a time, and a partition that
// moves resumes from its checkpoint in the process it moves to. Decision:
// Synadia's partitioned consumer groups (orbit.go/pcgroups) were the first
// choice, but do not fit the speed layer: a static group pins a partition to
// a named member, so a partition cannot move to another process when its
// member dies, and an elastic group copies the stream into a work queue, so a
// partition could no longer be replayed from its checkpoint by stream
// sequence. The leases here take one KV bucket and compare-and-set.

// GroupBucket is the KV bucket of speed-layer group membership and leases.
const GroupBucket = "tl_group"

// GroupOptions tune a Group.
type GroupOptions struct {
	// Name is this member's name, unique in the group (default:
	// <host>-<pid>).
	Name string
	// LeaseTTL is how long a member's leases outlive its last beat: how
	// long a dead member's partitions wait before another takes them
	// (default 5s).
	LeaseTTL  time.Duration
	Processor ProcessorOptions
	Log       *slog.Logger
}

// Group is one member of a partitioned stream's speed layer.
type Group struct {
	st  *spec.Stream
	nc  *nats.Conn
	js  jetstream.JetStream
	o   GroupOptions
	log *slog.Logger
	kv  jetstream.KeyValue

	mu   sync.Mutex
	held map[int]*heldPartition
}

type heldPartition struct {
	rev     uint64    // the lease's revision, after the last renewal
	renewed time.Time // of the last successful renewal
	cancel  context.CancelFunc
	done    chan error // the processor's Run result
	lost    bool       // the lease is known to be another's, or gone
	proc    *Processor
}

// NewGroup returns a member of st's group. An unpartitioned stream's group
// has one partition, the whole stream: every process can run a member, and
// one of them processes it, another taking over when it dies.
func NewGroup(nc *nats.Conn, js jetstream.JetStream, st *spec.Stream, o GroupOptions) *Group {
	if o.Name == "" {
		host, _ := os.Hostname()
		o.Name = host + "-" + strconv.Itoa(os.Getpid())
	}
	o.Name = strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_").Replace(o.Name)
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Group{st: st, nc: nc, js: js, o: o, log: o.Log.With("stream", st.Name, "member", o.Name), held: map[int]*heldPartition{}}
}

// partitions is how many leases the group hands out: an unpartitioned
// stream is one partition, processed whole by one member at a time.
func (g *Group) partitions() int { return max(g.st.Partitions, 1) }

// Held is the partitions this member processes now, in order.
func (g *Group) Held() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]int, 0, len(g.held))
	for p := range g.held {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func (g *Group) memberKey() string     { return g.st.Name + ".member." + g.o.Name }
func (g *Group) leaseKey(p int) string { return g.st.Name + ".lease." + strconv.Itoa(p) }

// Run takes part in the group until ctx ends, then stops its processors
// (each takes a last checkpoint) and gives up its leases and membership.
func (g *Group) Run(ctx context.Context) error {
	if err := g.open(ctx); err != nil {
		return err
	}
	g.log.Info("joining the speed-layer group", "partitions", g.partitions(), "lease_ttl", g.o.LeaseTTL)
	beat := time.NewTicker(g.o.LeaseTTL / 5)
	defer beat.Stop()
	for {
		g.beat(ctx)
		select {
		case <-ctx.Done():
			g.leave()
			return nil
		case <-beat.C:
		}
	}
}

// open opens the group bucket, making it if it is not there. The first
// member makes it, and its TTL is every member's: a member that took a
// longer one than the bucket's could believe it held a lease another had
// already taken. It is on disk, so a NATS restart keeps the leases.
func (g *Group) open(ctx context.Context) error {
	var kv jetstream.KeyValue
	err := retryTimeouts(ctx, func() (err error) {
		kv, err = g.js.KeyValue(ctx, GroupBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = g.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket: GroupBucket, Description: "tideline speed-layer group members and partition leases",
				TTL: g.o.LeaseTTL, Storage: jetstream.FileStorage, Replicas: g.replicas(ctx),
			})
			if errors.Is(err, jetstream.ErrBucketExists) {
				kv, err = g.js.KeyValue(ctx, GroupBucket)
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("cannot open the group bucket %s: %w", GroupBucket, err)
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("cannot read the group bucket %s: %w", GroupBucket, err)
	}
	if ttl := status.TTL(); ttl != g.o.LeaseTTL {
		g.log.Warn("the group's lease TTL is the bucket's, not this member's; give every member the same --lease-ttl", "bucket_ttl", ttl, "lease_ttl", g.o.LeaseTTL)
		g.o.LeaseTTL = ttl
	}
	g.kv = kv
	return nil
}

// replicas follows the stream's: a group on a cluster survives a node.
func (g *Group) replicas(ctx context.Context) int {
	s, err := g.js.Stream(ctx, StreamName(g.st))
	if err != nil {
		return 1
	}
	return s.CachedInfo().Config.Replicas
}

// beat renews membership and leases, and moves partitions to match the
// assignment.
func (g *Group) beat(ctx context.Context) {
	if _, err := g.kv.Put(ctx, g.memberKey(), []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		g.log.Warn("cannot renew group membership; retrying", "err", err)
	}
	members, err := g.members(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
		// Deleted (or lost with a server's memory): made again, and the
		// leases held are renewed into it below, or lost.
		if oerr := g.open(ctx); oerr != nil {
			g.log.Warn("the group bucket is gone and cannot be made again; retrying", "err", oerr)
		}
	}
	if err != nil {
		g.log.Warn("cannot list group members; keeping the partitions held", "err", err)
	}
	mine := map[int]bool{}
	if err == nil {
		for p := range g.partitions() {
			if i := slices.Index(members, g.o.Name); i >= 0 && p%len(members) == i {
				mine[p] = true
			}
		}
	}
	g.mu.Lock()
	held := maps.Clone(g.held)
	g.mu.Unlock()
	for p, h := range held {
		select {
		case err := <-h.done: // the processor stopped by itself
			g.log.Warn("partition processor stopped; giving the partition up", "partition", p, "err", err)
			g.drop(ctx, p, h, false)
			continue
		default:
		}
		g.renew(ctx, p, h)
		switch {
		case h.lost || time.Since(h.renewed) > g.o.LeaseTTL*4/5:
			// Another may hold it now, or soon: stop at once, with no
			// checkpoint (Lease refuses it).
			g.log.Warn("lease lost; stopping the partition", "partition", p)
			g.drop(ctx, p, h, false)
		case err == nil && !mine[p]:
			g.log.Info("partition assigned to another member; handing it over", "partition", p, "members", len(members))
			g.drop(ctx, p, h, true)
		}
	}
	for p := range mine {
		g.mu.Lock()
		_, ok := g.held[p]
		g.mu.Unlock()
		if !ok {
			g.take(ctx, p)
		}
	}
}

// members lists the live members, by name.
func (g *Group) members(ctx context.Context) ([]string, error) {
	l, err := g.kv.ListKeysFiltered(ctx, g.st.Name+".member.*")
	if err != nil {
		return nil, err
	}
	var out []string
	prefix := g.st.Name + ".member."
	for k := range l.Keys() {
		out = append(out, strings.TrimPrefix(k, prefix))
	}
	if !slices.Contains(out, g.o.Name) {
		return nil, errors.New("this member's own entry is not listed yet")
	}
	slices.Sort(out)
	return out, nil
}

// renew moves the lease of p on by a compare-and-set on its revision.
func (g *Group) renew(ctx context.Context, p int, h *heldPartition) {
	// The lease runs from when the server stored the renewal, which is
	// after this: counting from here errs on the safe side.
	start := time.Now()
	rev, err := g.kv.Update(ctx, g.leaseKey(p), []byte(g.o.Name), h.rev)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case err == nil:
		h.rev, h.renewed = rev, start
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyNotFound):
		h.lost = true // aged out (this member was away) or taken
	default:
		g.log.Warn("cannot renew a partition lease; retrying", "partition", p, "err", err)
	}
}

// take tries to lease partition p and start its processor.
func (g *Group) take(ctx context.Context, p int) {
	start := time.Now()
	rev, err := g.kv.Create(ctx, g.leaseKey(p), []byte(g.o.Name))
	if errors.Is(err, jetstream.ErrKeyExists) {
		// Held under this member's own name: by the process this one
		// replaces (it was killed and started again), which holds nothing
		// now. Taken over by compare-and-set, at once rather than after
		// the TTL. Names are unique in a group, so no live member loses it.
		if e, gerr := g.kv.Get(ctx, g.leaseKey(p)); gerr == nil && string(e.Value()) == g.o.Name {
			start = time.Now()
			rev, err = g.kv.Update(ctx, g.leaseKey(p), []byte(g.o.Name), e.Revision())
		}
	}
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongLastSequence(err) {
			g.log.Warn("cannot take a partition lease; retrying", "partition", p, "err", err)
		}
		return // held by another until it hands it over or its lease ages out
	}
	pctx, cancel := context.WithCancel(ctx)
	h := &heldPartition{rev: rev, renewed: start, cancel: cancel, done: make(chan error, 1)}
	o := g.o.Processor
	if g.st.Partitioned() {
		o.Part = p + 1
	}
	o.Lease = func(ctx context.Context) error {
		g.mu.Lock()
		lost, renewed := h.lost, h.renewed
		g.mu.Unlock()
		if lost || time.Since(renewed) > g.o.LeaseTTL*4/5 {
			return fmt.Errorf("the lease of partition %d of stream %s is lost: another member may hold it", p, g.st.Name)
		}
		return nil
	}
	h.proc = NewProcessor(g.nc, g.js, g.st, o)
	g.mu.Lock()
	g.held[p] = h
	g.mu.Unlock()
	g.log.Info("took partition", "partition", p)
	go func() { h.done <- h.proc.Run(pctx) }()
}

// isWrongLastSequence reports a compare-and-set that lost: the key moved
// on since it was read.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Operators calls f with the operator of each partition held now, under
// its processor's lock, for tests and status.
func (g *Group) Operators(f func(*Operator)) {
	g.mu.Lock()
	held := slices.Collect(maps.Values(g.held))
	g.mu.Unlock()
	for _, h := range held {
		h.proc.Operator(f)
	}
}

// Consumed is how many messages the processors of the partitions held now
// have consumed since they started.
func (g *Group) Consumed() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var n uint64
	for _, h := range g.held {
		for i := range h.proc.counts {
			n += h.proc.counts[i].Load()
		}
	}
	return n
}

// drop stops the processor of p; handover waits for its last checkpoint
// and then deletes the lease, so the next member starts from it at once.
func (g *Group) drop(ctx context.Context, p int, h *heldPartition, handover bool) {
	h.cancel()
	if handover {
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
			g.log.Warn("partition processor did not stop within 30s; leaving its lease to age out", "partition", p)
			handover = false
		}
	}
	g.mu.Lock()
	delete(g.held, p)
	g.mu.Unlock()
	if handover {
		if err := g.kv.Delete(ctx, g.leaseKey(p), jetstream.LastRevision(h.rev)); err != nil {
			g.log.Warn("cannot give up a partition lease; it ages out", "partition", p, "err", err)
		}
	}
}

// leave stops every processor, with a last checkpoint each, then gives up
// the leases and the membership.
func (g *Group) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g.mu.Lock()
	held := maps.Clone(g.held)
	g.mu.Unlock()
	var wg sync.WaitGroup
	for p, h := range held {
		wg.Go(func() { g.drop(ctx, p, h, true) })
	}
	wg.Wait()
	if err := g.kv.Delete(ctx, g.memberKey()); err != nil {
		g.log.Warn("cannot leave the group; the membership ages out", "err", err)
	}
}
