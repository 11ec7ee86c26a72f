package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"tideline/internal/httpauth"
	"time"

	"tideline/internal/oracle"
	"tideline/lake"
	"tideline/spec"
)

// TestServe runs the serving checks on one real stack: it takes a while
// to build, and the last check stops its speed layer.
func TestServe(t *testing.T) {
	f := newFixture(t)
	t.Run("MergedViewsMatchTheOracle", func(t *testing.T) { mergedViewsMatchTheOracle(t, f) })
	t.Run("ViewReadsAgreeWithSQL", func(t *testing.T) { viewReadsAgreeWithSQL(t, f) })
	t.Run("HostileQueriesAreRefused", func(t *testing.T) { hostileQueriesAreRefused(t, f) })
	t.Run("StatsOnlyOfTheSpecsStreams", func(t *testing.T) { statsOnlyOfTheSpecsStreams(t, f) })
	t.Run("AnswersAreBoundedInBytes", func(t *testing.T) { answersAreBoundedInBytes(t, f) })
	t.Run("QueriesAreBoundedInNumber", func(t *testing.T) { queriesAreBoundedInNumber(t, f) })
	t.Run("SlowQueriesDoNotStallReaders", func(t *testing.T) { slowQueriesDoNotStallReaders(t, f) })
	t.Run("StaleSpeedLayerFallsBackToBatch", func(t *testing.T) { staleSpeedLayerFallsBackToBatch(t, f) })
	t.Run("ExpiredRangeSaysSo", func(t *testing.T) { expiredRangeSaysSo(t, f) })
}

// TestServePartitioned is TestServe's reads over a partitioned stream: the
// speed side of every view is merged from its 4 partitions' partial
// windows, written by two group members, and equals the oracle.
func TestServePartitioned(t *testing.T) {
	f := newFixtureWith(t, 4)
	t.Run("MergedViewsMatchTheOracle", func(t *testing.T) { mergedViewsMatchTheOracle(t, f) })
	t.Run("ViewReadsAgreeWithSQL", func(t *testing.T) { viewReadsAgreeWithSQL(t, f) })
}

// expiredRangeSaysSo drops a view's first partition as Retention does:
// a read of windows before where the view now starts answers 410 naming
// it, a read after it answers, SQL naming the view says where it starts,
// and /v1/status shows it.
func expiredRangeSaysSo(t *testing.T, f *fixture) {
	ctx := t.Context()
	tbl := lake.OpenTable(f.store, lake.ViewTable("merchant_minute"))
	snap, err := tbl.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parts := snap.Partitions()
	if len(parts) < 2 {
		t.Fatalf("the fixture's view has %d partitions", len(parts))
	}
	first, err := lake.ParsePartition(parts[0], f.spec.Stream("payments").Partition)
	if err != nil {
		t.Fatal(err)
	}
	kept := first.End()
	commit := lake.Commit{Op: "retention", Partitions: parts[:1], Props: map[string]string{lake.PropRetainedFrom: kept.Format(time.RFC3339Nano)}}
	for _, file := range snap.In(parts[0]) {
		commit.Remove = append(commit.Remove, file.Key)
	}
	if _, err := tbl.Commit(ctx, commit); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", f.http.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(body)
	}
	at := func(tm time.Time) string { return url.QueryEscape(tm.UTC().Format(time.RFC3339)) }
	code, _, body := get("/v1/views/merchant_minute?from=" + at(first.Start))
	if code != http.StatusGone || !strings.Contains(body, kept.UTC().Format(time.RFC3339)) {
		t.Errorf("a read of the dropped range: %d %s, want 410 naming %s", code, body, kept)
	}
	if code, h, _ := get("/v1/views/merchant_minute?from=" + at(kept)); code != http.StatusOK || h.Get("Tideline-Retained-From") == "" {
		t.Errorf("a read of the kept range: %d, header %q", code, h.Get("Tideline-Retained-From"))
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", f.http.URL+"/v1/query", strings.NewReader(`{"sql": "SELECT count(*) FROM merchant_minute"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Tideline-Retained-From"); got != "merchant_minute="+kept.UTC().Format(time.RFC3339) {
		t.Errorf("SQL over the view: Tideline-Retained-From %q", got)
	}
	var status struct {
		Views map[string]ViewStatus `json:"views"`
	}
	if code := f.do("GET", "/v1/status", "", nil, &status); code != http.StatusOK || status.Views["merchant_minute"].RetainedFrom == nil {
		t.Errorf("/v1/status: %d, %+v", code, status.Views["merchant_minute"])
	}
}

