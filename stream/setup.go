package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/spec"
)

// Names of the JetStream objects tideline keeps per stream and view.
const (
	// CheckpointBucket is the KV bucket holding processor checkpoints.
	CheckpointBucket = "tl_checkpoints"
	// DLQHeaderReason and friends are headers of dead-lettered messages.
	DLQHeaderReason  = "Tl-Reason"
	DLQHeaderStream  = "Tl-Stream"
	DLQHeaderSeq     = "Tl-Seq"
	DLQHeaderSubject = "Tl-Subject"
	DLQHeaderSource  = "Tl-Source" // "stream" (the processor) or "http" (ingest)
)

// StreamName is the JetStream stream of a spec stream.
func StreamName(st *spec.Stream) string { return st.Name }

// DLQStreamName is the dead-letter stream of a spec stream.
func DLQStreamName(st *spec.Stream) string { return st.Name + "_dlq" }

// DLQSubject is the subject invalid events of a stream are published to.
func DLQSubject(st *spec.Stream) string { return "tl.dlq." + st.Name }

// ViewSubject carries every window update of a view, for live readers.
func ViewSubject(view string) string { return "tl.views." + view }

// ViewBucket is the KV bucket holding the current value of each recent
// window of a view.
func ViewBucket(view string) string { return "tl_view_" + view }

// ViewBucketStream is the JetStream stream behind a view's KV bucket, for
// reads the KV API does not offer.
func ViewBucketStream(view string) string { return "KV_" + ViewBucket(view) }

// ViewKeySubject is the subject of key in a view's KV bucket: publishing to
// it writes the key, and a key of wildcards filters a read of the stream.
func ViewKeySubject(view, key string) string { return "$KV." + ViewBucket(view) + "." + key }

// WatermarkKey is the key in each view bucket that holds the processor's
// watermark, as {"watermark": "<RFC 3339>"}. It is written only after every
// window write before it is acknowledged, so a reader that sees watermark W
// finds every window closed by W in the bucket. Window keys are
// <start>.<dims hash>, so they never collide with it.
const WatermarkKey = "watermark"

// watermarkKey is where the processor of a partition (part, plus one;
// 0 for a whole stream) writes its watermark: WatermarkKey, then .p<n>.
func watermarkKey(part int) string {
	if part == 0 {
		return WatermarkKey
	}
	return WatermarkKey + ".p" + strconv.Itoa(part-1)
}

// PartitionName names partition n of a stream: <stream>.p<n>, the key of
// its checkpoint and its label in metrics and logs.
func PartitionName(st *spec.Stream, n int) string { return st.Name + ".p" + strconv.Itoa(n) }

// WatermarkJSON is the value at WatermarkKey.
type WatermarkJSON struct {
	Watermark time.Time `json:"watermark"`
	// Since, when set, is the first event time from which the view has
	// seen every event (Operator.Since): windows starting before it were
	// never the speed layer's, so batch values there are history, not
	// corrections.
	Since *time.Time `json:"since,omitempty"`
}

// SetupOptions tune Setup.
type SetupOptions struct {
	// ViewTTL is how long a window's value stays in its view bucket after
	// its last update (default 24h).
	ViewTTL time.Duration
	// Replicas of every stream and bucket (default 1; 3 on a cluster).
	Replicas int
}

