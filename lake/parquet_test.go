package lake

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestParquetReadBackByDuckDB writes payments with the lake's writer and
// has DuckDB's own read_parquet check counts, sums, types, order and layout.
func TestParquetReadBackByDuckDB(t *testing.T) {
	const n = 250_000
	rows := genPayments(t, n, 1, time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), time.Hour, 1000)
	path := filepath.Join(t.TempDir(), "p.parquet")
	meta, err := WriteParquet(path, rows, WriteOptions{SortBy: "ts", RowGroupRows: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	// What was written, computed in Go.
	var amount, seq, present, nonNullPresent, idLen int64
	minTS, maxTS := int64(1<<62), int64(-1<<62)
	s := rows.Schema
	ia, iseq, icp, iid, its := s.FieldIndices("amount")[0], s.FieldIndices("_seq")[0], s.FieldIndices("card_present")[0], s.FieldIndices("card_id")[0], s.FieldIndices("ts")[0]
	for i := range rows.Len() {
		r := rows.Row(i)
		amount += r[ia].Int
		seq += r[iseq].Int
		if !r[icp].Null {
			nonNullPresent++
			if r[icp].Bool {
				present++
			}
		}
		idLen += int64(len(r[iid].Str))
		minTS, maxTS = min(minTS, r[its].Int), max(maxTS, r[its].Int)
	}
	if meta.Rows != n || meta.MinTime != minTS || meta.MaxTime != maxTS || meta.Bytes == 0 {
		t.Errorf("meta = %+v, want %d rows from %d to %d", meta, n, minTS, maxTS)
	}

	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var gotN, gotAmount, gotSeq, gotPresent, gotNonNull, gotIDLen, gotMin, gotMax int64
	var tsType string
	err = db.QueryRowContext(t.Context(), `SELECT count(*), sum(amount), sum(_seq), count_if(card_present), count(card_present),
		sum(length(card_id)), epoch_us(min(ts)), epoch_us(max(ts)), any_value(typeof(ts)) FROM read_parquet(?)`, path).
		Scan(&gotN, &gotAmount, &gotSeq, &gotPresent, &gotNonNull, &gotIDLen, &gotMin, &gotMax, &tsType)
	if err != nil {
		t.Fatal(err)
	}
	if gotN != n || gotAmount != amount || gotSeq != seq || gotPresent != present || gotNonNull != nonNullPresent || gotIDLen != idLen || gotMin != minTS || gotMax != maxTS {
		t.Errorf("DuckDB read back n=%d amount=%d seq=%d present=%d/%d idlen=%d ts=%d..%d\n want n=%d amount=%d seq=%d present=%d/%d idlen=%d ts=%d..%d",
			gotN, gotAmount, gotSeq, gotPresent, gotNonNull, gotIDLen, gotMin, gotMax, n, amount, seq, present, nonNullPresent, idLen, minTS, maxTS)
	}
	if tsType != "TIMESTAMP WITH TIME ZONE" {
		t.Errorf("ts reads as %s, want TIMESTAMP WITH TIME ZONE", tsType)
	}

	// Layout: zstd, 3 row groups, statistics present, and row groups in
	// event-time order (each starts at or after the previous one's end).
	rs, err := db.QueryContext(t.Context(), `SELECT row_group_id, row_group_num_rows, compression, stats_min_value IS NOT NULL,
		epoch_us(stats_min::TIMESTAMPTZ), epoch_us(stats_max::TIMESTAMPTZ)
		FROM parquet_metadata(?) WHERE path_in_schema = 'ts' ORDER BY row_group_id`, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	groups, prevMax, total := 0, int64(-1<<62), int64(0)
	for rs.Next() {
		var id, num, lo, hi int64
		var comp string
		var stats bool
		if err := rs.Scan(&id, &num, &comp, &stats, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		groups++
		total += num
		if comp != "ZSTD" || !stats || lo < prevMax {
			t.Errorf("row group %d: compression %s, stats %v, min %d after previous max %d", id, comp, stats, lo, prevMax)
		}
		prevMax = hi
	}
	if groups != 3 || total != n {
		t.Errorf("%d row groups with %d rows, want 3 with %d", groups, total, n)
	}
}

func TestCheckParquetCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ok.parquet")
	rows := genPayments(t, 1000, 2, time.Now(), time.Minute, 1)
	if _, err := WriteParquet(path, rows, WriteOptions{SortBy: "ts"}); err != nil {
		t.Fatal(err)
	}
	if n, err := CheckParquet(path); err != nil || n != 1000 {
		t.Fatalf("CheckParquet = %d, %v", n, err)
	}
	data, _ := os.ReadFile(path)
	for name, bad := range map[string][]byte{
		"truncated": data[:len(data)/2],
		"garbage":   []byte("this is not a parquet file at all"),
		"empty":     {},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := CheckParquet(p); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}
