package lake

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tideline/spec"
)

// evolvedSpec is the payments example with its contract changed: text
// replaces old in the payments fields.
func evolvedSpec(t *testing.T, old, text string) *spec.Spec {
	t.Helper()
	data, err := os.ReadFile("../examples/payments/tideline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Parse("evolved.yaml", []byte(strings.Replace(string(data), old, text, 1)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const cardPresent = "      card_present: {type: bool}\n"

// TestSelectFilesAcrossContracts reads files written with two contracts
// (v2 adds an optional field) through one projection: the v2 schema reads
// the v1 file's rows with a null, the v1 schema leaves the new column out,
// and no file at all is an empty relation of the schema.
func TestSelectFilesAcrossContracts(t *testing.T) {
	ctx := context.Background()
	v1 := paymentsSpec(t).Stream("payments").Contract
	v2 := evolvedSpec(t, cardPresent, cardPresent+"      device: {type: string, max_length: 16}\n").Stream("payments").Contract
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	old := filepath.Join(dir, "v1.parquet")
	if _, err := WriteParquet(old, genPayments(t, 100, 1, base, time.Minute, 1), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	rows, err := genPaymentRows(v2, 50, 2, base, time.Minute, 101)
	if err != nil {
		t.Fatal(err)
	}
	cur := filepath.Join(dir, "v2.parquet")
	if _, err := WriteParquet(cur, rows, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	db, err := OpenDuckDB(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func(schema *spec.Contract, paths []string, where string) int {
		t.Helper()
		sel, err := SelectFiles(ctx, db, RawSchema(schema), paths)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM ("+sel+") WHERE "+where).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sel, err)
		}
		return n
	}
	if got := count(v2, []string{old}, "device IS NULL"); got != 100 {
		t.Errorf("v1 file read as v2: %d rows with a null device, want 100", got)
	}
	if got := count(v2, []string{old, cur}, "true"); got != 150 {
		t.Errorf("both files read as v2: %d rows, want 150", got)
	}
	if got := count(v2, []string{old, cur}, "device IS NOT NULL"); got == 0 {
		t.Errorf("both files read as v2: no device values from the v2 file")
	}
	if got := count(v1, []string{cur}, "true"); got != 50 {
		t.Errorf("v2 file read as v1: %d rows, want 50", got)
	}
	if got := count(v2, nil, "true"); got != 0 {
		t.Errorf("no files: %d rows", got)
	}
	sel, _ := SelectFiles(ctx, db, RawSchema(v1), []string{cur})
	if strings.Contains(sel, "device") {
		t.Errorf("the v1 projection reads the column v1 does not have: %s", sel)
	}
}

// TestCheckContract records a contract on a raw table as compaction does,
// then holds later contracts to it: compatible ones pass, a breaking one
// is refused naming the field, both definitions and the commit.
func TestCheckContract(t *testing.T) {
	ctx := context.Background()
	store, err := Open(ctx, "file://"+t.TempDir(), S3Config{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tbl := OpenTable(store, RawTable("payments"))
	v1 := paymentsSpec(t).Stream("payments").Contract
	snap, _ := tbl.Snapshot(ctx)
	fp, props := ContractProps(snap, v1)
	if len(props) != 1 {
		t.Fatalf("an empty table should record the contract: %v", props)
	}
	if _, err := tbl.Commit(ctx, Commit{Op: "compact", Source: &SeqRange{From: 1, To: 10}, Meta: map[string]string{MetaContract: fp}, Props: props}); err != nil {
		t.Fatal(err)
	}
	snap, _ = tbl.Snapshot(ctx)
	if _, again := ContractProps(snap, v1); again != nil {
		t.Errorf("a recorded contract is recorded again: %v", again)
	}
	rec, err := Contracts(snap)
	if err != nil || len(rec) != 1 || rec[0].Fingerprint != fp || rec[0].Version != 1 {
		t.Fatalf("Contracts = %+v, %v", rec, err)
	}
	v2 := evolvedSpec(t, cardPresent, cardPresent+"      device: {type: string, max_length: 16}\n")
	if err := CheckContract(snap, "payments", v2.Stream("payments").Contract); err != nil {
		t.Errorf("an added optional field is refused: %v", err)
	}
	v4 := evolvedSpec(t, "amount:       {type: decimal, scale: 2,", "amount:       {type: decimal, scale: 3,")
	err = CheckContract(snap, "payments", v4.Stream("payments").Contract)
	if !errors.Is(err, ErrIncompatible) {
		t.Fatalf("a type change is not refused: %v", err)
	}
	for _, want := range []string{"field amount", "scale: 2", "scale: 3", "commit 1", "raw/payments", fp} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
	if err := CheckSpec(ctx, store, v4); !errors.Is(err, ErrIncompatible) {
		t.Errorf("CheckSpec: %v", err)
	}
}
