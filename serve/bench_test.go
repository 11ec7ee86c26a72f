package serve

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tideline/internal/devstack"
)

// The query the serving benchmarks ask: one merchant over one hour.
const (
	benchMerchant = "m-0007"
	benchFrom     = "2026-01-01T11:30:00Z"
	benchTo       = "2026-01-01T12:30:00Z"
)

var (
	heyRPS = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	heyP50 = regexp.MustCompile(`50%+ in ([\d.]+) secs`)
	heyP99 = regexp.MustCompile(`99%+ in ([\d.]+) secs`)
)

// BenchmarkServeViews asks GET /v1/views for one merchant over one hour
// with `hey` at 1, 16 and 64 concurrent clients for 2 s; ns/op is the p99.
// Two anchors per cN: cNAnchorInProcess runs the same SQL on the same
// server in-process for 2 s, with as many goroutines, no HTTP and no JSON;
// cNAnchorHealthz is hey against /healthz, which does nothing, on the same
// server: the floor that hey and HTTP on this machine set.
func BenchmarkServeViews(b *testing.B) {
	hey := filepath.Join(devstack.FindBinDir(), "hey")
	if _, err := os.Stat(hey); err != nil {
		b.Skipf("no %s: run `make tools`", hey)
	}
	f := newFixture(b)
	f.srv.cfg.QueryTimeout = time.Minute // a queue of 64 clients must not time out
	url := fmt.Sprintf("%s/v1/views/merchant_minute?merchant_id=%s&from=%s&to=%s", f.http.URL, benchMerchant, benchFrom, benchTo)
	from, _ := time.Parse(time.RFC3339, benchFrom)
	to, _ := time.Parse(time.RFC3339, benchTo)
	sql := `SELECT * FROM "merchant_minute" WHERE window_start >= ? AND window_start < ? AND "merchant_id" = ? ORDER BY window_start, "merchant_id", source`
	for _, c := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("c%d", c), func(b *testing.B) { runHey(b, hey, c, url) })
		b.Run(fmt.Sprintf("c%dAnchorHealthz", c), func(b *testing.B) { runHey(b, hey, c, f.http.URL+"/healthz") })
		b.Run(fmt.Sprintf("c%dAnchorInProcess", c), func(b *testing.B) {
			var lat []time.Duration
			var elapsed time.Duration
			for b.Loop() {
				lat = lat[:0]
				var mu sync.Mutex
				var wg sync.WaitGroup
				start := time.Now()
				for range c {
					wg.Go(func() {
						for time.Since(start) < heyFor {
							t := time.Now()
							if _, err := f.srv.run(context.Background(), sql, from, to, benchMerchant); err != nil {
								b.Error(err)
								return
							}
							d := time.Since(t)
							mu.Lock()
							lat = append(lat, d)
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				elapsed = time.Since(start)
			}
			slices.Sort(lat)
			p99 := lat[len(lat)*99/100]
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(p99.Nanoseconds()), "ns/op")
		})
	}
}

// heyFor is how long each load runs: at 64 clients, 2 s is some 25,000
// requests: the p99 is the 250th slowest.
const heyFor = 2 * time.Second

// runHey runs hey for heyFor with c clients against url and reports its
// requests/s, p50 and p99; ns/op is the p99.
func runHey(b *testing.B, hey string, c int, url string) {
	var rps, p50, p99 float64
	for b.Loop() {
		out, err := exec.Command(hey, "-z", heyFor.String(), "-c", strconv.Itoa(c), url).CombinedOutput()
		m1, m2, m3 := heyRPS.FindSubmatch(out), heyP50.FindSubmatch(out), heyP99.FindSubmatch(out)
		if err != nil || m1 == nil || m2 == nil || m3 == nil {
			b.Fatalf("hey: %v\n%s", err, out)
		}
		rps, _ = strconv.ParseFloat(string(m1[1]), 64)
		p50, _ = strconv.ParseFloat(string(m2[1]), 64)
		p99, _ = strconv.ParseFloat(string(m3[1]), 64)
	}
	b.ReportMetric(rps, "req/s")
	b.ReportMetric(p50*1000, "p50-ms")
	b.ReportMetric(p99*1000, "p99-ms")
	b.ReportMetric(p99*1e9, "ns/op")
}

// BenchmarkServeViewsAbused asks GET /v1/views as BenchmarkServeViews does,
// with 16 clients for 2 s, while 4 clients loop SQL queries that run to a
// 5 s limit and 100 clients hold connections open mid-request; ns/op is
// the p99. Its anchor, c16AnchorQuiet, is the same read in the same run
// with no abuse. Views are swapped in every second throughout, as serve
// does.
func BenchmarkServeViewsAbused(b *testing.B) {
	hey := filepath.Join(devstack.FindBinDir(), "hey")
	if _, err := os.Stat(hey); err != nil {
		b.Skipf("no %s: run `make tools`", hey)
	}
	f := newFixture(b)
	f.srv.cfg.QueryTimeout = 5 * time.Second
	url := fmt.Sprintf("%s/v1/views/merchant_minute?merchant_id=%s&from=%s&to=%s", f.http.URL, benchMerchant, benchFrom, benchTo)
	b.Run("c16AnchorQuiet", func(b *testing.B) { runHey(b, hey, 16, url) })
	b.Run("c16", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		defer func() { cancel(); wg.Wait() }()
		body := `{"sql": "SELECT count(*) FROM range(1000000000) a, range(1000000000) b"}`
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, "POST", f.http.URL+"/v1/query", strings.NewReader(body))
					if resp, err := http.DefaultClient.Do(req); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			})
		}
		for range 100 { // slow clients: a request started and never finished
			c, err := net.Dial("tcp", strings.TrimPrefix(f.http.URL, "http://"))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{\"sql\": \"SEL")
		}
		wg.Go(func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for ctx.Err() == nil {
				f.srv.speedMu.Lock()
				for _, v := range f.srv.views {
					v.dirty = true
				}
				f.srv.speedMu.Unlock()
				_ = f.srv.Refresh(ctx)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
			}
		})
		time.Sleep(500 * time.Millisecond) // the slow queries are running
		runHey(b, hey, 16, url)
	})
}