// peakRSS is the process's largest resident set so far (VmHWM).
func peakRSS(t *testing.T) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}

// statsOnlyOfTheSpecsStreams: anyone can publish on tl.stats.*; serve
// keeps stats of the spec's streams only (2,000 forged names were listed).
func statsOnlyOfTheSpecsStreams(t *testing.T, f *fixture) {
	for i := range 50 {
		data, _ := json.Marshal(map[string]any{"stream": fmt.Sprint("forged-", i)})
		if err := f.srv.cfg.NC.Publish(fmt.Sprint("tl.stats.forged-", i), data); err != nil {
			t.Fatal(err)
		}
		data, _ = json.Marshal(map[string]any{"stream": "payments"})
		if err := f.srv.cfg.NC.Publish("tl.stats.other", data); err != nil { // a real name on another's subject
			t.Fatal(err)
		}
	}
	if err := f.srv.cfg.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	var res StatsResponse
	if code := f.do("GET", "/v1/stats", "", nil, &res); code != http.StatusOK {
		t.Fatalf("GET /v1/stats: %d", code)
	}
	for name := range res.Streams {
		if f.spec.Stream(name) == nil {
			t.Fatalf("GET /v1/stats lists %q, which is not a stream of the spec", name)
		}
	}
	f.srv.stats.mu.Lock()
	n := len(f.srv.stats.streams)
	f.srv.stats.mu.Unlock()
	if n > len(f.spec.Streams) {
		t.Fatalf("serve keeps stats of %d streams; the spec has %d", n, len(f.spec.Streams))
	}
}

// answersAreBoundedInBytes: an answer past MaxResponseBytes is cut there
// with a reason, and serve's memory does not hold it (1 GB asked for).
func answersAreBoundedInBytes(t *testing.T, f *fixture) {
	before, timeout := f.srv.cfg.MaxResponseBytes, f.srv.cfg.QueryTimeout
	f.srv.cfg.MaxResponseBytes = 1 << 20
	// DuckDB makes the whole 1 GB result before the first row comes out;
	// on a busy machine that took longer than the fixture's 1s, and the
	// answer was the timeout, not the byte limit this is about.
	f.srv.cfg.QueryTimeout = time.Minute
	defer func() { f.srv.cfg.MaxResponseBytes, f.srv.cfg.QueryTimeout = before, timeout }()
	body, _ := json.Marshal(map[string]string{"sql": "SELECT repeat('x', 10000) FROM range(99999)"})
	resp, err := http.Post(f.http.URL+"/v1/query", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var res Result
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("an answer cut at the byte limit is not JSON: %v", err)
	}
	if len(data) > 1<<20+1024 || !strings.Contains(res.Error, "larger than 1048576 bytes") || len(res.Rows) == 0 {
		t.Fatalf("1 GB asked for: %d bytes, %d rows, error %q; want at most 1 MiB, rows up to it, and the limit named", len(data), len(res.Rows), res.Error)
	}
}

// queriesAreBoundedInNumber: past MaxQueries running at once, a query is
// refused at once with 429 and the reason, not queued.
func queriesAreBoundedInNumber(t *testing.T, f *fixture) {
	n := cap(f.srv.slots)
	for range n { // as if n clients were running queries
		f.srv.slots <- struct{}{}
	}
	var e struct {
		Error string `json:"error"`
	}
	code := f.do("POST", "/v1/query", "", map[string]string{"sql": "SELECT 1"}, &e)
	for range n {
		<-f.srv.slots
	}
	if code != http.StatusTooManyRequests || !strings.Contains(e.Error, "queries are running") {
		t.Fatalf("a query past %d running: %d %q; want 429 saying why", n, code, e.Error)
	}
	if code := f.do("POST", "/v1/query", "", map[string]string{"sql": "SELECT 1"}, nil); code != http.StatusOK {
		t.Fatalf("a query once the slots are free: %d", code)
	}
}

