package score

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tideline/stream"
)

// RequestSubject is where a client sends a payment and gets its decision.
const RequestSubject = "payments.score"

// Consumer is the durable consumer the scorer reads the payments with.
const Consumer = "tl_scorer"

// Runner drives a Scorer from NATS.
type Runner struct {
	Scorer *Scorer
	NC     *nats.Conn
	JS     jetstream.JetStream
	Loader *Loader // nil: no lake, every decision is fallback
	// LoadEvery is how often the lake's features are checked for change
	// (default 15s).
	LoadEvery time.Duration
	Metrics   *Metrics
	Log       *slog.Logger
	// Ready, when set, is called once the scorer answers requests.
	Ready func()

	inflight chan struct{} // bounds requests being stored and answered
}

// Metrics are the scorer's Prometheus metrics.
type Metrics struct {
	Decisions *prometheus.CounterVec // decision, fallback
	Latency   prometheus.Histogram   // request-reply: request in to reply out
	Invalid   prometheus.Counter
}

// NewMetrics registers the scorer's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_score_decisions_total",
			Help: "Payments decided, by decision (approved, flagged) and fallback (batch features unavailable)."}, []string{"decision", "fallback"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tideline_score_request_duration_seconds",
			Help: "Time to answer a payment sent by request-reply, its storing in the stream included.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14)}),
		Invalid: prometheus.NewCounter(prometheus.CounterOpts{Name: "tideline_score_invalid_total",
			Help: "Payments sent by request-reply that failed the contract; they get an error reply."}),
	}
	reg.MustRegister(m.Decisions, m.Latency, m.Invalid)
	return m
}

// Run replays the last minutes of payments into the speed state, then
// scores the stream and answers requests until ctx ends. Several Runners
// (processes) share the work: requests go to any of them, each stored
// payment is decided by one, and every one holds every payment's state, so
// the answer does not depend on which one decides.
func (r *Runner) Run(ctx context.Context) error {
	if r.Log == nil {
		r.Log = slog.Default()
	}
	if r.LoadEvery <= 0 {
		r.LoadEvery = 15 * time.Second
	}
	if r.Metrics == nil {
		r.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	r.inflight = make(chan struct{}, 512)
	st := r.Scorer.sc.Stream
	last, err := r.replay(ctx)
	if err != nil {
		return err
	}
	// Every scorer holds every payment: requests go to any of them (a
	// queue group) and the durable consumer hands each stored payment to
	// one, but a card's features need all its payments.
	feed, err := r.JS.OrderedConsumer(ctx, stream.StreamName(st), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: last + 1,
	})
	if err != nil {
		return fmt.Errorf("cannot follow stream %s: %w", st.Name, err)
	}
	fc, err := feed.Consume(r.remember, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		r.Log.Warn("scorer state consumer error; the client retries by itself", "err", err)
	}))
	if err != nil {
		return fmt.Errorf("cannot follow stream %s: %w", st.Name, err)
	}
	defer fc.Stop()
	r.load(ctx)
	go func() {
		t := time.NewTicker(r.LoadEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				r.load(ctx)
			}
		}
	}()
	sub, err := r.NC.QueueSubscribe(RequestSubject, Consumer, r.request)
	if err != nil {
		return fmt.Errorf("cannot answer on %s: %w", RequestSubject, err)
	}
	defer sub.Unsubscribe()
	cons, err := r.JS.CreateOrUpdateConsumer(ctx, stream.StreamName(st), jetstream.ConsumerConfig{
		Durable: Consumer, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverNewPolicy,
		MaxAckPending: 4096, AckWait: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("cannot create consumer %s on stream %s: %w", Consumer, st.Name, err)
	}
	cc, err := cons.Consume(r.consume, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		r.Log.Warn("scorer consumer error; the client retries by itself", "err", err)
	}))
	if err != nil {
		return fmt.Errorf("cannot consume stream %s: %w", st.Name, err)
	}
	defer cc.Stop()
	if r.Ready != nil {
		r.Ready()
	}
	r.Log.Info("scoring", "stream", st.Name, "decisions", r.Scorer.sc.Decisions.Name, "rules", len(r.Scorer.sc.Rules), "request_subject", RequestSubject)
	<-ctx.Done()
	return nil
}

func (r *Runner) load(ctx context.Context) {
	if r.Loader == nil {
		return
	}
	if err := r.Loader.Load(ctx, r.Scorer); err != nil && ctx.Err() == nil {
		r.Log.Warn("batch or reference features unavailable; deciding on speed rules (fallback)", "err", err)
	}
}

// remember adds a payment of the stream to the speed state.
func (r *Runner) remember(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	if ev, err := r.Scorer.sc.Stream.Contract.Decode(msg.Data(), meta.Timestamp); err == nil {
		r.Scorer.Remember(ev, meta.Timestamp)
	}
}

