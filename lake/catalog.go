package lake

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	_ "github.com/duckdb/duckdb-go/v2" // registers the "duckdb" driver

	"tideline/spec"
)

// OpenDuckDB opens an embedded DuckDB database (in memory when path is "")
// set up for reading lake files.
func OpenDuckDB(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sql.Open("duckdb", path)
	if err != nil {
		return nil, fmt.Errorf("cannot open DuckDB %q: %w", path, err)
	}
	// Footers are read once per file, not once per query.
	if _, err := db.ExecContext(ctx, "SET parquet_metadata_cache = true"); err != nil {
		db.Close()
		return nil, fmt.Errorf("cannot configure DuckDB: %w", err)
	}
	return db, nil
}

// Catalog exposes lake tables to DuckDB as views over locally cached files.
// Refresh swaps a view to a new snapshot in one statement: a query running
// meanwhile finishes on the files it started with, which stay cached until
// the refresh after.
type Catalog struct {
	db    *sql.DB
	store Store
	cache *Cache

	mu     sync.Mutex
	tables map[string]*catalogTable
}

type catalogTable struct {
	version  int64
	paths    []string
	prev     []string // the generation before, pinned for queries still running
	problems []error
}

// NewCatalog returns a catalog that defines views in db over files of store.
func NewCatalog(db *sql.DB, store Store, cache *Cache) *Catalog {
	return &Catalog{db: db, store: store, cache: cache, tables: map[string]*catalogTable{}}
}

// DB is the catalog's database.
func (c *Catalog) DB() *sql.DB { return c.db }

// RawViewName is the DuckDB view of a stream's raw table.
func RawViewName(stream string) string { return "raw_" + stream }

// BatchViewName is the DuckDB view of a view's batch table.
func BatchViewName(view string) string { return "batch_" + view }

// Refresh points the DuckDB view name at the files of snap. Files that are
// corrupt or missing are left out and returned as problems, each naming its
// object key, so the rest of the table stays readable. If the store cannot
// be reached, the view keeps its old files and the error says so.
func (c *Catalog) Refresh(ctx context.Context, name string, schema *arrow.Schema, snap *Snapshot) ([]error, error) {
	return c.RefreshIn(ctx, c.db, name, schema, snap)
}

// Execer runs a statement: a *sql.DB, or a *sql.Conn inside a transaction.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// RefreshIn is Refresh with the view defined through ex, so a caller can
// swap many views in one transaction. If that transaction rolls back, the
// caller must Forget the names it refreshed.
func (c *Catalog) RefreshIn(ctx context.Context, ex Queryer, name string, schema *arrow.Schema, snap *Snapshot) ([]error, error) {
	files := snap.List()
	paths := make([]string, len(files))
	errs := make([]error, len(files))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			paths[i], errs[i] = c.cache.Fetch(ctx, c.store, f)
		})
	}
	wg.Wait()
	var live []string
	var problems []error
	for i, err := range errs {
		switch {
		case err == nil:
			live = append(live, paths[i])
		case errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotFound):
			problems = append(problems, err)
			slog.Error("leaving a lake file out of its view", "view", name, "key", files[i].Key, "err", err)
		default:
			return nil, fmt.Errorf("cannot refresh view %s to version %d of %s: %w", name, snap.Version, snap.Table, err)
		}
	}
	c.cache.Pin(live)
	sel, err := SelectFiles(ctx, ex, schema, live)
	if err == nil {
		_, err = ex.ExecContext(ctx, "CREATE OR REPLACE VIEW "+spec.QuoteIdent(name)+" AS "+sel)
	}
	if err != nil {
		c.cache.Unpin(live)
		return nil, fmt.Errorf("cannot define view %s over %d file(s) of %s: %w", name, len(live), snap.Table, err)
	}
	c.mu.Lock()
	t := c.tables[name]
	if t == nil {
		t = &catalogTable{}
		c.tables[name] = t
	}
	old := t.prev
	t.version, t.prev, t.paths, t.problems = snap.Version, t.paths, live, problems
	c.mu.Unlock()
	c.cache.Unpin(old)
	return problems, nil
}

// Forget makes the next refresh of every view define it again, whatever
// version it was last refreshed to: for a caller whose transaction rolled
// back.
func (c *Catalog) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.tables {
		t.version = -1
	}
}

// Problems returns the files left out of a view at its last refresh.
func (c *Catalog) Problems(name string) []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.tables[name]; t != nil {
		return t.problems
	}
	return nil
}

// Version is the snapshot version a view was last refreshed to.
func (c *Catalog) Version(name string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.tables[name]; t != nil {
		return t.version
	}
	return 0
}
