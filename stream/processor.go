package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tideline/spec"
)

// ProcessorOptions tune a Processor.
type ProcessorOptions struct {
	// FlushEvery is how often changed windows are published (default 25ms).
	FlushEvery time.Duration
	// KVEvery is how often open windows are written to their views' KV
	// buckets (default 5s); final windows are written at every checkpoint.
	KVEvery time.Duration
	// CheckpointEvery and CheckpointEvents bound the work lost in a crash:
	// a checkpoint is taken after either, whichever comes first
	// (defaults 1s and 100,000 events).
	CheckpointEvery  time.Duration
	CheckpointEvents int
	// Part, for a partitioned stream, is the partition to process, plus
	// one; 0 processes an unpartitioned stream whole. Group runs one
	// Processor per partition it holds.
	Part int
	// Lease, when set, is checked before a checkpoint's writes, between
	// its paced batches and before the checkpoint is stored: once it
	// returns an error (the partition's lease moved on to another
	// process), the processor writes no more and stops.
	Lease func(context.Context) error
	// MaxCheckpointIDs: past this many dedup ids a checkpoint records where
	// they start in the stream instead, and a restart reads them back
	// (default 1,000,000).
	MaxCheckpointIDs int
	Log              *slog.Logger
	Metrics          *Metrics
}

