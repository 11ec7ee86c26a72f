package score

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"

	"tideline/lake"
	"tideline/spec"
)

// BatchView is the view the batch features come from: grouped by card_id
// and country, with payments, amount and amount_max measures.
const BatchView = "card_country_minute"

// SessionView is the view card_session_merchants_30d comes from, if the
// spec has it: card sessions grouped by card_id, with a merchants measure
// (the example counts them with approx_count_distinct).
const SessionView = "card_sessions"

// MerchantTable is the lake table of merchant reference data.
const MerchantTable = "ref/merchants"

// merchantView is its DuckDB view.
const merchantView = "ref_merchants"

var merchantSchema = arrow.NewSchema([]arrow.Field{
	{Name: "merchant_id", Type: arrow.BinaryTypes.String},
	{Name: "category", Type: arrow.BinaryTypes.String},
	{Name: "risk", Type: arrow.BinaryTypes.String},
}, nil)

// CheckBatchView reports whether the spec has the view batch features need.
func CheckBatchView(s *spec.Spec) error {
	v := s.View(BatchView)
	if v == nil {
		return fmt.Errorf("the scorer's batch features need a view %s (group_by: [card_id, country]; measures payments: count, amount: sum(amount), amount_max: max(amount)); add it to the spec, as examples/payments/tideline.yaml has", BatchView)
	}
	var dims, ms []string
	for _, c := range v.GroupBy {
		dims = append(dims, c.Name)
	}
	for _, m := range v.Measures {
		ms = append(ms, m.Name)
	}
	slices.Sort(dims)
	if !slices.Equal(dims, []string{"card_id", "country"}) || !slices.Contains(ms, "payments") || !slices.Contains(ms, "amount") || !slices.Contains(ms, "amount_max") {
		return fmt.Errorf("view %s must group by [card_id, country] and have measures payments, amount and amount_max; it groups by %v with %v", BatchView, dims, ms)
	}
	return nil
}

// SeedMerchants writes a merchant table (the example's) to the lake unless
// one is there: one commit, conditional, so two scorers starting at once
// write it once.
func SeedMerchants(ctx context.Context, store lake.Store, merchants map[string]Merchant) error {
	t := lake.OpenTable(store, MerchantTable)
	snap, err := t.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("cannot read the merchant table %s: %w", MerchantTable, err)
	}
	if snap.Props["seeded"] != "" {
		return nil
	}
	rows := lake.NewRows(merchantSchema, len(merchants))
	for _, id := range slices.Sorted(maps.Keys(merchants)) {
		m := merchants[id]
		rows.Append(spec.Value{Str: id}, spec.Value{Str: m.Category}, spec.Value{Str: m.Risk})
	}
	f, err := lake.PutParquet(ctx, store, MerchantTable+"/merchants.parquet", "all", rows, lake.WriteOptions{})
	if err != nil {
		return fmt.Errorf("cannot write the merchant table: %w", err)
	}
	_, err = t.Commit(ctx, lake.Commit{Op: "seed", Add: []lake.File{f}, Partitions: []string{"all"}, Rows: int64(rows.Len()),
		Props: map[string]string{"seeded": "true"}, IfProps: map[string]string{"seeded": ""}})
	if errors.Is(err, lake.ErrConflict) {
		return nil // another scorer seeded it
	}
	return err
}

// Loader reads batch and reference features from the lake into a Scorer,
// again only when their tables changed.
type Loader struct {
	Spec    *spec.Spec
	Catalog *lake.Catalog
	Store   lake.Store
	tables  map[string]*lake.Table
	loaded  map[string]int64 // table -> version loaded
}

