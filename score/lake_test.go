package score

import (
	"context"
	"testing"
	"time"

	"tideline/lake"
	"tideline/spec"
)

// TestLoaderReadsBatchFeatures writes batch files of the example's two
// batch-feature views to a lake and has the Loader read them: each card's
// 30 days per country, and the most merchants of its sessions (the
// card_sessions view's approx_count_distinct); a card with no session has
// none. A new session file is read at the next Load, and only then.
func TestLoaderReadsBatchFeatures(t *testing.T) {
	ctx := t.Context()
	s := exampleSpec(t)
	store, err := lake.Open(ctx, "file://"+t.TempDir(), lake.S3Config{}, lake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := lake.OpenDuckDB(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cache, err := lake.NewCache(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC).UnixMicro()
	v := func(x any) spec.Value { return spec.ValueOf(x) }
	write(ctx, t, store, s.View(BatchView), "a",
		[]spec.Value{v(base), v(base + 60e6), v("card-1"), v("US"), v(int64(3)), v(int64(3000)), v(int64(2000))},
		[]spec.Value{v(base), v(base + 60e6), v("card-1"), v("DE"), v(int64(1)), v(int64(500)), v(int64(500))},
		[]spec.Value{v(base), v(base + 60e6), v("card-2"), v("US"), v(int64(2)), v(int64(200)), v(int64(150))})
	sessions := s.View(SessionView)
	write(ctx, t, store, sessions, "a",
		[]spec.Value{v(base), v(base + 300e6), v("card-1"), v(int64(2)), v(int64(2500)), v(int64(2000)), v(int64(2))},
		[]spec.Value{v(base + 900e6), v(base + 1200e6), v("card-1"), v(int64(2)), v(int64(1000)), v(int64(500)), v(int64(4))})
	sc := newScorer(t, s)
	l := &Loader{Spec: s, Catalog: lake.NewCatalog(db, store, cache), Store: store}
	if err := l.Load(ctx, sc); err != nil {
		t.Fatal(err)
	}
	b := *sc.batch.Load()
	if h := b["card-1"]; h == nil || h.Payments != 4 || h.AmountSum != 3500 || h.AmountMax != 2000 || !h.Countries["DE"] || h.SessionMerchants != 4 {
		t.Fatalf("card-1: %+v", h)
	}
	if h := b["card-2"]; h == nil || h.Payments != 2 || h.SessionMerchants != -1 {
		t.Fatalf("card-2, with no session: %+v", h)
	}
	write(ctx, t, store, sessions, "b", []spec.Value{v(base + 1800e6), v(base + 2000e6), v("card-2"), v(int64(7)), v(int64(700)), v(int64(100)), v(int64(6))})
	if err := l.Load(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if h := (*sc.batch.Load())["card-2"]; h.SessionMerchants != 6 || h.Payments != 2 {
		t.Fatalf("card-2 after its session landed: %+v", h)
	}
}

// write commits rows of view v as one batch file of its partition "p".
func write(ctx context.Context, t *testing.T, store lake.Store, v *spec.View, name string, rows ...[]spec.Value) {
	t.Helper()
	r := lake.NewRows(lake.ViewSchema(v), len(rows))
	for _, row := range rows {
		r.Append(row...)
	}
	f, err := lake.PutParquet(ctx, store, lake.ViewTable(v.Name)+"/p/"+name+".parquet", "p", r, lake.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lake.OpenTable(store, lake.ViewTable(v.Name)).Commit(ctx, lake.Commit{Op: "test", Add: []lake.File{f}, Partitions: []string{"p"}}); err != nil {
		t.Fatal(err)
	}
}
