package serve

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/duckdb/duckdb-go/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tideline/internal/httpauth"
	"tideline/lake"
	"tideline/spec"
	"tideline/stream"
)

// Config is what a Server needs. Spec, Store and CacheDir are required;
// without NC and JS the views are batch only (as `tideline query --local`
// reads them).
type Config struct {
	Spec       *spec.Spec
	Store      lake.Store
	NC         *nats.Conn
	JS         jetstream.JetStream
	CacheDir   string
	CacheBytes int64 // default 8 GiB
	// Token, when set, must be sent as "Authorization: Bearer <token>" on
	// everything but the health checks and the dashboard's page.
	Token        httpauth.Token
	QueryTimeout time.Duration // default 5s
	MaxRows      int           // default 100,000
	// MaxResponseBytes bounds the JSON of one answer to POST /v1/query
	// (default 64 MiB); MaxQueries the SQL queries running at once (default
	// 4), past which a query is refused with 429 at once.
	MaxResponseBytes int64
	MaxQueries       int
	// DuckDB's bounds: MemoryLimit (default 2 GiB) and Threads (default
	// the CPUs) for every query and refresh together, and TempDir (default
	// CacheDir + "-tmp") where it spills, at most MaxTempBytes (default 8
	// GiB).
	MemoryLimit  int64
	Threads      int
	TempDir      string
	MaxTempBytes int64
	RefreshEvery time.Duration // default 1s
	// StaleAfter is how far the speed layer's last update may trail the
	// stream's last message before views answer from batch alone (default
	// 30s).
	StaleAfter time.Duration
	// IndexMaxRows bounds the batch rows of a view held in memory for GET
	// /v1/views (default 5,000,000); past it, that view's reads run SQL.
	IndexMaxRows int
	Registry     prometheus.Registerer
	Log          *slog.Logger
}

// Defaults of the bounds on what clients can spend (I8).
const (
	DefaultMaxResponseBytes = 64 << 20
	DefaultMaxQueries       = 4
	DefaultMemoryLimit      = 2 << 30
	DefaultMaxTempBytes     = 8 << 30
)