// Load refreshes what changed. On an error the scorer's features from that
// source are marked unavailable, so decisions say fallback.
func (l *Loader) Load(ctx context.Context, s *Scorer) error {
	if l.tables == nil {
		l.tables, l.loaded = map[string]*lake.Table{}, map[string]int64{}
	}
	var errs []error
	if err := l.load(ctx, MerchantTable, merchantView, merchantSchema, func() error { return l.merchants(ctx, s) }); err != nil {
		s.SetMerchants(nil)
		errs = append(errs, err)
	}
	// Batch features come from two views; either changing reads both.
	v := l.Spec.View(BatchView)
	sv := sessionView(l.Spec)
	changed := false
	read := func() error { changed = true; return nil }
	err := l.load(ctx, lake.ViewTable(BatchView), lake.BatchViewName(BatchView), lake.ViewSchema(v), read)
	if err == nil && sv != nil {
		err = l.load(ctx, lake.ViewTable(SessionView), lake.BatchViewName(SessionView), lake.ViewSchema(sv), read)
	}
	if err == nil && (changed || s.batch.Load() == nil) {
		err = l.batch(ctx, s, sv != nil)
	}
	if err != nil {
		for _, t := range []string{lake.ViewTable(BatchView), lake.ViewTable(SessionView)} {
			delete(l.loaded, t) // read again next time
		}
		s.SetBatch(nil)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sessionView is the spec's SessionView if it has the shape the scorer
// reads, else nil: card_session_merchants_30d is then null.
func sessionView(s *spec.Spec) *spec.View {
	v := s.View(SessionView)
	if v == nil || len(v.GroupBy) != 1 || v.GroupBy[0].Name != "card_id" {
		return nil
	}
	for _, m := range v.Measures {
		if m.Name == "merchants" {
			return v
		}
	}
	return nil
}

func (l *Loader) load(ctx context.Context, table, view string, schema *arrow.Schema, read func() error) error {
	t := l.tables[table]
	if t == nil {
		t = lake.OpenTable(l.Store, table)
		l.tables[table] = t
	}
	snap, err := t.Snapshot(ctx)
	if err != nil {
		delete(l.loaded, table)
		return fmt.Errorf("cannot read lake table %s: %w", table, err)
	}
	if v, ok := l.loaded[table]; ok && v == snap.Version {
		return nil
	}
	if _, err := l.Catalog.Refresh(ctx, view, schema, snap); err != nil {
		return fmt.Errorf("cannot open lake table %s: %w", table, err)
	}
	if err := read(); err != nil {
		return err
	}
	l.loaded[table] = snap.Version
	return nil
}

func (l *Loader) merchants(ctx context.Context, s *Scorer) error {
	rows, err := l.Catalog.DB().QueryContext(ctx, "SELECT merchant_id, category, risk FROM "+merchantView)
	if err != nil {
		return fmt.Errorf("cannot read the merchant table: %w", err)
	}
	defer rows.Close()
	m := map[string]Merchant{}
	for rows.Next() {
		var id, cat, risk string
		if err := rows.Scan(&id, &cat, &risk); err != nil {
			return fmt.Errorf("cannot read the merchant table: %w", err)
		}
		m[id] = Merchant{Category: cat, Risk: risk}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("cannot read the merchant table: %w", err)
	}
	s.SetMerchants(m)
	return nil
}

// batch reads each card's last 30 days (of event time, up to the newest
// batch window) from the batch view, and from the session view if there is
// one.
func (l *Loader) batch(ctx context.Context, s *Scorer, sessions bool) error {
	q := fmt.Sprintf(`SELECT card_id, country, sum(payments)::BIGINT, sum(amount)::BIGINT, max(amount_max)::BIGINT FROM %[1]s
		WHERE window_start >= (SELECT max(window_start) FROM %[1]s) - INTERVAL 30 DAY GROUP BY ALL`, spec.QuoteIdent(lake.BatchViewName(BatchView)))
	rows, err := l.Catalog.DB().QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("cannot read batch features from %s: %w", lake.BatchViewName(BatchView), err)
	}
	defer rows.Close()
	b := Batch{}
	for rows.Next() {
		var card, country string
		var n, sum, mx int64
		if err := rows.Scan(&card, &country, &n, &sum, &mx); err != nil {
			return fmt.Errorf("cannot read batch features: %w", err)
		}
		h := b.card(card)
		h.Payments += n
		h.AmountSum += sum
		h.AmountMax = max(h.AmountMax, mx)
		h.Countries[country] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("cannot read batch features: %w", err)
	}
	if sessions {
		if err := l.sessions(ctx, b); err != nil {
			return err
		}
	}
	s.SetBatch(b)
	return nil
}

// sessions reads the most merchants of each card's sessions in the last 30
// days of the session view.
func (l *Loader) sessions(ctx context.Context, b Batch) error {
	q := fmt.Sprintf(`SELECT card_id, max(merchants)::BIGINT FROM %[1]s
		WHERE window_start >= (SELECT max(window_start) FROM %[1]s) - INTERVAL 30 DAY GROUP BY ALL`, spec.QuoteIdent(lake.BatchViewName(SessionView)))
	rows, err := l.Catalog.DB().QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("cannot read batch features from %s: %w", lake.BatchViewName(SessionView), err)
	}
	defer rows.Close()
	for rows.Next() {
		var card string
		var n int64
		if err := rows.Scan(&card, &n); err != nil {
			return fmt.Errorf("cannot read batch features from %s: %w", lake.BatchViewName(SessionView), err)
		}
		b.card(card).SessionMerchants = n
	}
	return rows.Err()
}

// card is the history of a card, made empty if it has none.
func (b Batch) card(id string) *History {
	h := b[id]
	if h == nil {
		h = &History{Countries: map[string]bool{}, SessionMerchants: -1}
		b[id] = h
	}
	return h
}