// Setup creates or updates, idempotently, the JetStream stream and
// dead-letter stream of every spec stream, the checkpoint bucket and a KV
// bucket per view.
func Setup(ctx context.Context, js jetstream.JetStream, s *spec.Spec, o SetupOptions) error {
	if o.ViewTTL == 0 {
		o.ViewTTL = 24 * time.Hour
	}
	o.Replicas = max(o.Replicas, 1)
	for _, st := range s.Streams {
		cfg := jetstream.StreamConfig{
			Name:        StreamName(st),
			Description: "tideline stream " + st.Name,
			Subjects:    st.Subjects,
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      st.Retention.MaxAge,
			MaxBytes:    orUnlimited(st.Retention.MaxBytes),
			MaxMsgs:     orUnlimited(st.Retention.MaxMsgs),
			Duplicates:  st.DedupWindow,
			Replicas:    o.Replicas,
		}
		if st.Partitioned() {
			src, dest := st.PartitionMapping()
			cfg.Subjects = []string{src}
			cfg.SubjectTransform = &jetstream.SubjectTransformConfig{Source: src, Destination: dest}
		}
		if err := retryTimeouts(ctx, func() error { return samePartitions(ctx, js, st, cfg.SubjectTransform) }); err != nil {
			return err
		}
		if err := retryTimeouts(ctx, func() error { _, err := js.CreateOrUpdateStream(ctx, cfg); return err }); err != nil {
			return streamErr(st.Name, st.Subjects, err)
		}
		dlq := jetstream.StreamConfig{
			Name:        DLQStreamName(st),
			Description: "invalid events of tideline stream " + st.Name + ", with the reason in the Tl-Reason header",
			Subjects:    []string{DLQSubject(st)},
			Storage:     jetstream.FileStorage,
			MaxAge:      st.Retention.MaxAge,
			MaxBytes:    orUnlimited(st.Retention.MaxBytes / 4),
			// Processors re-publish after a crash under the same message
			// id; the window only has to outlast a restart.
			Duplicates: time.Hour,
			Replicas:   o.Replicas,
		}
		if err := retryTimeouts(ctx, func() error { _, err := js.CreateOrUpdateStream(ctx, dlq); return err }); err != nil {
			return streamErr(dlq.Name, dlq.Subjects, err)
		}
	}
	if err := retryTimeouts(ctx, func() error {
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: CheckpointBucket, Description: "tideline speed-layer checkpoints", Storage: jetstream.FileStorage, Replicas: o.Replicas,
		})
		return err
	}); err != nil {
		return fmt.Errorf("cannot create KV bucket %s: %w", CheckpointBucket, err)
	}
	for _, v := range s.Views {
		if err := retryTimeouts(ctx, func() error {
			_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket: ViewBucket(v.Name), Description: "current windows of tideline view " + v.Name,
				Storage: jetstream.FileStorage, TTL: o.ViewTTL, Replicas: o.Replicas,
			})
			return err
		}); err != nil {
			return fmt.Errorf("cannot create KV bucket %s: %w", ViewBucket(v.Name), err)
		}
	}
	return nil
}

// samePartitions refuses to change how an existing stream with events in
// it is partitioned: its partitions' checkpoints and dedup sets hold the
// events of the old mapping, and an id would now land elsewhere.
func samePartitions(ctx context.Context, js jetstream.JetStream, st *spec.Stream, want *jetstream.SubjectTransformConfig) error {
	s, err := js.Stream(ctx, StreamName(st))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read stream %s: %w", StreamName(st), err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("cannot read stream %s: %w", StreamName(st), err)
	}
	have := info.Config.SubjectTransform
	if info.State.Msgs == 0 || (have == nil && want == nil) || (have != nil && want != nil && *have == *want) {
		return nil
	}
	was := "unpartitioned"
	if have != nil {
		was = "mapped " + have.Source + " -> " + have.Destination
	}
	return fmt.Errorf("cannot change how stream %s is partitioned (it is %s, and holds %d events): the partitions' checkpoints and dedup sets hold the old mapping. Keep partitions as they were, or start a new stream under another name and move producers to it", st.Name, was, info.State.Msgs)
}

// retryTimeouts runs f until it does not time out, five times at most. On
// a cluster, JetStream does not always answer the callers that lost a race
// to create the same stream (several `tideline stream` processes starting
// at once): they time out, and the stream is there when they ask again.
func retryTimeouts(ctx context.Context, f func() error) error {
	var err error
	for attempt := range 5 {
		if err = f(); err == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
	return err
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

func streamErr(name string, subjects []string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && strings.Contains(strings.ToLower(apiErr.Description), "overlap") {
		return fmt.Errorf("cannot create stream %s with subjects %s: another JetStream stream already takes some of them (%s); change the subjects in the spec, or remove the other stream", name, strings.Join(subjects, ","), apiErr.Description)
	}
	return fmt.Errorf("cannot create or update stream %s: %w", name, err)
}
