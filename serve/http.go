package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tideline/lake"
	"tideline/spec"
	"tideline/stream"
)

// Handler is the HTTP API. ingest serves POST /v1/ingest/{stream} when not
// nil; gatherer serves /metrics.
func (s *Server) Handler(ingest http.Handler, gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	route := func(pattern, name string, h http.HandlerFunc) {
		mux.Handle(pattern, s.instrument(name, h))
	}
	route("GET /v1/views", "view_list", s.serveViewList)
	route("GET /v1/views/{view}", "views", s.serveView)
	route("GET /v1/views/{view}/live", "live", s.serveLive)
	route("POST /v1/query", "query", s.serveQuery)
	route("GET /v1/status", "status", s.serveStatus)
	route("GET /v1/stats", "stats", s.serveStats)
	mux.Handle("GET /{$}", dashboard())
	mux.Handle("GET /assets/", dashboard())
	if ingest != nil {
		mux.Handle("POST /v1/ingest/{stream}", s.instrument("ingest", ingest.ServeHTTP))
	}
	if gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.RLock()
		ready := s.ready
		s.mu.RUnlock()
		if !ready {
			http.Error(w, "not ready: the first refresh from the lake has not finished", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return s.authorize(mux)
}

// authorize requires the bearer token, when one is set, on everything but
// the public paths.
func (s *Server) authorize(next http.Handler) http.Handler {
	return s.cfg.Token.Require(next, public)
}

// public paths need no token: the health checks, and the dashboard's page
// and assets, which hold no data (the page asks for the token to read it).
func public(path string) bool {
	return path == "/healthz" || path == "/readyz" || path == "/" || strings.HasPrefix(path, "/assets/")
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) instrument(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h(sw, r)
		s.metrics.requests.WithLabelValues(route, fmt.Sprint(sw.code)).Inc()
		s.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeBusy answers a query refused because every slot is taken.
func writeBusy(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusTooManyRequests, err.Error())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// ViewRow is one window of a merged view, as GET /v1/views returns it.
type ViewRow struct {
	WindowStart time.Time      `json:"window_start"`
	WindowEnd   time.Time      `json:"window_end"`
	Dims        map[string]any `json:"dims"`
	Measures    map[string]any `json:"measures"` // decimals as exact decimal numbers
	Source      string         `json:"source"`   // batch or speed
}

// ViewResponse is GET /v1/views/{view}'s answer.
type ViewResponse struct {
	View      string    `json:"view"`
	Tideline  time.Time `json:"tideline"`
	Watermark time.Time `json:"watermark"`
	Stale     string    `json:"stale,omitempty"` // how far the speed layer trails, when views answer from batch alone
	Rows      []ViewRow `json:"rows"`
}

// serveView answers GET /v1/views/{view}?from=&to=&<dim>=<value>.
func (s *Server) serveView(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("view")
	vs := s.views[name]
	if vs == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no view %q; GET /v1/status lists them", name))
		return
	}
	v := vs.spec
	q := r.URL.Query()
	from, err1 := timeOrZero(q.Get("from"))
	to, err2 := timeOrZero(q.Get("to"))
	if err := errors.Join(err1, err2); err != nil {
		writeError(w, http.StatusBadRequest, "from and to are RFC 3339 times, like 2026-11-25T12:00:00Z")
		return
	}
	for k := range q {
		if k != "from" && k != "to" && !slices.ContainsFunc(v.GroupBy, func(c *spec.Column) bool { return c.Name == k }) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("view %s has no dimension %q", name, k))
			return
		}
	}
	eq, want := make([]any, len(v.GroupBy)), make([]bool, len(v.GroupBy))
	for i, c := range v.GroupBy {
		if !q.Has(c.Name) {
			continue
		}
		val, err := dimArg(c, q.Get(c.Name))
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		eq[i], want[i] = val, true
	}
	s.mu.RLock()
	batch, speed, tideline, stale, kept := vs.batchIdx, vs.speedIdx, vs.tideline, vs.stale, vs.retainedFrom
	s.mu.RUnlock()
	// A range the view's retention dropped is not empty: it is gone.
	if !kept.IsZero() {
		w.Header().Set("Tideline-Retained-From", kept.UTC().Format(time.RFC3339))
		if (!from.IsZero() && from.Before(kept)) || (!to.IsZero() && !to.After(kept)) {
			writeError(w, http.StatusGone, fmt.Sprintf("view %s keeps windows from %s on (its retention is %s); earlier ones were dropped: ask from %s",
				name, kept.UTC().Format(time.RFC3339), v.Retention, kept.UTC().Format(time.RFC3339)))
			return
		}
	}
	var rows [][]any
	var nbatch int // rows[:nbatch] are batch, the rest speed
	if batch != nil {
		lo, hi := bounds(from, to)
		cut := int64(math.MinInt64)
		if !tideline.IsZero() {
			cut = tideline.UnixMicro()
		}
		if stale > 0 {
			cut = math.MaxInt64
		}
		rows = batch.appendRange(nil, lo, min(hi, cut), eq, want)
		nbatch = len(rows)
		if stale == 0 {
			rows = speed.appendRange(rows, max(lo, cut), hi, eq, want)
		}
		if len(rows) > s.cfg.MaxRows {
			s.metrics.refused.Inc()
			writeError(w, http.StatusBadRequest, fmt.Sprintf("the answer has more than %d rows; narrow from and to, or filter by a dimension", s.cfg.MaxRows))
			return
		}
	} else {
		release, err := s.acquire()
		if err != nil {
			writeBusy(w, err)
			return
		}
		rows, nbatch, err = s.viewSQL(r.Context(), v, from, to, eq, want)
		release()
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	s.speedMu.Lock()
	watermark := vs.watermark
	s.speedMu.Unlock()
	var staleText string
	if stale > 0 {
		staleText = stale.Round(time.Second).String()
		w.Header().Set("X-Tideline-Stale", staleText)
	}
	buf := bufPool.Get().(*[]byte)
	*buf = appendViewResponse((*buf)[:0], v, tideline, watermark, staleText, rows, nbatch)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(*buf)))
	_, _ = w.Write(*buf)
	if cap(*buf) <= 1<<20 {
		bufPool.Put(buf)
	}
}

