package activities

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"tideline/lake"
	"tideline/spec"
)

// PlanInput names the stream to compact.
type PlanInput struct {
	Stream string `json:"stream"`
}

// PlanResult is the sequence range a compaction run covers.
type PlanResult struct {
	Stream string `json:"stream"`
	// From and To are the inclusive range to read; From > To when there is
	// nothing new.
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// Covered is the broker time every message before which is in the
	// range or committed already.
	Covered time.Time `json:"covered"`
	// Views are the stream's views, which the run recomputes and advances.
	Views []string `json:"views"`
	// Lost counts messages the stream dropped (retention) before
	// compaction read them.
	Lost uint64 `json:"lost,omitempty"`
}

// Plan reads the stream's end and the raw table's high sequence.
func (a *Activities) Plan(ctx context.Context, in PlanInput) (PlanResult, error) {
	st, err := a.stream(in.Stream)
	if err != nil {
		return PlanResult{}, err
	}
	// Read the time first: every message the broker received before it has
	// a sequence at most the LastSeq read after it.
	covered := a.Now().Add(-a.ClockSkew).UTC()
	s, err := a.JS.Stream(ctx, st.Name)
	if err != nil {
		return PlanResult{}, fmt.Errorf("cannot read JetStream stream %s (has `tideline stream` created it?): %w", st.Name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return PlanResult{}, fmt.Errorf("cannot read JetStream stream %s: %w", st.Name, err)
	}
	snap, err := a.rawTable(st).Snapshot(ctx)
	if err != nil {
		return PlanResult{}, fromLake(err)
	}
	res := PlanResult{Stream: st.Name, From: snap.HighSeq + 1, To: info.State.LastSeq, Covered: covered}
	for _, v := range st.Views {
		res.Views = append(res.Views, v.Name)
	}
	if first := info.State.FirstSeq; first > res.From && res.To >= res.From {
		res.Lost = first - res.From
		a.Log.Error("the stream dropped messages before compaction read them; raise its retention", "stream", st.Name, "from_seq", res.From, "to_seq", first-1)
		res.From = first
	}
	return res, nil
}

// CompactInput is one compaction run of a stream.
type CompactInput struct {
	Stream string `json:"stream"`
	// From and To are the inclusive sequence range (from Plan).
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// Covered is recorded on the raw table once To is committed.
	Covered time.Time `json:"covered"`
}

// CompactResult says what a compaction run committed.
type CompactResult struct {
	Stream   string `json:"stream"`
	Messages int64  `json:"messages"` // read from the range
	Rows     int64  `json:"rows"`     // committed to the raw table
	Rejected int64  `json:"rejected"` // invalid, not committed
	// Expired counts valid events older than the raw table's retention
	// (lake.PropRetainedFrom): not committed, so a dropped partition stays
	// dropped.
	Expired    int64    `json:"expired,omitempty"`
	Commits    int      `json:"commits"`
	Partitions []string `json:"partitions"` // raw partitions touched
	NextSeq    uint64   `json:"next_seq"`   // where the next run starts
}

// compactProgress is Compact's heartbeat: a retry adds to its counts.
type compactProgress struct {
	Result CompactResult `json:"result"`
}

// Compact reads the range from JetStream and commits Parquet files, one per
// event-time partition per chunk of ChunkMessages messages, to the stream's
// raw table with the chunk's sequence range. It resumes after the raw
// table's high sequence, so a retry or a second run of the same range
// commits nothing twice. Every chunk checks rows + rejected = messages read.
func (a *Activities) Compact(ctx context.Context, in CompactInput) (CompactResult, error) {
	defer a.observe("compact", time.Now())
	st, err := a.stream(in.Stream)
	if err != nil {
		return CompactResult{}, err
	}
	var prog compactProgress
	prog.Result.Stream = st.Name
	if activity.HasHeartbeatDetails(ctx) {
		_ = activity.GetHeartbeatDetails(ctx, &prog)
	}
	parts := map[string]bool{}
	for _, p := range prog.Result.Partitions {
		parts[p] = true
	}
	tbl := a.rawTable(st)
	snap, err := tbl.Snapshot(ctx)
	if err != nil {
		return CompactResult{}, fromLake(err)
	}
	// Refused before reading anything: the lake holds rows this contract
	// cannot read (commit checks again, against a racing writer).
	if err := lake.CheckContract(snap, st.Name, st.Contract); err != nil {
		return CompactResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeSpec, err)
	}
	from := max(in.From, snap.HighSeq+1)
	log := a.Log.With("stream", st.Name)
	if from <= in.To {
		log.Info("compacting", "from_seq", from, "to_seq", in.To)
		c := &compactor{a: a, st: st, tbl: tbl, res: &prog.Result, parts: parts, retainedFrom: math.MinInt64}
		if from := timeProp(snap, lake.PropRetainedFrom); !from.IsZero() {
			c.retainedFrom = from.UnixMicro()
		}
		if err := c.run(ctx, from, in.To); err != nil {
			return CompactResult{}, err
		}
	}
	// Everything up to To is committed: record how far that covers.
	if !in.Covered.IsZero() {
		if err := a.cover(ctx, tbl, in.Covered); err != nil {
			return CompactResult{}, err
		}
	}
	prog.Result.Partitions = slices.Sorted(maps.Keys(parts))
	prog.Result.NextSeq = max(in.To, snap.HighSeq) + 1
	log.Info("compacted", "messages", prog.Result.Messages, "rows", prog.Result.Rows, "rejected", prog.Result.Rejected, "commits", prog.Result.Commits, "partitions", len(parts))
	return prog.Result, nil
}

