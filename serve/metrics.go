package serve

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests *prometheus.CounterVec   // route, code
	latency  *prometheus.HistogramVec // route
	refused  prometheus.Counter
	refresh  prometheus.Histogram
	tideline *prometheus.GaugeVec // view
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tideline_serve_requests_total",
			Help: "HTTP requests served, by route and status code."}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tideline_serve_request_duration_seconds",
			Help: "Time to answer a request.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "tideline_serve_queries_refused_total",
			Help: "SQL queries refused: not one read-only SELECT, too slow or too many rows."}),
		refresh: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tideline_serve_refresh_duration_seconds",
			Help: "Time to swap in new lake commits and speed windows.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		tideline: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tideline_serve_tideline_seconds",
			Help: "The tideline the served view uses, Unix seconds."}, []string{"view"}),
	}
	reg.MustRegister(m.requests, m.latency, m.refused, m.refresh, m.tideline)
	return m
}