func (o *ProcessorOptions) defaults() {
	if o.FlushEvery <= 0 {
		o.FlushEvery = 25 * time.Millisecond
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = time.Second
	}
	if o.MaxCheckpointIDs <= 0 {
		o.MaxCheckpointIDs = 1_000_000
	}
	if o.KVEvery <= 0 {
		o.KVEvery = 5 * time.Second
	}
	if o.CheckpointEvents <= 0 {
		o.CheckpointEvents = 100_000
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Processor runs the speed layer for one stream: it consumes the JetStream
// stream in order from its last checkpoint, feeds the Operator, dead-letters
// invalid events, publishes window updates and checkpoints state together
// with the last applied sequence, so a restart resumes without double
// counting.
type Processor struct {
	st   *spec.Stream
	name string // the stream, or for a partition <stream>.p<n>: its checkpoint key and metrics label
	nc   *nats.Conn
	js   jetstream.JetStream
	o    ProcessorOptions
	ckpt *checkpointStore
	log  *slog.Logger

	mu          sync.Mutex // guards op and the fields below
	op          *Operator
	lastArrival time.Time
	sinceCkpt   int
	pending     uint64
	updates     []Update
	fatal       error
	// oldestUnflushed is when JetStream stored the first event applied
	// since the last flush: the freshness sample of the next flush.
	oldestUnflushed time.Time

	// Owned by the Run goroutine (flush and checkpoint):
	lateReported map[string]uint64   // late counts already added to metrics
	kvPending    map[windowID]Update // windows changed since the last KV write
	kvWatermark  int64
	wmWritten    int64     // the watermark last written to the view buckets' WatermarkKey
	kvLast       time.Time // when open windows were last written
	buf          []byte
	texts        *jsonTexts
	metricUpdate map[string]prometheus.Counter
	metricFinal  map[string]prometheus.Counter
	metricEvents map[Outcome]prometheus.Counter
	metricLat    prometheus.Observer
	freshness    []time.Duration // samples since the last stats

	// For Stats:
	started      time.Time
	counts       [Filtered + 1]atomic.Uint64 // by Outcome
	deadLettered atomic.Uint64

	ckptWG     sync.WaitGroup
	ckptBusy   atomic.Bool
	ckptFailed map[windowID]Update // windows a failed checkpoint did not write; under mu
	dlq        []deadLetter        // dead letters sent since the last checkpoint; under mu
}

// deadLetter is an async dead-letter publish, kept until a checkpoint has
// seen it stored: one the server did not acknowledge (a restart lost it)
// is sent again, with the same id, before the checkpoint moves past it.
type deadLetter struct {
	f  jetstream.PubAckFuture // nil: it could not be sent
	m  *nats.Msg
	id string
}

// NewProcessor returns a processor for st; Setup must have run.
func NewProcessor(nc *nats.Conn, js jetstream.JetStream, st *spec.Stream, o ProcessorOptions) *Processor {
	o.defaults()
	name := st.Name
	if o.Part > 0 {
		name = PartitionName(st, o.Part-1)
	}
	p := &Processor{st: st, name: name, nc: nc, js: js, o: o, op: NewOperator(st), log: o.Log.With("stream", name),
		lateReported: map[string]uint64{}, kvPending: map[windowID]Update{}, texts: newJSONTexts(), started: time.Now().UTC()}
	p.op.MaxCheckpointIDs = o.MaxCheckpointIDs
	p.op.Part = o.Part
	if m := o.Metrics; m != nil {
		// Resolved once: label lookups per message would cost more than the work.
		p.metricUpdate, p.metricFinal, p.metricEvents = map[string]prometheus.Counter{}, map[string]prometheus.Counter{}, map[Outcome]prometheus.Counter{}
		for _, v := range st.Views {
			p.metricUpdate[v.Name] = m.Updates.WithLabelValues(v.Name, "false")
			p.metricFinal[v.Name] = m.Updates.WithLabelValues(v.Name, "true")
		}
		for o, name := range outcomeName {
			p.metricEvents[o] = m.Events.WithLabelValues(st.Name, name)
		}
		p.metricLat = m.Latency.WithLabelValues(p.name)
	}
	return p
}

// Run processes until ctx ends or a fatal error, then takes a last
// checkpoint. Call it once per Processor: its pending outputs name the
// operator's groups, which a restore replaces.
func (p *Processor) Run(ctx context.Context) error {
	kv, err := p.js.KeyValue(ctx, CheckpointBucket)
	if err != nil {
		return fmt.Errorf("cannot open checkpoint bucket %s (run `tideline stream` setup first): %w", CheckpointBucket, err)
	}
	p.ckpt = &checkpointStore{kv: kv, key: p.name}
	if p.o.Lease != nil {
		p.ckpt.owner = strconv.FormatUint(rand.Uint64(), 36) // this processor's, for its chunks: the stream may move to another process
	}
	data, err := p.ckpt.load(ctx)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		p.log.Info("no checkpoint; starting from the beginning of the stream")
	case err != nil:
		return err
	default:
		if err := p.op.Restore(data); err != nil {
			return err
		}
		p.log.Info("restored checkpoint", "seq", p.op.Seq, "open_windows", p.op.OpenWindows())
		if ahead := p.op.Heal(time.Now()); ahead > 0 {
			p.log.Warn("the checkpoint's event time was ahead of this clock, as a future-dated event left it before event time was bounded by the broker's; took it back",
				"ahead", ahead.Round(time.Second), "watermark", time.UnixMicro(p.op.Watermark).UTC())
		}
		if from := p.op.ReplayFrom(); from > 0 && from <= p.op.Seq {
			if err := p.rebuildSeen(ctx, from, p.op.Seq); err != nil {
				return err
			}
		}
	}
	p.lastArrival = time.Now()
	switch last, err := p.streamLastSeq(ctx); {
	case err != nil:
		// Unknown (the server is busy electing, say): not idle until a
		// message arrives or the watch below finds nothing to read, or
		// event time would move past a backlog not yet delivered.
		p.pending = 1
		p.log.Warn("cannot read where the stream ends; not advancing event time on idle until it is known", "err", err)
	case last > p.op.Seq:
		p.pending = last - p.op.Seq // a backlog: not idle until it is read
	}
	cc, err := p.consume(ctx)
	if err != nil {
		return err
	}
	defer func() { cc.Stop() }()
	defer p.ckptWG.Wait() // a checkpoint in flight ends before Run does
	flush := time.NewTicker(p.o.FlushEvery)
	defer flush.Stop()
	stats := time.NewTicker(time.Second)
	defer stats.Stop()
	watch := time.NewTicker(time.Second)
	defer watch.Stop()
	lastCkpt := time.Now()
	for {
		select {
		case <-ctx.Done():
			// Stop, not drain: what was not applied is re-read after a
			// restart, and draining needs a server that may be gone.
			cc.Stop()
			select {
			case <-cc.Closed():
			case <-time.After(5 * time.Second):
			}
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.checkpoint(sctx, true); err != nil {
				p.log.Warn("no final checkpoint; a restart re-reads from the last one", "err", err)
			}
			return nil
		case now := <-stats.C:
			p.publishStats(now)
		case <-watch.C:
			// The client library recreates an ordered consumer after a
			// server restart by itself, but not always (seen under load):
			// with messages waiting and none arriving, start a new one
			// after the last applied sequence.
			p.mu.Lock()
			seq, quiet := p.op.Seq, time.Since(p.lastArrival)
			p.mu.Unlock()
			last, err := p.streamLastSeq(ctx)
			if err != nil {
				continue
			}
			if last <= seq {
				p.mu.Lock()
				if p.op.Seq == seq {
					p.pending = 0 // read to the end
				}
				p.mu.Unlock()
				continue
			}
			p.mu.Lock()
			if p.op.Seq == seq { // nothing applied since: a real backlog, and idle must not move event time
				p.pending = max(p.pending, last-seq)
			}
			p.mu.Unlock()
			if quiet < stallAfter {
				continue
			}
			p.log.Warn("no messages arriving with a backlog; consuming again", "after_seq", seq, "stream_last_seq", last, "quiet", quiet.Round(time.Second))
			cc.Stop()
			select {
			case <-cc.Closed():
			case <-time.After(5 * time.Second):
			}
			if next, err := p.consume(ctx); err != nil {
				p.log.Warn("cannot consume again; retrying", "err", err)
			} else {
				cc = next
				p.mu.Lock()
				p.lastArrival = time.Now()
				p.mu.Unlock()
			}
		case now := <-flush.C:
			if err := p.flush(ctx); err != nil {
				cc.Stop()
				return err
			}
			p.mu.Lock()
			due := now.Sub(lastCkpt) >= p.o.CheckpointEvery || p.sinceCkpt >= p.o.CheckpointEvents
			fatal := p.fatal
			p.mu.Unlock()
			if fatal != nil {
				cc.Stop()
				return fatal
			}
			if due {
				if err := p.checkpoint(ctx, false); err != nil {
					p.log.Warn("checkpoint failed; will retry", "err", err)
				} else {
					lastCkpt = now
				}
			}
		}
	}
}

// kvPace is how many window writes a checkpoint has in flight before it
// waits for their acks. Sent all at once, the writes of every window
// changed in KVEvery (tens of thousands, with views grouped by card) held up the
// server's delivery of new events: freshness p99 went from about 70 ms to
// 300-600 ms. Paced, they share the server with the events.
const kvPace = 256

// stallAfter is how long messages may stop arriving, with a backlog in the
// stream, before the processor consumes again.
const stallAfter = 10 * time.Second

// streamLastSeq is the stream's last sequence, or its partition's.
func (p *Processor) streamLastSeq(ctx context.Context) (uint64, error) {
	s, err := p.js.Stream(ctx, StreamName(p.st))
	if err != nil {
		return 0, err
	}
	if p.o.Part > 0 {
		m, err := s.GetLastMsgForSubject(ctx, p.st.PartitionSubjects(p.o.Part-1))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		return m.Sequence, nil
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// consume starts an ordered consumer after the last applied sequence.
func (p *Processor) consume(ctx context.Context) (jetstream.ConsumeContext, error) {
	p.mu.Lock()
	seq := p.op.Seq
	p.mu.Unlock()
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, FilterSubjects: p.filter()}
	if seq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq+1
	}
	cons, err := p.js.OrderedConsumer(ctx, StreamName(p.st), cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot consume stream %s: %w", StreamName(p.st), err)
	}
	cc, err := cons.Consume(p.handle, jetstream.PullMaxMessages(2048),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			p.log.Warn("consumer error; the client reconnects by itself", "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("cannot consume stream %s: %w", StreamName(p.st), err)
	}
	return cc, nil
}

// rebuildSeen reads the stream from one sequence to another to rebuild the
// dedup ids a large checkpoint left out. Nothing else consumes yet.
func (p *Processor) rebuildSeen(ctx context.Context, from, to uint64) error {
	p.log.Info("rebuilding the dedup set from the stream", "from_seq", from, "to_seq", to)
	start := time.Now()
	cons, err := p.js.OrderedConsumer(ctx, StreamName(p.st), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from, FilterSubjects: p.filter(),
	})
	if err != nil {
		return fmt.Errorf("cannot read stream %s from sequence %d to rebuild dedup ids: %w", StreamName(p.st), from, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return fmt.Errorf("cannot read stream %s from sequence %d to rebuild dedup ids: %w", StreamName(p.st), from, err)
	}
	defer it.Stop()
	n := 0
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("cannot rebuild dedup ids of stream %s at message %d after sequence %d: %w", StreamName(p.st), n, from, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			continue
		}
		if meta.Sequence.Stream > to {
			break // messages up to `to` were deleted by retention
		}
		p.op.Remember(msg.Data(), meta.Sequence.Stream, meta.Timestamp)
		n++
		if meta.Sequence.Stream == to || meta.NumPending == 0 {
			break
		}
		if n%1_000_000 == 0 {
			p.log.Info("rebuilding the dedup set", "read", n, "at_seq", meta.Sequence.Stream, "to_seq", to)
		}
	}
	p.log.Info("dedup set rebuilt", "messages", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// filter is the subject filter of the partition processed; none for a
// whole stream.
func (p *Processor) filter() []string {
	if p.o.Part == 0 {
		return nil
	}
	return []string{p.st.PartitionSubjects(p.o.Part - 1)}
}

func (p *Processor) handle(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		p.log.Error("message without JetStream metadata", "subject", msg.Subject(), "err", err)
		return
	}
	now := time.Now()
	p.mu.Lock()
	if meta.Sequence.Stream <= p.op.Seq && p.op.Seq > 0 {
		p.mu.Unlock() // applied already: a consumer started again re-delivers
		return
	}
	outcome, verr := p.op.ApplySubject(msg.Data(), msg.Subject(), meta.Sequence.Stream, meta.Timestamp)
	p.lastArrival = now
	p.sinceCkpt++
	p.pending = meta.NumPending
	if outcome == Applied && p.oldestUnflushed.IsZero() {
		p.oldestUnflushed = meta.Timestamp
	}
	p.mu.Unlock()
	p.counts[outcome].Add(1)
	if p.o.Metrics != nil {
		p.metricEvents[outcome].Inc()
		p.metricLat.Observe(now.Sub(meta.Timestamp).Seconds())
	}
	if outcome == Invalid {
		p.deadLetter(msg.Subject(), msg.Data(), meta.Sequence.Stream, verr)
	}
}

var outcomeName = map[Outcome]string{Applied: "applied", Invalid: "invalid", Duplicate: "duplicate", Late: "late", Filtered: "filtered"}

// deadLetter publishes an invalid message, unchanged, to the stream's
// dead-letter stream. The message id makes a replay after a crash publish
// it once.
func (p *Processor) deadLetter(subject string, data []byte, seq uint64, reason error) {
	m := nats.NewMsg(DLQSubject(p.st))
	m.Data = data
	m.Header.Set(DLQHeaderReason, headerValue(reason.Error()))
	m.Header.Set(DLQHeaderStream, p.st.Name)
	m.Header.Set(DLQHeaderSeq, strconv.FormatUint(seq, 10))
	m.Header.Set(DLQHeaderSubject, subject)
	m.Header.Set(DLQHeaderSource, "stream")
	id := p.st.Name + ":" + strconv.FormatUint(seq, 10)
	f, err := p.js.PublishMsgAsync(m, jetstream.WithMsgID(id))
	if err != nil {
		// Not sent (the connection is between servers): the next
		// checkpoint sends it, and does not move past it until it is
		// stored.
		p.log.Warn("cannot dead-letter an invalid event now; the next checkpoint sends it", "seq", seq, "err", err)
		f = nil
	}
	p.mu.Lock()
	p.dlq = append(p.dlq, deadLetter{f, m, id})
	p.mu.Unlock()
	p.deadLettered.Add(1)
	if p.o.Metrics != nil {
		p.o.Metrics.DeadLettered.WithLabelValues(p.st.Name, "stream").Inc()
	}
}

// flush advances the watermark on idle and publishes every changed window
// on the view's subject, for live readers. The view's KV bucket, which
// holds each window's current value, is written at the next checkpoint:
// one write per window however often it changed.
func (p *Processor) flush(context.Context) error {
	p.mu.Lock()
	// Idle only counts while caught up and connected: a stall in delivery
	// with a backlog must not move event time past events still coming,
	// and neither may the time the server was away (the idle clock starts
	// again when it is back, not from the last event before it left).
	switch {
	case !p.nc.IsConnected():
		p.lastArrival = time.Now()
	case p.pending == 0:
		p.op.Tick(time.Now(), p.lastArrival)
	}
	p.updates = p.op.Drain(p.updates[:0])
	wm, open, pending := p.op.Watermark, p.op.OpenWindows(), p.pending
	late := p.op.LateEvents()
	updates := p.updates // Values copied the measures; dims never change
	oldest := p.oldestUnflushed
	p.oldestUnflushed = time.Time{}
	p.mu.Unlock()
	clear(p.texts.times)
	// One message per view per flush, an update per line: hopping windows
	// and many groups make updates outnumber events, and per-message costs
	// would dominate.
	for i := range updates {
		u := &updates[i]
		if i > 0 && (u.View != updates[i-1].View || len(p.buf) > maxBatch) {
			p.publishBatch(updates[i-1].View.Name)
		}
		p.buf = append(u.appendJSON(p.buf, p.texts, wm), '\n')
		p.kvPending[u.id()] = *u
		if p.o.Metrics != nil {
			if u.Final {
				p.metricFinal[u.View.Name].Inc()
			} else {
				p.metricUpdate[u.View.Name].Inc()
			}
		}
	}
	if len(updates) > 0 {
		p.publishBatch(updates[len(updates)-1].View.Name)
		if !oldest.IsZero() {
			f := time.Since(oldest)
			p.freshness = append(p.freshness, f)
			if p.o.Metrics != nil {
				p.o.Metrics.Freshness.WithLabelValues(p.name).Observe(f.Seconds())
			}
		}
	}
	p.kvWatermark = wm
	if m := p.o.Metrics; m != nil {
		if wm != math.MinInt64 {
			m.WatermarkLag.WithLabelValues(p.name).Set(time.Since(time.UnixMicro(wm)).Seconds())
		}
		m.OpenWindows.WithLabelValues(p.name).Set(float64(open))
		m.Pending.WithLabelValues(p.name).Set(float64(pending))
		for view, n := range late {
			if n > p.lateReported[view] {
				m.Late.WithLabelValues(view).Add(float64(n - p.lateReported[view]))
				p.lateReported[view] = n
			}
		}
	}
	return nil
}

// The header a KV bucket's delete marker carries.
const kvOperation, kvDelete = "KV-Operation", "DEL"

// maxBatch keeps a batch of updates under the default 1 MiB max payload.
const maxBatch = 512 << 10

// publishBatch sends the live updates in buf. They are best effort: a
// reader that misses some (the connection broke mid-write while the server
// restarted) has the view's KV bucket, which every window still reaches at
// the next checkpoint, with acknowledgements. Stopping the processor for
// them, as it once did, lost the windows of the flush.
func (p *Processor) publishBatch(view string) {
	if err := p.nc.Publish(ViewSubject(view), p.buf); err != nil {
		p.log.Warn("cannot publish live updates; they reach the view's KV bucket at the next checkpoint", "view", view, "err", err)
	}
	p.buf = p.buf[:0]
}

// checkpoint captures the state and the windows changed since the last
// checkpoint, then, off the Run goroutine so live updates keep flowing,
// writes those windows to their views' KV buckets, waits until every publish
// so far is acknowledged (KV writes and dead letters), and stores the state
// with its sequence. Whatever was applied after a checkpoint is applied
// again after a crash, and the outputs it produced are idempotent. At most
// one checkpoint is in flight; wait makes this one synchronous.
func (p *Processor) checkpoint(ctx context.Context, wait bool) error {
	if p.ckptBusy.Load() {
		if !wait {
			return nil // the one in flight will do; the next tick takes another
		}
		done := make(chan struct{})
		go func() { p.ckptWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	start := time.Now()
	if err := p.flush(ctx); err != nil {
		return err
	}
	p.mu.Lock()
	snap := p.op.Snapshot() // encoded in write, off the lock
	seq := snap.Seq()
	p.sinceCkpt = 0
	for k, u := range p.ckptFailed {
		if _, newer := p.kvPending[k]; !newer {
			p.kvPending[k] = u
		}
	}
	p.ckptFailed = nil
	dlq := p.dlq
	p.dlq = nil
	p.mu.Unlock()
	// Final and gone windows are written at every checkpoint; open ones at
	// most every KVEvery, since live readers have the subject.
	wm := p.kvWatermark
	windows := p.kvPending
	if wait || time.Since(p.kvLast) >= p.o.KVEvery {
		p.kvPending = make(map[windowID]Update, len(windows))
		p.kvLast = time.Now()
	} else {
		windows = map[windowID]Update{}
		for k, u := range p.kvPending {
			if u.Final || u.Gone {
				windows[k] = u
				delete(p.kvPending, k)
			}
		}
	}
	p.ckptBusy.Store(true)
	p.ckptWG.Add(1)
	write := func() error {
		if p.o.Lease != nil {
			if err := p.o.Lease(ctx); err != nil {
				return err // another member may hold the partition: write nothing
			}
		}
		texts := newJSONTexts()
		var futures []jetstream.PubAckFuture
		n := 0
		for _, u := range windows {
			if n++; n%kvPace == 0 {
				if err := p.awaitAcks(ctx); err != nil {
					return err
				}
				if p.o.Lease != nil {
					if err := p.o.Lease(ctx); err != nil {
						return err // lost while writing: write no more
					}
				}
			}
			m := nats.NewMsg(ViewKeySubject(u.View.Name, u.Key()))
			if u.Gone {
				m.Header.Set(kvOperation, kvDelete) // as KeyValue.Delete writes it
			} else {
				m.Data = u.appendJSON(nil, texts, wm)
			}
			for {
				f, err := p.js.PublishMsgAsync(m)
				if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
					// Back-pressure from a slow server: wait for the acks
					// in flight, then send this one again.
					if err := p.awaitAcks(ctx); err != nil {
						return err
					}
					continue
				}
				if err != nil {
					return fmt.Errorf("cannot write window of view %s to its bucket: %w", u.View.Name, err)
				}
				futures = append(futures, f)
				break
			}
		}
		if err := p.awaitAcks(ctx); err != nil {
			return err
		}
		// Every publish has an answer now (the connection's async publish
		// timeout answers for a server that restarted): each must be ok.
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("a window write to its bucket was not stored: %w", err)
			}
		}
		for _, d := range dlq {
			if d.f != nil {
				select {
				case <-d.f.Ok():
					continue
				case <-d.f.Err():
				}
			}
			if _, err := p.js.PublishMsg(ctx, d.m, jetstream.WithMsgID(d.id)); err != nil {
				return fmt.Errorf("cannot dead-letter %s again: %w", d.id, err)
			}
		}
		// Only now: a reader seeing this watermark finds every window it
		// closed in the bucket.
		if wm != math.MinInt64 && wm != p.wmWritten {
			for _, v := range p.st.Views {
				w := WatermarkJSON{Watermark: time.UnixMicro(wm).UTC()}
				if since := snap.Since(v.Name); since != math.MinInt64 {
					t := time.UnixMicro(since).UTC()
					w.Since = &t
				}
				wmData, _ := json.Marshal(w)
				if _, err := p.js.Publish(ctx, ViewKeySubject(v.Name, watermarkKey(p.o.Part)), wmData); err != nil {
					return fmt.Errorf("cannot write the watermark of view %s to its bucket: %w", v.Name, err)
				}
			}
			p.wmWritten = wm
		}
		data, err := snap.Encode()
		if err != nil {
			return err
		}
		if p.o.Lease != nil {
			if err := p.o.Lease(ctx); err != nil {
				p.mu.Lock()
				p.fatal = err
				p.mu.Unlock()
				return err
			}
		}
		if err := p.ckpt.save(ctx, seq, data); err != nil {
			return err
		}
		if m := p.o.Metrics; m != nil {
			m.Checkpoint.WithLabelValues(p.name).Observe(time.Since(start).Seconds())
			m.CheckpointLen.WithLabelValues(p.name).Set(float64(len(data)))
		}
		p.log.Debug("checkpoint", "seq", seq, "bytes", len(data), "took", time.Since(start))
		return nil
	}
	// done ends this checkpoint. A failed one's windows go back to the next
	// checkpoint, unless newer, and are handed back before a checkpoint
	// waiting for this one (the last, at stop) may take its snapshot: handed
	// back after, they were lost with the windows that had closed.
	done := func(err error) error {
		if err != nil && !wait {
			p.log.Warn("checkpoint failed; the next one retries", "err", err)
			p.mu.Lock()
			p.ckptFailed = windows
			p.dlq = append(dlq, p.dlq...) // checked again by the next one
			p.mu.Unlock()
		}
		p.ckptBusy.Store(false)
		p.ckptWG.Done()
		return err
	}
	if wait {
		return done(write())
	}
	go func() { _ = done(write()) }()
	return nil
}

// awaitAcks waits until JetStream has acknowledged every async publish.
func (p *Processor) awaitAcks(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("cannot checkpoint stream %s: publishes not acknowledged after 30s", p.st.Name)
	}
}