// cover records covered on the raw table unless it has a later time.
func (a *Activities) cover(ctx context.Context, tbl *lake.Table, covered time.Time) error {
	for {
		snap, err := tbl.Snapshot(ctx)
		if err != nil {
			return fromLake(err)
		}
		if !timeProp(snap, lake.PropCovered).Before(covered) {
			return nil
		}
		_, err = tbl.Commit(ctx, lake.Commit{Op: "cover",
			Props:   map[string]string{lake.PropCovered: formatTime(covered)},
			IfProps: map[string]string{lake.PropCovered: snap.Props[lake.PropCovered]}})
		if errors.Is(err, lake.ErrConflict) {
			continue // another run moved it; look again
		}
		if err == nil {
			a.Metrics.Covered.WithLabelValues(tbl.Name[len("raw/"):]).Set(float64(covered.Unix()))
		}
		return fromLake(err)
	}
}

type compactor struct {
	a     *Activities
	st    *spec.Stream
	tbl   *lake.Table
	res   *CompactResult
	parts map[string]bool

	// the chunk being built
	rows              map[lake.Partition]*lake.Rows
	first, last       uint64
	lastTime          time.Time
	messages, invalid int64
	expired           int64 // valid, but before the raw table's retained_from
	retainedFrom      int64 // UTC microseconds; MinInt64 when nothing expired
}