// slowQueriesDoNotStallReaders: while two clients loop queries that run to
// the time limit and the views are swapped in again and again, GET
// /v1/views and SELECT 1 are not held up behind them (they were, for the
// length of a query, while queries held a lock every refresh waited for).
func slowQueriesDoNotStallReaders(t *testing.T, f *fixture) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			body, _ := json.Marshal(map[string]string{"sql": "SELECT count(*) FROM range(1000000000) a, range(1000000000) b"})
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "POST", f.http.URL+"/v1/query", bytes.NewReader(body))
				if resp, err := http.DefaultClient.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			f.srv.speedMu.Lock()
			for _, v := range f.srv.views {
				v.dirty = true // a swap every time
			}
			f.srv.speedMu.Unlock()
			_ = f.srv.Refresh(ctx)
			time.Sleep(50 * time.Millisecond)
		}
	})
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(300 * time.Millisecond) // the slow queries are running
	var worst time.Duration
	for i := range 20 {
		start := time.Now()
		if i%2 == 0 {
			if code := f.do("GET", "/v1/views/country_minute", "", nil, nil); code != http.StatusOK {
				t.Fatalf("GET /v1/views beside slow queries: %d", code)
			}
		} else if code := f.do("POST", "/v1/query", "", map[string]string{"sql": "SELECT 1"}, nil); code != http.StatusOK {
			t.Fatalf("SELECT 1 beside slow queries: %d", code)
		}
		worst = max(worst, time.Since(start))
		time.Sleep(50 * time.Millisecond)
	}
	// The slow queries run for the whole time limit; a reader held up
	// behind one waits about that long.
	if limit := f.srv.cfg.QueryTimeout / 2; worst > limit {
		t.Fatalf("the slowest of 20 reads beside slow queries took %s; a reader waited behind them (limit %s)", worst, limit)
	}
	t.Logf("the slowest of 20 reads beside two clients looping %s queries, with refreshes: %s", f.srv.cfg.QueryTimeout, worst)
}

// mergedViewsMatchTheOracle reads every view through GET /v1/views and
// POST /v1/query: batch below the tideline, speed above, each window once,
// all equal to DuckDB's answer from the generator's file.
func mergedViewsMatchTheOracle(t *testing.T, f *fixture) {
	for _, v := range f.spec.Stream("payments").Views {
		want, err := oracle.ViewRows(t.Context(), f.oracle, v, "")
		if err != nil {
			t.Fatal(err)
		}
		var resp ViewResponse
		if code := f.do("GET", "/v1/views/"+v.Name, "", nil, &resp); code != http.StatusOK {
			t.Fatalf("GET /v1/views/%s: %d", v.Name, code)
		}
		sources := map[string]int{}
		for _, r := range resp.Rows {
			sources[r.Source]++
			if (r.Source == "batch") != r.WindowStart.Before(resp.Tideline) {
				t.Errorf("view %s: window %s from %s, tideline %s", v.Name, r.WindowStart, r.Source, resp.Tideline)
			}
		}
		if sources["batch"] == 0 || sources["speed"] == 0 {
			t.Errorf("view %s: rows by source %v; want both", v.Name, sources)
		}
		if d := oracle.Diff(viewRows(t, v, resp.Rows), want); d != "" {
			t.Errorf("GET /v1/views/%s differs from the oracle:\n%s", v.Name, d)
		}
		// The same through SQL.
		var res Result
		if code := f.do("POST", "/v1/query", "", map[string]string{"sql": "SELECT * EXCLUDE (source) FROM " + v.Name}, &res); code != http.StatusOK {
			t.Fatalf("POST /v1/query on %s: %d", v.Name, code)
		}
		got, _ := oracle.FromResult(v, res.Rows)
		if len(got) != len(res.Rows) {
			t.Errorf("POST /v1/query on %s: %d rows, %d distinct windows", v.Name, len(res.Rows), len(got))
		}
		if d := oracle.Diff(got, want); d != "" {
			t.Errorf("POST /v1/query on %s differs from the oracle:\n%s", v.Name, d)
		}
	}
	// A dimension filter and a time range.
	var one ViewResponse
	if code := f.do("GET", "/v1/views/merchant_minute?merchant_id=m-0007&from=2026-01-01T12:00:00Z&to=2026-01-01T12:01:00Z", "", nil, &one); code != http.StatusOK || len(one.Rows) == 0 {
		t.Fatalf("filtered view: %d, %d rows", code, len(one.Rows))
	}
	for _, r := range one.Rows {
		if r.Dims["merchant_id"] != "m-0007" || r.WindowStart.Minute() != 0 {
			t.Errorf("filtered view returned %+v", r)
		}
	}
	if code := f.do("GET", "/v1/views/merchant_minute?nope=1", "", nil, nil); code != http.StatusBadRequest {
		t.Errorf("unknown dimension: %d, want 400", code)
	}
	var status struct {
		Views map[string]ViewStatus `json:"views"`
	}
	if code := f.do("GET", "/v1/status", "", nil, &status); code != http.StatusOK || status.Views["merchant_minute"].Tideline.IsZero() || status.Views["merchant_minute"].PartitionsPending == 0 {
		t.Errorf("status: %d %+v", code, status.Views["merchant_minute"])
	}
	// Nothing was late, so batch found nothing to correct: the windows the
	// speed layer had closed were already exact.
	for name, st := range status.Views {
		if st.Corrections != 0 {
			t.Errorf("view %s: %d corrections with no late events", name, st.Corrections)
			if res, err := f.srv.run(t.Context(), "SELECT * FROM "+spec.QuoteIdent(CorrectionsViewName(name))+" ORDER BY window_start LIMIT 12"); err == nil {
				for _, r := range res.Rows {
					t.Logf("  %v", r)
				}
			}
		}
	}
}

