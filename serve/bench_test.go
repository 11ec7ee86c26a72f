package serve

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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