func (c *compactor) run(ctx context.Context, from, to uint64) error {
	cons, err := c.a.JS.OrderedConsumer(ctx, c.st.Name, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
	if err != nil {
		return fmt.Errorf("cannot read JetStream stream %s from sequence %d: %w", c.st.Name, from, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return fmt.Errorf("cannot read JetStream stream %s from sequence %d: %w", c.st.Name, from, err)
	}
	defer it.Stop()
	contract := c.st.Contract
	schema := lake.RawSchema(contract)
	c.reset()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		msg, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if errors.Is(err, nats.ErrTimeout) {
			// Nothing more to deliver: the rest of the range was deleted.
			// Make sure the server is there, so an outage is not taken for
			// the end of the stream.
			if _, err := c.stream(ctx); err != nil {
				return err
			}
			break
		}
		if err != nil {
			return fmt.Errorf("cannot read JetStream stream %s after sequence %d: %w", c.st.Name, c.last, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("cannot read metadata of a message of stream %s: %w", c.st.Name, err)
		}
		seq := meta.Sequence.Stream
		if seq > to {
			break
		}
		if c.first == 0 {
			c.first = seq
		}
		c.last, c.lastTime = seq, meta.Timestamp
		c.messages++
		ev, err := contract.Decode(msg.Data(), meta.Timestamp)
		switch {
		case err != nil:
			c.invalid++
		case ev.Values[contract.Time].Int < c.retainedFrom:
			c.expired++ // its partition was dropped by retention: it stays dropped
		default:
			p := lake.PartitionOf(ev.Values[contract.Time].Int, c.st.Partition)
			r := c.rows[p]
			if r == nil {
				r = lake.NewRows(schema, 1024)
				c.rows[p] = r
			}
			r.AppendWith(ev.Values, spec.Value{Int: int64(seq)}, spec.Value{Int: meta.Timestamp.UnixMicro()})
		}
		if c.messages%10_000 == 0 {
			activity.RecordHeartbeat(ctx, compactProgress{Result: *c.res})
		}
		if seq >= to || meta.NumPending == 0 {
			break // NumPending 0 before to: the rest of the range was deleted
		}
		if c.messages >= int64(c.a.ChunkMessages) {
			if err := c.commit(ctx); err != nil {
				return err
			}
		}
	}
	return c.commit(ctx)
}

func (c *compactor) stream(ctx context.Context) (*jetstream.StreamInfo, error) {
	s, err := c.a.JS.Stream(ctx, c.st.Name)
	if err != nil {
		return nil, fmt.Errorf("cannot read JetStream stream %s: %w", c.st.Name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot read JetStream stream %s: %w", c.st.Name, err)
	}
	return info, nil
}

func (c *compactor) reset() {
	c.rows = map[lake.Partition]*lake.Rows{}
	c.first, c.messages, c.invalid, c.expired = 0, 0, 0, 0
}

// commit writes the chunk's files and commits them with its range.
func (c *compactor) commit(ctx context.Context) error {
	if c.messages == 0 {
		return nil
	}
	contract := c.st.Contract
	opts := lake.WriteOptions{SortBy: contract.Fields[contract.Time].Name, Unique: []string{contract.Fields[contract.ID].Name}}
	commit := lake.Commit{Op: "compact", Source: &lake.SeqRange{From: c.first, To: c.last},
		Meta: map[string]string{"messages": strconv.FormatInt(c.messages, 10), "rejected": strconv.FormatInt(c.invalid, 10),
			"expired": strconv.FormatInt(c.expired, 10)},
		Props: map[string]string{lake.PropCovered: formatTime(c.lastTime)}}
	// One file per partition, written side by side: the stream is not
	// being read meanwhile, so the cores are free.
	parts := slices.SortedFunc(maps.Keys(c.rows), func(a, b lake.Partition) int { return a.Start.Compare(b.Start) })
	files := make([]lake.File, len(parts))
	errs := make([]error, len(parts))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			key := lake.RawFileKey(c.st.Name, p, c.first, c.last)
			if files[i], errs[i] = lake.PutParquet(ctx, c.a.Store, key, p.Path(), c.rows[p], opts); errs[i] != nil {
				errs[i] = fmt.Errorf("cannot write raw file %s: %w", key, errs[i])
			}
		})
	}
	// Writing a large chunk can outlast the heartbeat timeout.
	_ = heartbeating(ctx, compactProgress{Result: *c.res}, func() error { wg.Wait(); return nil })
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var rows int64
	for i, f := range files {
		rows += f.Rows
		commit.Add = append(commit.Add, f)
		commit.Partitions = append(commit.Partitions, parts[i].Path())
	}
	// The files' own row counts, read back from what was written, against
	// what was read: a row lost or doubled between the two fails the run.
	if rows+c.invalid+c.expired != c.messages {
		c.a.Metrics.DataQuality.WithLabelValues("compact").Inc()
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"cannot commit sequences %d-%d of stream %s: %d rows written + %d rejected + %d expired != %d messages read",
			c.first, c.last, c.st.Name, rows, c.invalid, c.expired, c.messages), ErrTypeDataQuality, nil)
	}
	snap, err := c.tbl.Snapshot(ctx)
	if err != nil {
		return fromLake(err)
	}
	if !timeProp(snap, lake.PropCovered).Before(c.lastTime) {
		delete(commit.Props, lake.PropCovered) // covered never moves back
	}
	// The rows name the contract they were written with, and the table
	// records it, unless the lake holds rows it cannot read.
	if err := lake.CheckContract(snap, c.st.Name, contract); err != nil {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeSpec, err)
	}
	fp, props := lake.ContractProps(snap, contract)
	commit.Meta[lake.MetaContract] = fp
	maps.Copy(commit.Props, props)
	_, err = c.tbl.Commit(ctx, commit)
	switch {
	case errors.Is(err, lake.ErrAlreadyCommitted):
		c.a.Log.Info("chunk was committed already; skipping it", "stream", c.st.Name, "from_seq", c.first, "to_seq", c.last)
	case err != nil:
		return fromLake(err)
	default:
		c.res.Commits++
		c.res.Messages += c.messages
		c.res.Rows += rows
		c.res.Rejected += c.invalid
		c.res.Expired += c.expired
		c.a.Metrics.Compacted.WithLabelValues(c.st.Name, "expired").Add(float64(c.expired))
		c.a.Metrics.Compacted.WithLabelValues(c.st.Name, "rows").Add(float64(rows))
		c.a.Metrics.Compacted.WithLabelValues(c.st.Name, "rejected").Add(float64(c.invalid))
		for _, p := range commit.Partitions {
			c.parts[p] = true
		}
		c.res.Partitions = slices.Sorted(maps.Keys(c.parts))
	}
	c.res.NextSeq = c.last + 1
	activity.RecordHeartbeat(ctx, compactProgress{Result: *c.res})
	c.reset()
	return nil
}