// Operator exposes the processor's operator to f under its lock, for tests
// and status.
func (p *Processor) Operator(f func(*Operator)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p.op)
}

// checkpointStore keeps a checkpoint in a KV bucket as chunks in one of two
// slots, alternating by generation, and switches generations with one
// manifest write, so a reader sees the old checkpoint or the new one, never
// a mix. Reusing two slots keeps the bucket's size bounded.
//
// The manifest is written with a compare-and-set on the revision this
// store read or last wrote, and a partition's chunks are under the owner
// token of the processor that wrote them: a processor that lost its
// partition to another (its lease ran out while it was away) can neither
// overwrite the other's chunks nor switch the manifest back to its own.
type checkpointStore struct {
	kv    jetstream.KeyValue
	key   string
	owner string // "" for a processor that runs alone, with no lease
	gen   uint64
	rev   uint64 // of the manifest; 0 when there is none
	prev  string // the owner of the chunks the manifest named when read
}

type manifest struct {
	Gen    uint64 `json:"gen"`
	Chunks int    `json:"chunks"`
	Seq    uint64 `json:"seq"`
	Bytes  int    `json:"bytes"`
	Owner  string `json:"owner,omitempty"`
}

const chunkSize = 512 << 10

func (c *checkpointStore) load(ctx context.Context) ([]byte, error) {
	e, err := c.kv.Get(ctx, c.key)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return nil, fmt.Errorf("cannot parse checkpoint manifest %s in %s: %w; delete the key to start over from the beginning of the stream", c.key, CheckpointBucket, err)
	}
	c.gen, c.rev, c.prev = m.Gen, e.Revision(), m.Owner
	data := make([]byte, 0, m.Bytes)
	for i := range m.Chunks {
		ce, err := c.kv.Get(ctx, c.chunkKey(m.Owner, m.Gen, i))
		if err != nil {
			return nil, fmt.Errorf("cannot read checkpoint chunk %s: %w", c.chunkKey(m.Owner, m.Gen, i), err)
		}
		data = append(data, ce.Value()...)
	}
	return data, nil
}

