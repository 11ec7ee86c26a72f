package stream

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the speed layer's Prometheus metrics.
type Metrics struct {
	Events        *prometheus.CounterVec   // stream, outcome
	Late          *prometheus.CounterVec   // view
	DeadLettered  *prometheus.CounterVec   // stream, source
	Latency       *prometheus.HistogramVec // stream: broker receive to applied
	Freshness     *prometheus.HistogramVec // stream: broker receive to window update published
	WatermarkLag  *prometheus.GaugeVec     // stream: now - watermark
	Pending       *prometheus.GaugeVec     // stream: messages not yet delivered
	Checkpoint    *prometheus.HistogramVec // stream
	CheckpointLen *prometheus.GaugeVec     // stream: bytes
	Updates       *prometheus.CounterVec   // view, final
	OpenWindows   *prometheus.GaugeVec     // stream
	Ingested      *prometheus.CounterVec   // stream, result: accepted, duplicate, rejected
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_stream_events_total",
			Help: "Messages the speed layer consumed, by outcome: applied, invalid, duplicate, late, filtered."}, []string{"stream", "outcome"}),
		Late: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_stream_late_events_total",
			Help: "Events that arrived after every window of the view they belong to had closed; batch counts them."}, []string{"view"}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_stream_dead_lettered_total",
			Help: "Invalid events published to the dead-letter stream."}, []string{"stream", "source"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tideline_stream_processing_latency_seconds",
			Help: "Time from JetStream storing an event to the processor applying it.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"stream"}),
		Freshness: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tideline_stream_freshness_seconds",
			Help: "Time from JetStream storing an event to its window update being published, for the oldest event of each flush.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"stream"}),
		WatermarkLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tideline_stream_watermark_lag_seconds",
			Help: "Wall time minus the watermark."}, []string{"stream"}),
		Pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tideline_stream_consumer_pending",
			Help: "Messages in the stream the processor has not consumed yet."}, []string{"stream"}),
		Checkpoint: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tideline_stream_checkpoint_duration_seconds",
			Help: "Time to encode and store a checkpoint.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"stream"}),
		CheckpointLen: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tideline_stream_checkpoint_bytes",
			Help: "Size of the last checkpoint."}, []string{"stream"}),
		Updates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_stream_window_updates_total",
			Help: "Window updates published, final ones included."}, []string{"view", "final"}),
		OpenWindows: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tideline_stream_open_windows",
			Help: "Windows held open in memory."}, []string{"stream"}),
		Ingested: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_ingest_events_total",
			Help: "Events posted to the HTTP ingest endpoint, by result: accepted, duplicate, rejected."}, []string{"stream", "result"}),
	}
	reg.MustRegister(m.Events, m.Late, m.DeadLettered, m.Latency, m.Freshness, m.WatermarkLag, m.Pending, m.Checkpoint, m.CheckpointLen, m.Updates, m.OpenWindows, m.Ingested)
	return m
}