// hostileQueriesAreRefused sends statements that write, escape to files
// or the network, or never end: each gets a 400 with a reason, and the
// server answers normally afterwards. A token guards it all but health.
func hostileQueriesAreRefused(t *testing.T, f *fixture) {
	f.srv.cfg.Token = httpauth.New("s3cret")
	defer func() { f.srv.cfg.Token = httpauth.Token{} }()
	guarded := httptest.NewServer(f.srv.Handler(nil, nil))
	defer guarded.Close()
	open := f.http
	f.http = guarded
	defer func() { f.http = open }()
	// Throughout, the health check and a view read answer.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var unanswered []string
	var mu sync.Mutex
	wg.Go(func() {
		for ctx.Err() == nil {
			for _, path := range []string{"/healthz", "/v1/views/country_minute"} {
				req, _ := http.NewRequestWithContext(ctx, "GET", guarded.URL+path, nil)
				req.Header.Set("Authorization", "Bearer s3cret")
				c := http.Client{Timeout: 2 * time.Second}
				resp, err := c.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if ctx.Err() == nil && (err != nil || resp.StatusCode != http.StatusOK) {
					mu.Lock()
					unanswered = append(unanswered, fmt.Sprint(path, ": ", err))
					mu.Unlock()
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	defer func() {
		cancel()
		wg.Wait()
		if len(unanswered) > 0 {
			t.Errorf("while the hostile queries ran, %d reads went unanswered within 2 s: %v", len(unanswered), unanswered[:min(5, len(unanswered))])
		}
		// The process holds the test and its NATS too; DuckDB's share is
		// bounded by its memory limit, Go's by what the race detector adds.
		slack := int64(1 << 30)
		if raceEnabled {
			slack = 2 << 30
		}
		if peak := peakRSS(t); peak > f.srv.cfg.MemoryLimit+slack {
			t.Errorf("peak RSS %d MiB; serve's DuckDB is capped at %d MiB", peak>>20, f.srv.cfg.MemoryLimit>>20)
		} else {
			t.Logf("peak RSS of the test process %d MiB (DuckDB capped at %d MiB)", peak>>20, f.srv.cfg.MemoryLimit>>20)
		}
	}()
	for _, q := range []string{
		"COPY (SELECT * FROM merchant_minute) TO '/tmp/out.csv'",
		"ATTACH '/tmp/other.db' AS other",
		"INSTALL httpfs",
		"LOAD httpfs",
		"SELECT * FROM read_csv('/etc/passwd')",
		"SELECT * FROM read_text('/etc/passwd')",
		"SELECT * FROM '/etc/passwd'",
		"SELECT * FROM glob('/*')",
		"SELECT * FROM read_parquet('http://127.0.0.1:1/x.parquet')",
		"SELECT * FROM query('SELECT 1')",
		"SELECT 1; DROP VIEW merchant_minute",
		"DROP VIEW merchant_minute",
		"CREATE TABLE t AS SELECT 1",
		"INSERT INTO speed_merchant_minute SELECT * FROM speed_merchant_minute",
		"DELETE FROM speed_merchant_minute",
		"SET enable_external_access = true",
		"PRAGMA database_list",
		"EXPORT DATABASE '/tmp/dump'",
		"SELECT count(*) FROM range(1000000000) a, range(1000000000) b",
		"SELECT * FROM range(10000000)",
		"SELECT * FROM duckdb_settings()",
		"SELEKT 1",
		// File readers hidden in CTEs, subqueries, laterals and joins.
		"WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x",
		"WITH RECURSIVE x AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM x, read_text('/etc/hostname')) SELECT * FROM x",
		"SELECT * FROM merchant_minute WHERE merchant_id IN (SELECT content FROM read_text('/etc/passwd'))",
		"SELECT (SELECT count(*) FROM read_json_auto('/etc/passwd'))",
		"SELECT * FROM range(3) r, LATERAL (SELECT * FROM read_blob('/etc/passwd'))",
		"SELECT * FROM merchant_minute m JOIN read_parquet('/tmp/x.parquet') p ON true",
		"SELECT * FROM (SELECT * FROM glob('/root/*'))",
		"SELECT * FROM merchant_minute UNION ALL SELECT * FROM read_csv_auto('/etc/shadow')",
		"SELECT * FROM parquet_metadata('/tmp/x.parquet')",
		"SELECT * FROM sniff_csv('/etc/passwd')",
		"SELECT * FROM duckdb_secrets()",
		"SELECT * FROM duckdb_extensions()",
		"SELECT * FROM pragma_database_size()",
		"SELECT * FROM 'https://127.0.0.1:1/x.csv'",
		"SELECT * FROM read_csv(['/etc/passwd', '/etc/group'])",
		"SELECT getenv('HOME')",
		"SELECT * FROM duckdb_settings() WHERE name = 'allowed_directories'",
		// Statements that are not one SELECT.
		"CALL pragma_version()",
		"DETACH memory",
		"CHECKPOINT",
		"VACUUM",
		"CREATE MACRO f(x) AS x",
		"UPDATE speed_merchant_minute SET payments = 0",
		"BEGIN TRANSACTION",
		"SELECT 1; SELECT 2",
		"IMPORT DATABASE '/tmp/dump'",
		"RESET allowed_directories",
		// Resource abuse.
		"SELECT list(i) FROM range(1000000000) t(i)",
		"SELECT string_agg(repeat('x', 1000), '') FROM range(10000000)",
		"SELECT * FROM range(1000000) a, range(1000000) b ORDER BY random()",
		"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
		"SELECT count(DISTINCT a.range || b.range) FROM range(100000) a, range(100000) b",
		"SELECT * FROM range(10) WHERE range = (SELECT max(range) FROM range(10000000000))",
	} {
		var e struct {
			Error string `json:"error"`
		}
		start := time.Now()
		code := f.do("POST", "/v1/query", "s3cret", map[string]string{"sql": q}, &e)
		// A limit reached while the answer streams ends it with the
		// reason: 200, rows cut short, and "error".
		if (code != http.StatusBadRequest && code != http.StatusOK) || e.Error == "" {
			t.Errorf("%q: %d %q, want 400 (or an answer cut short) with a reason", q, code, e.Error)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%q took %s to refuse", q, d)
		}
		t.Logf("%-70q -> %s", q, e.Error)
	}
	if code := f.do("POST", "/v1/query", "", map[string]string{"sql": "SELECT 1"}, nil); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code := f.do("GET", "/healthz", "", nil, nil); code != http.StatusOK {
		t.Errorf("healthz after the hostile queries: %d", code)
	}
	var res Result
	if code := f.do("POST", "/v1/query", "s3cret", map[string]string{"sql": "SELECT count(*) FROM merchant_minute"}, &res); code != http.StatusOK || len(res.Rows) != 1 {
		t.Errorf("a normal query after the hostile ones: %d %+v", code, res)
	}
}

// staleSpeedLayerFallsBackToBatch stops the speed layer while events
// keep arriving: views answer from batch alone and say how stale they are,
// rather than fail.
func staleSpeedLayerFallsBackToBatch(t *testing.T, f *fixture) {
	f.stopSpeed()
	time.Sleep(2500 * time.Millisecond)
	data := `{"payment_id":"late-arrival","ts":"` + time.Now().UTC().Format(time.RFC3339) + `","card_id":"c","merchant_id":"m","country":"US","amount":"1.00","currency":"USD","channel":"pos"}`
	if _, err := f.js.Publish(t.Context(), "payments.events.0", []byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", f.http.URL+"/v1/views/merchant_minute", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out ViewResponse
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Tideline-Stale") == "" || out.Stale == "" || len(out.Rows) == 0 {
		t.Fatalf("stale view: %d, header %q, stale %q, %d rows", resp.StatusCode, resp.Header.Get("X-Tideline-Stale"), out.Stale, len(out.Rows))
	}
	for _, r := range out.Rows {
		if r.Source != "batch" {
			t.Fatalf("a stale view served a %s row: %+v", r.Source, r)
		}
	}
	viewReadsAgreeWithSQL(t, f)
}

// viewReadsAgreeWithSQL asks GET /v1/views with filters of every kind, once
// answered from the in-memory index and once, with the index dropped, by
// SQL over the merged view: the answers must be the same rows in the same
// order.
func viewReadsAgreeWithSQL(t *testing.T, f *fixture) {
	var resp ViewResponse
	f.do("GET", "/v1/views/merchant_minute", "", nil, &resp)
	if len(resp.Rows) == 0 {
		t.Fatal("no rows to pick filters from")
	}
	merchant := resp.Rows[len(resp.Rows)/3].Dims["merchant_id"].(string)
	mid := resp.Tideline.Format(time.RFC3339)
	early := resp.Rows[0].WindowStart.Add(30 * time.Second).Format(time.RFC3339)
	var country ViewResponse
	f.do("GET", "/v1/views/country_minute", "", nil, &country)
	cc := country.Rows[0].Dims["country"].(string)
	paths := []string{
		"/v1/views/merchant_minute",
		"/v1/views/merchant_minute?merchant_id=" + merchant,
		"/v1/views/merchant_minute?merchant_id=" + merchant + "&from=" + early,
		"/v1/views/merchant_minute?from=" + early + "&to=" + mid,
		"/v1/views/merchant_minute?from=" + mid,
		"/v1/views/merchant_minute?merchant_id=nobody",
		"/v1/views/merchant_minute?from=" + mid + "&to=" + early, // empty: from after to
		"/v1/views/country_minute?country=" + cc,                 // one dimension of two
		"/v1/views/country_minute?country=" + cc + "&currency=USD",
		"/v1/views/card_5m?to=" + mid,
	}
	for _, path := range paths {
		var indexed, bySQL ViewResponse
		if code := f.do("GET", path, "", nil, &indexed); code != http.StatusOK {
			t.Fatalf("GET %s: %d", path, code)
		}
		name := strings.TrimPrefix(strings.SplitN(path, "?", 2)[0], "/v1/views/")
		vs := f.srv.views[name]
		f.srv.mu.Lock()
		idx := vs.batchIdx
		vs.batchIdx = nil
		f.srv.mu.Unlock()
		code := f.do("GET", path, "", nil, &bySQL)
		f.srv.mu.Lock()
		vs.batchIdx = idx
		f.srv.mu.Unlock()
		if code != http.StatusOK {
			t.Fatalf("GET %s by SQL: %d", path, code)
		}
		a, _ := json.Marshal(indexed.Rows)
		b, _ := json.Marshal(bySQL.Rows)
		if string(a) != string(b) {
			t.Errorf("GET %s: the index answers %d rows, SQL %d, and they differ:\nindex %.600s\nSQL   %.600s", path, len(indexed.Rows), len(bySQL.Rows), a, b)
		}
	}
}