// replay reads the stream's last minutes back into the speed state, and
// returns the last sequence it read up to.
func (r *Runner) replay(ctx context.Context) (uint64, error) {
	st := r.Scorer.sc.Stream
	js, err := r.JS.Stream(ctx, stream.StreamName(st))
	if err != nil {
		return 0, fmt.Errorf("cannot open stream %s (run `tideline stream` first): %w", st.Name, err)
	}
	info, err := js.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("cannot read stream %s: %w", st.Name, err)
	}
	if info.State.Msgs == 0 {
		return info.State.LastSeq, nil
	}
	cons, err := r.JS.OrderedConsumer(ctx, stream.StreamName(st), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: new(time.Now().Add(-keep)),
	})
	if err != nil {
		return 0, fmt.Errorf("cannot read back stream %s: %w", st.Name, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, fmt.Errorf("cannot read back stream %s: %w", st.Name, err)
	}
	defer it.Stop()
	n := 0
	for {
		msg, err := it.Next(jetstream.NextMaxWait(2 * time.Second))
		if errors.Is(err, nats.ErrTimeout) {
			break // nothing in the last minutes
		}
		if err != nil {
			return 0, fmt.Errorf("cannot read back stream %s: %w", st.Name, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			continue
		}
		if ev, err := st.Contract.Decode(msg.Data(), meta.Timestamp); err == nil {
			r.Scorer.Remember(ev, meta.Timestamp)
			n++
		}
		if meta.Sequence.Stream >= info.State.LastSeq || meta.NumPending == 0 {
			break
		}
	}
	r.Log.Info("speed state read back", "payments", n, "since", keep)
	return info.State.LastSeq, nil
}

// consume scores a payment from the stream and publishes its decision.
func (r *Runner) consume(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Ack()
		return
	}
	ev, err := r.Scorer.sc.Stream.Contract.Decode(msg.Data(), meta.Timestamp)
	if err != nil {
		_ = msg.Ack() // the speed layer dead-letters it
		return
	}
	d, ok := r.Scorer.Score(ev, meta.Timestamp)
	if ok {
		if err := r.publish(context.Background(), d); err != nil {
			r.Log.Warn("cannot publish a decision; the payment is redelivered", "payment_id", d.PaymentID, "err", err)
			r.Scorer.forget(d.PaymentID)
			_ = msg.NakWithDelay(time.Second)
			return
		}
	}
	_ = msg.Ack()
}

func (r *Runner) publish(ctx context.Context, d Decision) error {
	data, _ := json.Marshal(d)
	ds := r.Scorer.sc.Decisions
	if _, err := r.JS.Publish(ctx, stream.PublishSubject(ds, d.PaymentID), data, jetstream.WithMsgID(stream.MsgID(d.PaymentID))); err != nil {
		return err
	}
	r.Metrics.Decisions.WithLabelValues(d.Decision, fmt.Sprint(d.Fallback)).Inc()
	return nil
}

// Reply is the answer to a request on RequestSubject: the decision, or an
// error saying what was wrong with the payment.
type Reply struct {
	Decision *Decision `json:"decision,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// request scores a payment sent by request-reply: it is stored in the
// payments stream (so batch sees it too) and decided at once.
func (r *Runner) request(m *nats.Msg) {
	start := time.Now()
	reply := func(rep Reply) {
		data, _ := json.Marshal(rep)
		_ = m.Respond(data)
		r.Metrics.Latency.Observe(time.Since(start).Seconds())
	}
	st := r.Scorer.sc.Stream
	ev, err := st.Contract.Decode(m.Data, start)
	if err != nil {
		r.Metrics.Invalid.Inc()
		reply(Reply{Error: "invalid payment: " + err.Error()})
		return
	}
	d, ok := r.Scorer.Score(ev, start)
	if !ok {
		reply(Reply{Error: "payment " + ev.Values[st.Contract.ID].Str + " was scored already; send a new payment_id"})
		return
	}
	// Scoring is in order, in this callback; storing and replying run
	// beside it, so one slow publish does not hold up the next payment.
	r.inflight <- struct{}{}
	go func() {
		defer func() { <-r.inflight }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		id := d.PaymentID
		if _, err := r.JS.Publish(ctx, stream.PublishSubject(st, id), m.Data, jetstream.WithMsgID(stream.MsgID(id))); err != nil {
			r.Scorer.forget(id)
			reply(Reply{Error: "cannot store the payment in stream " + st.Name + ": " + err.Error() + "; send it again"})
			return
		}
		if err := r.publish(ctx, d); err != nil {
			r.Log.Warn("cannot publish a decision of a request; replying with it anyway", "payment_id", id, "err", err)
		}
		reply(Reply{Decision: &d})
	}()
}