var bufPool = sync.Pool{New: func() any { return new([]byte) }}

// viewSQL answers a view read with SQL over the merged view, for views
// whose batch results are too large to hold in memory. It returns the rows
// without their source column, batch rows first.
func (s *Server) viewSQL(ctx context.Context, v *spec.View, from, to time.Time, eq []any, want []bool) ([][]any, int, error) {
	where, args := []string{"true"}, []any{}
	if !from.IsZero() {
		where, args = append(where, "window_start >= ?"), append(args, from)
	}
	if !to.IsZero() {
		where, args = append(where, "window_start < ?"), append(args, to)
	}
	order := []string{"source", "window_start"}
	for i, c := range v.GroupBy {
		order = append(order, spec.QuoteIdent(c.Name))
		if want[i] {
			where, args = append(where, spec.QuoteIdent(c.Name)+" = ?"), append(args, eq[i])
		}
	}
	// 'batch' sorts before 'speed', and batch windows are all before speed
	// ones: the order is (window_start, dims) either way.
	res, err := s.run(ctx, "SELECT * FROM "+spec.QuoteIdent(v.Name)+" WHERE "+strings.Join(where, " AND ")+" ORDER BY "+strings.Join(order, ", "), args...)
	if err != nil {
		return nil, 0, err
	}
	nbatch := 0
	for i, row := range res.Rows {
		if row[len(row)-1] == "batch" {
			nbatch = i + 1
		}
		res.Rows[i] = row[:len(row)-1]
	}
	return res.Rows, nbatch, nil
}

// dimArg turns a query parameter into a value of the dimension's type.
func dimArg(c *spec.Column, s string) (any, error) {
	switch c.Type {
	case spec.TypeString:
		return s, nil
	case spec.TypeBool:
		return s == "true", nil
	case spec.TypeDecimal:
		return spec.ParseDecimal(s, c.Scale)
	case spec.TypeTimestamp:
		return time.Parse(time.RFC3339Nano, s)
	}
	var n int64
	_, err := fmt.Sscan(s, &n)
	if err != nil {
		return nil, fmt.Errorf("dimension %s is an integer, not %q", c.Name, s)
	}
	return n, nil
}

