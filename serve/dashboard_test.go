package serve

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"tideline/examples/payments"
	"tideline/internal/stacktest"
	"tideline/stream"
)

// TestDashboardInBrowser loads the dashboard in headless Chromium against a
// live speed layer and a lake with history, and checks every chart drew
// data that came from the server while the page was open, then saves a
// screenshot to test/artifacts/dashboard.png.
func TestDashboardInBrowser(t *testing.T) {
	browser := stacktest.Chromium(t)
	f := newFixture(t)
	ctx := t.Context()
	// The fixture's server calls the speed layer stale after 2s; this one
	// keeps the default, so live windows show as speed.
	cfg := f.srv.cfg
	cfg.StaleAfter, cfg.CacheDir, cfg.Registry = 0, t.TempDir(), nil
	srv, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	web := httptest.NewServer(srv.Handler(nil, nil))
	defer web.Close()

	// Live traffic while the page is open: the live panel and throughput
	// must see it.
	st := f.spec.Stream("payments")
	go func() {
		for i := uint64(0); ctx.Err() == nil; i++ {
			_, _ = stream.Generate(ctx, f.js, st, payments.Payment, stream.GenOptions{Count: 40, Seed: 1000 + i, Start: time.Now().UTC()})
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1200))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	pageErrs := make(chan string, 16)
	if err := chromedp.Listen(bctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			select {
			case pageErrs <- exception(e.ExceptionDetails):
			default:
			}
		}
	}); err != nil {
		t.Fatalf("cannot start %s: %v", browser, err)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(web.URL+"/")); err != nil {
		t.Fatalf("cannot load the dashboard in %s: %v", browser, err)
	}

	// Each chart's data-points, the live update count and the status rows.
	const probe = `JSON.stringify({
		points: Object.fromEntries([...document.querySelectorAll('figure.panel')].map(f => [f.id, +(f.dataset.points || 0)])),
		live: +(document.querySelector('#measures').dataset.live || 0),
		statusRows: document.querySelectorAll('#status tbody tr').length,
		conn: document.querySelector('#conn').textContent,
		decisions: document.querySelector('#decisions svg').textContent,
	})`
	type page struct {
		Points     map[string]int `json:"points"`
		Live       int            `json:"live"`
		StatusRows int            `json:"statusRows"`
		Conn       string         `json:"conn"`
		Decisions  string         `json:"decisions"`
	}
	var got page
	var first bool
	deadline := time.Now().Add(60 * time.Second)
	for {
		raw, err := chromedp.Run(bctx, chromedp.Evaluate[string](probe))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(raw), &got); err != nil {
			t.Fatal(err)
		}
		// The decisions panel draws a chart or says why it has none.
		done := got.Live > 0 && got.StatusRows == len(f.spec.Views) && got.Conn == "connected" && got.Decisions != ""
		for _, id := range []string{"throughput", "freshness", "measures", "corrections", "late"} {
			done = done && got.Points[id] > 1 // more than one sample: it updated
		}
		if done {
			break
		}
		if !first {
			first = true
			t.Logf("waiting for live data: %+v", got)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dashboard did not get live data in every chart within 60s: %+v", got)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("dashboard: %+v", got)

	// The measure chart tells batch from speed: the fixture has history
	// below the tideline and live windows above it.
	bars, err := chromedp.Run(bctx, chromedp.Evaluate[map[string]int](`(() => {
		const c = {};
		for (const r of document.querySelectorAll('#measures rect')) c[r.getAttribute('fill')] = (c[r.getAttribute('fill')] || 0) + 1;
		return c;
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	if len(bars) == 0 {
		t.Errorf("the measure chart drew no bars")
	}

	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := stacktest.Artifact(t, "dashboard.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
	select {
	case e := <-pageErrs:
		t.Errorf("the page threw: %s", e)
	default:
	}
}

func exception(d *runtime.ExceptionDetails) string {
	msg := fmt.Sprintf("%s at %s:%d:%d", d.Text, d.URL, d.LineNumber+1, d.ColumnNumber+1)
	if d.Exception != nil && d.Exception.Description != "" {
		msg += ": " + d.Exception.Description
	}
	return msg
}