func (c *Config) validate() error {
	var errs []error
	if c.Spec == nil || c.Store == nil || c.CacheDir == "" {
		errs = append(errs, errors.New("the spec, lake store and cache directory are required"))
	}
	if (c.JS == nil) != (c.NC == nil) {
		errs = append(errs, errors.New("give both the NATS connection and JetStream, or neither (batch only)"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cannot configure serve: %w", errors.Join(errs...))
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = 8 << 30
	}
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = 5 * time.Second
	}
	if c.MaxRows <= 0 {
		c.MaxRows = 100_000
	}
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if c.MaxQueries <= 0 {
		c.MaxQueries = DefaultMaxQueries
	}
	if c.MemoryLimit <= 0 {
		c.MemoryLimit = DefaultMemoryLimit
	}
	if c.Threads <= 0 {
		c.Threads = runtime.NumCPU()
	}
	if c.TempDir == "" {
		c.TempDir = strings.TrimRight(c.CacheDir, "/") + "-tmp"
	}
	if c.MaxTempBytes <= 0 {
		c.MaxTempBytes = DefaultMaxTempBytes
	}
	if c.RefreshEvery <= 0 {
		c.RefreshEvery = time.Second
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = 30 * time.Second
	}
	if c.IndexMaxRows <= 0 {
		c.IndexMaxRows = 5_000_000
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Server holds the merged views and answers queries over them.
type Server struct {
	cfg     Config
	db      *sql.DB
	cache   *lake.Cache
	catalog *lake.Catalog
	metrics *metrics

	// mu guards the in-memory state a refresh swaps in (indexes, tideline,
	// versions), held briefly; DuckDB's own transactions keep SQL queries
	// on one snapshot, so no query holds it while it runs.
	mu    sync.RWMutex
	views map[string]*view
	ready bool

	slots chan struct{} // one per SQL query running for a client

	refreshMu sync.Mutex // one refresh at a time
	synced    bool       // under refreshMu: DuckDB holds every view as last committed

	speedMu sync.Mutex // guards every view's speed fields

	stats statsRing // the speed layer's processors' stats, for the dashboard

	tablesMu sync.Mutex
	tables   map[string]*lake.Table // kept, so each refresh reads only new commits

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// view is what the server knows of one spec view.
type view struct {
	spec     *spec.View
	tideline time.Time            // of the swapped-in snapshot
	version  int64                // of the view table swapped in
	files    map[string]lake.File // its live files: what the batch table holds
	staged   int                  // correction files it names, not yet recorded
	failures []lake.Failure       // partitions whose recompute cannot succeed as things are
	// retainedFrom is where the view's retention starts it: windows
	// before were dropped (zero when none were).
	retainedFrom time.Time
	stale        time.Duration
	loaded       chan struct{} // closed once the speed windows in KV are all read
	// The snapshot in memory, for GET /v1/views; batchIdx is nil when the
	// batch results are too large and reads run SQL.
	batchIdx, speedIdx *rowIndex

	// Under speedMu:
	speed      map[string]stream.Update // the speed layer's windows at or above the tideline; a partitioned stream's are partial
	dirty      bool
	watermark  time.Time
	partWM     []int64   // a partitioned stream's: each partition's watermark
	lastUpdate time.Time // broker time of the last KV write seen
}

// Open builds the views and starts following the lake and the speed layer.
// Close stops it.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cache, err := lake.NewCache(cfg.CacheDir, cfg.CacheBytes)
	if err != nil {
		return nil, err
	}
	db, err := lake.OpenDuckDB(ctx, "")
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, db: db, cache: cache, catalog: lake.NewCatalog(db, cfg.Store, cache), views: map[string]*view{}, tables: map[string]*lake.Table{}, metrics: newMetrics(cfg.Registry),
		slots: make(chan struct{}, cfg.MaxQueries),
		stats: statsRing{streams: map[string][]stream.Stats{}}}
	if err := s.setup(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if cfg.NC != nil {
		if err := s.followStats(); err != nil {
			db.Close()
			return nil, fmt.Errorf("cannot follow the speed layer's stats: %w", err)
		}
	}
	ctx, s.cancel = context.WithCancel(context.Background())
	for _, v := range s.views {
		if cfg.JS == nil {
			close(v.loaded)
			continue
		}
		s.wg.Go(func() { s.followSpeed(ctx, v) })
	}
	s.wg.Go(func() { s.refreshLoop(ctx) })
	return s, nil
}

// setup creates the speed tables and locks the database down: queries may
// read only the cache directory, and cannot change that.
func (s *Server) setup(ctx context.Context) error {
	for _, v := range s.cfg.Spec.Views {
		vw := &view{spec: v, speed: map[string]stream.Update{}, loaded: make(chan struct{})}
		if v.Stream.Partitioned() {
			vw.partWM = make([]int64, v.Stream.Partitions)
			for i := range vw.partWM {
				vw.partWM[i] = math.MinInt64
			}
		}
		s.views[v.Name] = vw
		cols := make([]string, 0, 2+len(v.GroupBy)+len(v.Measures))
		for _, f := range lake.ViewSchema(v).Fields() {
			cols = append(cols, spec.QuoteIdent(f.Name)+" "+lake.DuckDBType(f.Type))
		}
		if _, err := s.db.ExecContext(ctx, "CREATE TABLE "+spec.QuoteIdent(speedTable(v.Name))+" ("+strings.Join(cols, ", ")+")"); err != nil {
			return fmt.Errorf("cannot create the speed table of view %s: %w", v.Name, err)
		}
	}
	if err := os.MkdirAll(s.cfg.TempDir, 0o700); err != nil {
		return fmt.Errorf("cannot create DuckDB's temp directory %s: %w", s.cfg.TempDir, err)
	}
	for _, q := range []string{
		fmt.Sprintf("SET memory_limit = '%dB'", s.cfg.MemoryLimit),
		fmt.Sprintf("SET threads = %d", s.cfg.Threads),
		"SET temp_directory = " + spec.QuoteString(s.cfg.TempDir),
		fmt.Sprintf("SET max_temp_directory_size = '%dB'", s.cfg.MaxTempBytes),
		"SET allowed_directories = [" + spec.QuoteString(s.cfg.CacheDir) + "]",
		"SET enable_external_access = false",
		"SET lock_configuration = true",
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("cannot lock DuckDB down (%s): %w", q, err)
		}
	}
	return nil
}

func speedTable(view string) string { return "speed_" + view }

// batchTable holds the batch results of the snapshot swapped in.
func batchTable(view string) string { return "served_" + view }

// CorrectionsViewName is the DuckDB view of a view's corrections.
func CorrectionsViewName(view string) string { return "corrections_" + view }

// Close stops following and closes the database.
func (s *Server) Close() error {
	s.cancel()
	s.wg.Wait()
	return s.db.Close()
}

// followSpeed keeps the view's speed windows from its KV bucket, every
// current value first, then each change.
func (s *Server) followSpeed(ctx context.Context, v *view) {
	log := s.cfg.Log.With("view", v.spec.Name)
	for ctx.Err() == nil {
		kv, err := s.cfg.JS.KeyValue(ctx, stream.ViewBucket(v.spec.Name))
		var w jetstream.KeyWatcher
		if err == nil {
			w, err = kv.WatchAll(ctx) // a session merged away deletes its key
		}
		if err != nil {
			log.Warn("cannot follow the speed layer's windows; retrying", "bucket", stream.ViewBucket(v.spec.Name), "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
			continue
		}
		for e := range w.Updates() {
			if e == nil {
				select { // the initial values are all in
				case <-v.loaded:
				default:
					close(v.loaded)
				}
				continue
			}
			se, err := stream.DecodeSpeedEntry(v.spec, e)
			if err != nil {
				log.Warn("skipping an unreadable speed-layer value", "key", e.Key(), "err", err)
				continue
			}
			s.speedMu.Lock()
			if se.Gone {
				if _, ok := v.speed[e.Key()]; ok {
					delete(v.speed, e.Key())
					v.dirty = true
				}
			} else if u := se.Window; !se.IsWatermark && (u.Start >= v.tideline.UnixMicro() || v.tideline.IsZero()) {
				v.speed[u.Key()] = u
				v.dirty = true
			}
			switch {
			case se.Part > 0 && se.Part <= len(v.partWM):
				if wm := se.Watermark.UnixMicro(); !se.Watermark.IsZero() && wm > v.partWM[se.Part-1] {
					v.partWM[se.Part-1] = wm
					if w := stream.ViewWatermark(v.spec, v.partWM); w != math.MinInt64 {
						v.watermark = time.UnixMicro(w).UTC()
					}
				}
			case se.Watermark.After(v.watermark):
				v.watermark = se.Watermark
			}
			if se.Written.After(v.lastUpdate) {
				v.lastUpdate = se.Written
			}
			s.speedMu.Unlock()
		}
		_ = w.Stop()
	}
}

func (s *Server) refreshLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.RefreshEvery)
	defer t.Stop()
	for {
		if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn("refresh failed; serving the last snapshot", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh swaps in the lake's newest commits and the speed layer's changed
// windows. Downloads happen before the swap, so queries wait only for the
// swap itself.
func (s *Server) Refresh(ctx context.Context) error {
	start := time.Now()
	// The first swap waits for the speed windows already in KV, so a ready
	// server never answers with the speed side missing.
	for _, v := range s.views {
		select {
		case <-v.loaded:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			s.cfg.Log.Warn("speed windows still loading; serving without them for now", "view", v.spec.Name)
		}
	}
	snaps := map[string]*lake.Snapshot{}
	read := func(name string) error {
		snap, err := s.snapshot(ctx, name)
		if err != nil {
			return err
		}
		for _, f := range snap.List() { // warm the cache outside the lock
			if _, err := s.cache.Fetch(ctx, s.cfg.Store, f); err != nil && !errors.Is(err, lake.ErrCorrupt) && !errors.Is(err, lake.ErrNotFound) {
				return err
			}
		}
		snaps[name] = snap
		return nil
	}
	for _, v := range s.cfg.Spec.Views {
		if err := read(lake.ViewTable(v.Name)); err != nil {
			return err
		}
		if err := read(lake.CorrectionsTable(v.Name)); err != nil {
			return err
		}
	}
	for _, st := range s.cfg.Spec.Streams {
		if err := read(lake.RawTable(st.Name)); err != nil {
			return err
		}
	}
	lastMsg := map[string]time.Time{}
	for _, st := range s.cfg.Spec.Streams {
		if s.cfg.JS == nil {
			lastMsg[st.Name] = time.Now() // no speed layer: batch only
			continue
		}
		if js, err := s.cfg.JS.Stream(ctx, st.Name); err == nil {
			if info, err := js.Info(ctx); err == nil {
				lastMsg[st.Name] = info.State.LastTime
			}
		}
	}

	// Every change goes into DuckDB in one transaction: a query sees the
	// snapshot and tideline before it or after it, never a mix, and holds no
	// lock a refresh waits for (nor does a refresh hold one a query waits
	// for). Only the in-memory state below is swapped under mu, briefly.
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("cannot open a connection to swap the views in: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return fmt.Errorf("cannot begin the views' swap: %w", err)
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
		s.catalog.Forget()
		s.synced = false
		s.speedMu.Lock()
		for _, vs := range s.views {
			vs.dirty = true
		}
		s.speedMu.Unlock()
	}()
	for _, st := range s.cfg.Spec.Streams {
		if err := s.define(ctx, conn, lake.RawViewName(st.Name), lake.RawSchema(st.Contract), snaps[lake.RawTable(st.Name)]); err != nil {
			return err
		}
	}
	type swap struct {
		vs                 *view
		tideline           time.Time
		snap               *lake.Snapshot
		stale              time.Duration
		batchIdx, speedIdx *rowIndex
		newBatch, newSpeed bool
	}
	var swaps []swap
	for _, v := range s.cfg.Spec.Views {
		vs := s.views[v.Name]
		if err := s.define(ctx, conn, CorrectionsViewName(v.Name), lake.CorrectionsSchema(), snaps[lake.CorrectionsTable(v.Name)]); err != nil {
			return err
		}
		snap := snaps[lake.ViewTable(v.Name)]
		if err := s.define(ctx, conn, lake.BatchViewName(v.Name), lake.ViewSchema(v), snap); err != nil {
			return err
		}
		sw := swap{vs: vs, snap: snap}
		// Loaded again only when the files changed: most commits move the
		// tideline or record corrections, and a large view takes seconds.
		changed := !maps.Equal(snap.Files, vs.files)
		if changed || !s.synced {
			// Queries read a table, not Parquet: DuckDB then prunes by
			// its zone maps instead of scanning files on every request.
			q := "CREATE OR REPLACE TABLE " + spec.QuoteIdent(batchTable(v.Name)) + " AS SELECT * FROM " + spec.QuoteIdent(lake.BatchViewName(v.Name)) + " ORDER BY window_start"
			if _, err := conn.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("cannot load the batch results of view %s: %w", v.Name, err)
			}
			idx, err := s.loadBatchIndex(ctx, conn, v, s.cfg.IndexMaxRows)
			if err != nil {
				return err
			}
			sw.batchIdx, sw.newBatch = idx, true
		}
		sw.tideline, _ = time.Parse(time.RFC3339Nano, snap.Props[lake.PropTideline])
		if sw.speedIdx, sw.newSpeed, err = s.swapSpeed(ctx, conn, vs, sw.tideline, !s.synced); err != nil {
			return err
		}
		s.speedMu.Lock()
		if last := lastMsg[v.Stream.Name]; last.Sub(vs.lastUpdate) > s.cfg.StaleAfter {
			sw.stale = last.Sub(vs.lastUpdate)
		}
		s.speedMu.Unlock()
		if sw.stale > 0 != (vs.stale > 0) || !sw.tideline.Equal(vs.tideline) || changed || !s.synced {
			if _, err := conn.ExecContext(ctx, "CREATE OR REPLACE VIEW "+spec.QuoteIdent(v.Name)+" AS "+mergedSQL(v, sw.tideline, sw.stale > 0)); err != nil {
				return fmt.Errorf("cannot define view %s: %w", v.Name, err)
			}
		}
		swaps = append(swaps, sw)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("cannot commit the views' swap: %w", err)
	}
	committed, s.synced = true, true

	s.mu.Lock()
	for _, sw := range swaps {
		vs := sw.vs
		if sw.newBatch {
			vs.batchIdx = sw.batchIdx
		}
		if sw.newSpeed {
			vs.speedIdx = sw.speedIdx
		}
		s.speedMu.Lock() // followSpeed reads the tideline under speedMu only
		vs.tideline = sw.tideline
		s.speedMu.Unlock()
		vs.version, vs.files, vs.stale = sw.snap.Version, sw.snap.Files, sw.stale
		vs.staged = lake.StagedCorrections(sw.snap)
		vs.failures = lake.Failures(sw.snap)
		vs.retainedFrom, _ = time.Parse(time.RFC3339Nano, sw.snap.Props[lake.PropRetainedFrom])
		s.metrics.tideline.WithLabelValues(vs.spec.Name).Set(float64(sw.tideline.Unix()))
	}
	s.ready = true
	s.mu.Unlock()
	s.metrics.refresh.Observe(time.Since(start).Seconds())
	return nil
}

// define points a DuckDB view at a table's snapshot through conn, unless it
// is there already.
func (s *Server) define(ctx context.Context, conn *sql.Conn, name string, schema *arrow.Schema, snap *lake.Snapshot) error {
	if s.synced && s.catalog.Version(name) == snap.Version {
		return nil
	}
	_, err := s.catalog.RefreshIn(ctx, conn, name, schema, snap)
	return err
}

// snapshot reads a lake table's newest snapshot.
func (s *Server) snapshot(ctx context.Context, name string) (*lake.Snapshot, error) {
	s.tablesMu.Lock()
	t := s.tables[name]
	if t == nil {
		t = lake.OpenTable(s.cfg.Store, name)
		s.tables[name] = t
	}
	s.tablesMu.Unlock()
	return t.Snapshot(ctx)
}

// swapSpeed rewrites the view's speed table through conn, and returns its
// new index, if its windows changed (or all is set), with only the windows
// at or above the tideline.
func (s *Server) swapSpeed(ctx context.Context, conn *sql.Conn, v *view, tideline time.Time, all bool) (*rowIndex, bool, error) {
	s.speedMu.Lock()
	if !v.dirty && tideline.Equal(v.tideline) && !all {
		s.speedMu.Unlock()
		return nil, false, nil
	}
	rows := make([]stream.Update, 0, len(v.speed))
	for k, u := range v.speed {
		if u.Start < tideline.UnixMicro() {
			delete(v.speed, k) // batch serves it now
			continue
		}
		rows = append(rows, u)
	}
	if v.spec.Stream.Partitioned() {
		// A part starting below the tideline went above: the window it is
		// part of starts no later than it.
		wm := int64(math.MinInt64)
		if !v.watermark.IsZero() {
			wm = v.watermark.UnixMicro()
		}
		rows = stream.MergeParts(v.spec, rows, wm)
	}
	v.dirty = false
	s.speedMu.Unlock()

	table := speedTable(v.spec.Name)
	if _, err := conn.ExecContext(ctx, "DELETE FROM "+spec.QuoteIdent(table)); err != nil {
		return nil, false, fmt.Errorf("cannot clear %s: %w", table, err)
	}
	err := conn.Raw(func(dc any) error {
		app, err := duckdb.NewAppenderFromConn(dc.(driver.Conn), "", table)
		if err != nil {
			return fmt.Errorf("cannot append to %s: %w", table, err)
		}
		vals := make([]driver.Value, 0, 2+len(v.spec.GroupBy)+len(v.spec.Measures))
		for _, u := range rows {
			vals = append(vals[:0], time.UnixMicro(u.Start).UTC(), time.UnixMicro(u.End).UTC())
			for i, c := range v.spec.GroupBy {
				vals = append(vals, driverValue(u.Dims[i], c.Type))
			}
			for _, m := range u.Measures {
				vals = append(vals, driverValue(m, spec.TypeInt))
			}
			if err := app.AppendRow(vals...); err != nil {
				app.Close()
				return fmt.Errorf("cannot append to %s: %w", table, err)
			}
		}
		return app.Close()
	})
	if err != nil {
		return nil, false, err
	}
	return speedIndex(v.spec, rows), true, nil
}

func driverValue(x spec.Value, t spec.Type) driver.Value {
	switch {
	case x.Null:
		return nil
	case t == spec.TypeString:
		return x.Str
	case t == spec.TypeBool:
		return x.Bool
	case t == spec.TypeTimestamp:
		return time.UnixMicro(x.Int).UTC()
	}
	return x.Int
}

// mergedSQL is a view's definition: batch below the tideline, speed at or
// above it; batch alone when the speed layer is stale.
func mergedSQL(v *spec.View, tideline time.Time, stale bool) string {
	var cols []string
	for _, f := range lake.ViewSchema(v).Fields() {
		cols = append(cols, spec.QuoteIdent(f.Name))
	}
	list := strings.Join(cols, ", ")
	batch := "SELECT " + list + ", 'batch' AS source FROM " + spec.QuoteIdent(batchTable(v.Name))
	if stale {
		return batch
	}
	t := fmt.Sprintf("make_timestamptz(%d)", tideline.UnixMicro())
	if tideline.IsZero() {
		t = "'-infinity'::TIMESTAMPTZ"
	}
	return batch + " WHERE window_start < " + t +
		" UNION ALL SELECT " + list + ", 'speed' AS source FROM " + spec.QuoteIdent(speedTable(v.Name)) + " WHERE window_start >= " + t
}