// serveQuery answers POST /v1/query {"sql": "..."}.
func (s *Server) serveQuery(w http.ResponseWriter, r *http.Request) {
	var in struct {
		SQL string `json:"sql"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&in); err != nil || strings.TrimSpace(in.SQL) == "" {
		writeError(w, http.StatusBadRequest, `send {"sql": "SELECT ..."} as JSON, at most 1 MiB`)
		return
	}
	if err := s.checkSQL(r.Context(), in.SQL); err != nil {
		s.metrics.refused.Inc()
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	release, err := s.acquire()
	if err != nil {
		writeBusy(w, err)
		return
	}
	defer release()
	s.retentionNotice(w, in.SQL)
	s.streamQuery(r.Context(), w, in.SQL)
}

// retentionNotice says, in a Tideline-Retained-From header per view the
// query names, where the view's retention starts it: SQL over the dropped
// range finds no rows, and this says why.
func (s *Server) retentionNotice(w http.ResponseWriter, sql string) {
	lower := strings.ToLower(sql)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for name, vs := range s.views {
		if !vs.retainedFrom.IsZero() && strings.Contains(lower, strings.ToLower(name)) {
			w.Header().Add("Tideline-Retained-From", name+"="+vs.retainedFrom.UTC().Format(time.RFC3339))
		}
	}
}

// ViewStatus is one view's line of GET /v1/status.
type ViewStatus struct {
	Tideline        time.Time `json:"tideline"`
	Watermark       time.Time `json:"watermark"`
	SpeedLastUpdate time.Time `json:"speed_last_update"`
	Stale           string    `json:"stale,omitempty"`
	LastCompaction  time.Time `json:"last_compaction"`
	Covered         time.Time `json:"covered"`
	// PartitionsPending counts partitions with raw data at or above the
	// tideline: not yet sealed, recomputed and passed.
	PartitionsPending int   `json:"partitions_pending"`
	Corrections       int64 `json:"corrections"`
	// CorrectionsStaged counts correction files whose view commit has
	// landed and which the worker has yet to record: not yet counted in
	// corrections.
	CorrectionsStaged int   `json:"corrections_staged"`
	BatchVersion      int64 `json:"batch_version"`
	// RetainedFrom is where the view's retention starts it: windows before
	// were dropped, and a read of them answers 410.
	RetainedFrom *time.Time `json:"retained_from,omitempty"`
	// Failures are partitions whose recompute failed in a way no retry
	// fixes (a query DuckDB refuses, a count check, a corrupt file): they
	// hold the tideline until the cause is fixed and a recompute succeeds.
	Failures []lake.Failure `json:"failures,omitempty"`
}

// serveStatus answers GET /v1/status.
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	out := map[string]ViewStatus{}
	raws := map[string]*lake.Snapshot{}
	for _, st := range s.cfg.Spec.Streams {
		snap, err := s.snapshot(ctx, lake.RawTable(st.Name))
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		raws[st.Name] = snap
	}
	for name, vs := range s.views {
		raw := raws[vs.spec.Stream.Name]
		st := ViewStatus{LastCompaction: raw.Time}
		st.Covered, _ = time.Parse(time.RFC3339Nano, raw.Props[lake.PropCovered])
		s.mu.RLock()
		st.Tideline, st.BatchVersion, st.CorrectionsStaged, st.Failures = vs.tideline, vs.version, vs.staged, vs.failures
		if !vs.retainedFrom.IsZero() {
			kept := vs.retainedFrom
			st.RetainedFrom = &kept
		}
		if vs.stale > 0 {
			st.Stale = vs.stale.Round(time.Second).String()
		}
		s.mu.RUnlock()
		s.speedMu.Lock()
		st.Watermark, st.SpeedLastUpdate = vs.watermark, vs.lastUpdate
		s.speedMu.Unlock()
		for _, p := range raw.Partitions() {
			if pp, err := lake.ParsePartition(p, vs.spec.Stream.Partition); err == nil && pp.End().After(st.Tideline) {
				st.PartitionsPending++
			}
		}
		if res, err := s.run(ctx, "SELECT count(*) FROM "+spec.QuoteIdent(CorrectionsViewName(name))); err == nil && len(res.Rows) == 1 {
			st.Corrections, _ = res.Rows[0][0].(int64)
		}
		out[name] = st
	}
	writeJSON(w, http.StatusOK, map[string]any{"views": out})
}

// liveWriteTimeout is how long one write to a live reader may take.
const liveWriteTimeout = 30 * time.Second

// serveLive streams the view's window updates as server-sent events, one
// event per update, as the speed layer publishes them.
func (s *Server) serveLive(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("view")
	if s.views[name] == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no view %q", name))
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported here")
		return
	}
	msgs := make(chan *nats.Msg, 256)
	sub, err := s.cfg.NC.ChanSubscribe(stream.ViewSubject(name), msgs)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "cannot subscribe to the speed layer: "+err.Error())
		return
	}
	defer sub.Unsubscribe()
	// A live reader stays as long as it reads: no deadline for the whole
	// answer, one per write, so a client that stops reading is let go.
	rc := http.NewResponseController(w)
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(liveWriteTimeout)) }
	deadline()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ping.C:
			deadline()
			fmt.Fprint(w, ": ping\n\n")
		case m := <-msgs:
			deadline()
			for line := range strings.Lines(string(m.Data)) {
				fmt.Fprintf(w, "event: update\ndata: %s\n\n", strings.TrimSpace(line))
			}
		}
		flusher.Flush()
	}
}
