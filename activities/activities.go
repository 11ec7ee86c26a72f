package activities

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"tideline/lake"
	"tideline/spec"
)

// Error types of non-retryable application errors. A workflow or a user
// matches them by ApplicationError.Type().
const (
	ErrTypeBadData     = "BadData"     // the lake holds something that cannot be read as its commit says
	ErrTypeSpec        = "SpecError"   // the request names what the spec does not have
	ErrTypeDataQuality = "DataQuality" // a count check failed: the run's output is not trusted
	ErrTypeBadInput    = "BadInput"    // a workflow input that can never work
)

// NonRetryable lists the error types a retry cannot fix.
var NonRetryable = []string{ErrTypeBadData, ErrTypeSpec, ErrTypeDataQuality, ErrTypeBadInput, ErrTypeSQL}

// Config is what the activities need. Spec, Store, JS and DB are required.
type Config struct {
	Spec  *spec.Spec
	Store lake.Store
	JS    jetstream.JetStream
	DB    *sql.DB     // DuckDB, for recompute and reading batch files
	Cache *lake.Cache // local copies of lake files DuckDB reads
	// TmpDir holds files on their way to the store (os.TempDir() if "").
	TmpDir string
	// Temporal lets backfill planning see how earlier partition runs
	// ended; without it, mode "failed" finds nothing.
	Temporal client.Client
	// ChunkMessages is how many messages Compact commits at once
	// (default 250,000).
	ChunkMessages int
	// ClockSkew is how far the worker's clock may be ahead of the NATS
	// server's (default 1s).
	ClockSkew time.Duration
	// SpeedGrace is how long the speed layer may go without writing its
	// watermark before Advance stops waiting for it to close a partition's
	// windows (default 2m): a stopped speed layer does not hold the
	// tideline for ever.
	SpeedGrace time.Duration
	Metrics    *Metrics
	Log        *slog.Logger
	Now        func() time.Time // time.Now if nil
}

// Validate checks the config and fills in defaults.
func (c *Config) Validate() error {
	var errs []error
	if c.Spec == nil {
		errs = append(errs, errors.New("no spec"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("no lake store"))
	}
	if c.JS == nil {
		errs = append(errs, errors.New("no JetStream connection"))
	}
	if c.DB == nil {
		errs = append(errs, errors.New("no DuckDB"))
	}
	if c.Cache == nil {
		errs = append(errs, errors.New("no lake cache"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cannot configure the activities: %w", errors.Join(errs...))
	}
	if c.TmpDir == "" {
		c.TmpDir = os.TempDir()
	}
	if c.ChunkMessages <= 0 {
		c.ChunkMessages = 250_000
	}
	if c.ClockSkew <= 0 {
		c.ClockSkew = time.Second
	}
	if c.SpeedGrace <= 0 {
		c.SpeedGrace = 2 * time.Minute
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Activities are the batch layer's activities. Workflows refer to them
// through a nil pointer (var a *Activities) and its method values.
type Activities struct {
	Config

	mu     sync.Mutex
	tables map[string]*lake.Table // kept, so each read replays only new commits
}

// New checks cfg and returns the activities.
func New(cfg Config) (*Activities, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Activities{Config: cfg, tables: map[string]*lake.Table{}}, nil
}

func (a *Activities) stream(name string) (*spec.Stream, error) {
	st := a.Spec.Stream(name)
	if st == nil {
		return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot find stream %q in spec %s", name, a.Spec.File), ErrTypeSpec, nil)
	}
	return st, nil
}

func (a *Activities) view(name string) (*spec.View, error) {
	v := a.Spec.View(name)
	if v == nil {
		return nil, temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot find view %q in spec %s", name, a.Spec.File), ErrTypeSpec, nil)
	}
	return v, nil
}

// table returns the lake table called name, opened once.
func (a *Activities) table(name string) *lake.Table {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.tables[name]
	if t == nil {
		t = lake.OpenTable(a.Store, name)
		a.tables[name] = t
	}
	return t
}

func (a *Activities) rawTable(st *spec.Stream) *lake.Table { return a.table(lake.RawTable(st.Name)) }

func (a *Activities) viewTable(v *spec.View) *lake.Table { return a.table(lake.ViewTable(v.Name)) }

// fromLake turns lake errors that no retry fixes into non-retryable ones.
func fromLake(err error) error {
	if errors.Is(err, lake.ErrCorrupt) {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadData, err)
	}
	return err
}

// Metrics are the batch layer's Prometheus metrics.
type Metrics struct {
	Compacted   *prometheus.CounterVec   // stream, outcome: rows, rejected, expired
	DataQuality *prometheus.CounterVec   // step
	Recomputes  *prometheus.CounterVec   // view
	Duration    *prometheus.HistogramVec // activity
	Corrections *prometheus.CounterVec   // view, kind: speed, batch
	Tideline    *prometheus.GaugeVec     // view: unix seconds
	Covered     *prometheus.GaugeVec     // stream: unix seconds
	Optimized   *prometheus.CounterVec   // stream: partitions rewritten
	Vacuumed    *prometheus.CounterVec   // table: objects deleted
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Compacted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_compact_events_total",
			Help: "Messages compaction read, by outcome: rows (committed to the raw table) rejected (invalid) or expired (older than the lake keeps)."}, []string{"stream", "outcome"}),
		DataQuality: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_data_quality_failures_total",
			Help: "Count checks that failed, by step: compact or recompute. The run failed without retrying."}, []string{"step"}),
		Recomputes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_recomputes_total",
			Help: "View partitions recomputed from raw data."}, []string{"view"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tideline_activity_duration_seconds",
			Help: "Time an activity attempt took.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)}, []string{"activity"}),
		Corrections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_corrections_total",
			Help: "Windows whose served value batch changed: kind speed (the speed layer's value) or batch (an older batch value, after late data)."}, []string{"view", "kind"}),
		Tideline: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tideline_tideline_seconds",
			Help: "The view's tideline, Unix seconds: below it serving reads batch results."}, []string{"view"}),
		Covered: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tideline_compact_covered_seconds",
			Help: "Broker time up to which compaction has committed every message of the stream, Unix seconds."}, []string{"stream"}),
		Optimized: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_optimized_partitions_total",
			Help: "Sealed raw partitions whose files Optimize rewrote into one."}, []string{"stream"}),
		Vacuumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_vacuumed_objects_total",
			Help: "Lake objects Vacuum deleted: unreferenced data files and log entries a checkpoint covers."}, []string{"table"}),
	}
	reg.MustRegister(m.Compacted, m.DataQuality, m.Recomputes, m.Duration, m.Corrections, m.Tideline, m.Covered, m.Optimized, m.Vacuumed)
	return m
}

func (a *Activities) observe(name string, start time.Time) {
	a.Metrics.Duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
}

// heartbeating runs fn, heartbeating every few seconds while it runs, for
// steps (a DuckDB query) that cannot heartbeat themselves.
func heartbeating(ctx context.Context, details any, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			activity.RecordHeartbeat(ctx, details)
		}
	}
}