func (c *checkpointStore) chunkKey(owner string, gen uint64, i int) string {
	if owner == "" {
		return fmt.Sprintf("%s.chunk.%d.%d", c.key, gen%2, i)
	}
	return fmt.Sprintf("%s.chunk.%s.%d.%d", c.key, owner, gen%2, i)
}

func (c *checkpointStore) save(ctx context.Context, seq uint64, data []byte) error {
	gen := c.gen + 1
	n := 0
	for off := 0; off < len(data) || n == 0; off += chunkSize {
		end := min(off+chunkSize, len(data))
		if _, err := c.kv.Put(ctx, c.chunkKey(c.owner, gen, n), data[off:end]); err != nil {
			return fmt.Errorf("cannot store checkpoint of %s: %w", c.key, err)
		}
		n++
	}
	m, _ := json.Marshal(manifest{Gen: gen, Chunks: n, Seq: seq, Bytes: len(data), Owner: c.owner})
	var rev uint64
	var err error
	if c.rev == 0 {
		rev, err = c.kv.Create(ctx, c.key, m)
	} else {
		rev, err = c.kv.Update(ctx, c.key, m, c.rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSequence(err) {
		return fmt.Errorf("cannot store checkpoint of %s: another processor has written it since this one read it, and holds the partition now: %w", c.key, err)
	}
	if err != nil {
		return fmt.Errorf("cannot store checkpoint manifest of %s: %w", c.key, err)
	}
	c.gen, c.rev = gen, rev
	if c.prev != c.owner {
		c.dropChunksOf(ctx, c.prev)
		c.prev = c.owner
	}
	return nil
}

// dropChunksOf deletes the chunks an earlier owner of the partition left,
// now that the manifest names this owner's.
func (c *checkpointStore) dropChunksOf(ctx context.Context, owner string) {
	filter := c.key + ".chunk.*.*"
	if owner != "" {
		filter = c.key + ".chunk." + owner + ".*.*"
	}
	l, err := c.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return // left for the next owner change; the bucket's history is one value a key
	}
	for k := range l.Keys() {
		_ = c.kv.Purge(ctx, k)
	}
}
