package spec

import (
	"database/sql"
	"fmt"
	"math"
	"strconv"
	"testing"
)

// TestHLLAgreesWithDuckDB holds approx_count_distinct's Go sketch to its
// DuckDB SQL: the same estimate, to the unit, for counts from 0 to 1M, and
// within the stated error of the true count at 1M. It also checks every
// input of the one step that is not plain integer arithmetic or a single
// IEEE division (linear counting's logarithm) for the same rounding in both.
func TestHLLAgreesWithDuckDB(t *testing.T) {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Linear counting, every number of empty registers.
	rows, err := db.Query(fmt.Sprintf("SELECT v, CAST(round(CAST(%d AS DOUBLE) * ln(CAST(%d AS DOUBLE) / v)) AS BIGINT) FROM range(1, %d) AS t(v)", hllM, hllM, hllM+1))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var v, got int64
		if err := rows.Scan(&v, &got); err != nil {
			t.Fatal(err)
		}
		if want := int64(math.Round(float64(hllM) * math.Log(float64(hllM)/float64(v)))); got != want {
			t.Errorf("%d empty registers: DuckDB %d, Go %d", v, got, want)
		}
		n++
	}
	rows.Close()
	if n != hllM {
		t.Fatalf("checked %d of %d", n, hllM)
	}
	// Sketches of 0 to 1M distinct strings, in Go and in DuckDB.
	if _, err := db.Exec(`CREATE TABLE vals AS SELECT i, 'card-' || i AS s FROM range(1000000) AS t(i)`); err != nil {
		t.Fatal(err)
	}
	first, second := hllRowSQL("x", TypeString, "g")
	q := fmt.Sprintf(`SELECT n, %s FROM (SELECT *, %s FROM (SELECT *, %s FROM
		(SELECT n, n AS g, s AS x FROM vals, (VALUES (0), (1), (7), (100), (3000), (10000), (50000), (1000000)) AS c(n) WHERE i < n
		 UNION ALL SELECT 0, 0, NULL)))
		GROUP BY n ORDER BY n`, hllSQL("x"), second, first)
	rows, err = db.Query(q)
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	defer rows.Close()
	for rows.Next() {
		var count, got int64
		if err := rows.Scan(&count, &got); err != nil {
			t.Fatal(err)
		}
		sk := &Sketch{}
		for i := range count {
			sk.add(HLLHash("card-" + strconv.FormatInt(i, 10)))
		}
		want := sk.Estimate()
		if got != want {
			t.Errorf("%d distinct values: DuckDB estimates %d, Go %d", count, got, want)
		}
		if off := math.Abs(float64(want-count)) / max(1, float64(count)); off > 3*HLLError {
			t.Errorf("%d distinct values: estimate %d is %.2f%% off, beyond 3 standard errors (%.2f%%)", count, want, 100*off, 300*HLLError)
		}
		t.Logf("%d distinct: estimate %d (Go and DuckDB)", count, want)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestSketchMerge holds merging to the sketch of the union: split 20,000
// values over sketches any way, and the merge has the same registers and
// estimate, the sparse form turning dense on the way.
func TestSketchMerge(t *testing.T) {
	whole, parts := &Sketch{}, []*Sketch{{}, {}, {}}
	for i := range 20000 {
		reg, rank := HLLHash(strconv.Itoa(i % 15000)) // some values twice
		whole.add(reg, rank)
		parts[i*7%3].add(reg, rank)
	}
	small := &Sketch{}
	small.add(HLLHash("x"))
	merged := &Sketch{}
	for _, p := range append(parts, small) {
		merged.merge(p)
	}
	whole.add(HLLHash("x"))
	if merged.Estimate() != whole.Estimate() || fmt.Sprint(merged.Dense) != fmt.Sprint(whole.Dense) || whole.Dense == nil {
		t.Fatalf("merged %d, whole %d", merged.Estimate(), whole.Estimate())
	}
	// Through the Sketches of cells, as the operator merges sessions.
	sk := &Sketches{}
	var a, b Cell
	m := &Measure{Kind: ApproxCountDistinct, Arg: &Column{Type: TypeString}}
	k := m.kind()
	for i := range 300 {
		k.add(m, &a, Value{Str: strconv.Itoa(i)}, sk)
		k.add(m, &b, Value{Str: strconv.Itoa(i + 200)}, sk)
	}
	m.Merge(&a, b, sk)
	want := &Sketch{}
	for i := range 500 {
		want.add(HLLHash(strconv.Itoa(i)))
	}
	if got := k.final(a, sk).Int; got != want.Estimate() || a.N != 600 {
		t.Fatalf("merged cells estimate %d (n %d), want %d", got, a.N, want.Estimate())
	}
	if sk.release(&b); sk.Len() != 1 || b.V != 0 {
		t.Fatalf("%d sketches held after releasing one of two", sk.Len())
	}
}

// TestDecodeSketchRefusesForgeries: a sketch read back from a KV bucket,
// which any client with access can write, round-trips when tideline wrote
// it, sparse or dense, and is refused with a reason when its length,
// register or rank is one no sketch has.
func TestDecodeSketchRefusesForgeries(t *testing.T) {
	sparse, dense := &Sketch{}, &Sketch{}
	for i := range 40 {
		sparse.add(HLLHash(strconv.Itoa(i)))
	}
	for i := range 5000 {
		dense.add(HLLHash(strconv.Itoa(i)))
	}
	for _, s := range []*Sketch{sparse, dense} {
		back, err := DecodeSketch(s.AppendBinary(nil))
		if err != nil || back.Estimate() != s.Estimate() {
			t.Fatalf("round trip: %v, estimate %d, want %d", err, back.Estimate(), s.Estimate())
		}
	}
	badDense := dense.AppendBinary(nil)
	badDense[7] = hllRanks + 2
	for name, b := range map[string][]byte{
		"odd length":      {1, 2, 3},
		"too many sparse": make([]byte, 4*(sparseMax+1)),
		"register 4096":   {0, 0x10, 0x00, 0x01},
		"rank 0":          {0, 0x00, 0x05, 0x00},
		"rank 42":         {0, 0x00, 0x05, hllRanks + 2},
		"dense rank 42":   badDense,
	} {
		if _, err := DecodeSketch(b); err == nil {
			t.Errorf("%s: decoded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
