package stream

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"tideline/spec"
)

// ingestServer is real NATS with the fast spec's streams and the ingest
// endpoint in front of it.
func ingestServer(t *testing.T) (*httptest.Server, jetstream.JetStream, *spec.Spec) {
	_, _, js := natsForTest(t)
	s := fastSpec(t)
	if err := Setup(t.Context(), js, s, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/ingest/{stream}", NewIngester(js, s, NewMetrics(prometheus.NewRegistry())))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, js, s
}

func TestIngestHTTP(t *testing.T) {
	srv, js, s := ingestServer(t)
	ctx := t.Context()

	now := time.Now().UTC()
	body := strings.Join([]string{
		string(payment("h1", now.Sub(t0), "m1", "1.00")),
		`{"payment_id": "h2", "truncated`,
		"",
		string(payment("h3", now.Sub(t0), "m1", "-5.00")),
		string(payment("h1", now.Sub(t0), "m1", "1.00")), // a retry of line 1
		string(payment("h4", now.Sub(t0), "m2", "2.50")),
	}, "\n")
	resp, err := http.Post(srv.URL+"/v1/ingest/payments", "application/x-ndjson", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res IngestResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	if res.Accepted != 3 || res.Duplicates != 1 || len(res.Rejected) != 2 || res.Rejected[0].Line != 2 || res.Rejected[1].Line != 4 {
		t.Fatalf("result %+v; want 3 accepted (1 duplicate), lines 2 and 4 rejected", res)
	}
	if !strings.Contains(res.Rejected[1].Error, `field "amount": range`) {
		t.Errorf("line 4 error %q does not name the field and reason", res.Rejected[1].Error)
	}
	main, _ := js.Stream(ctx, "payments")
	info, _ := main.Info(ctx)
	if info.Config.MaxBytes != spec.DefaultMaxBytes {
		t.Errorf("stream payments holds up to %d bytes; want the default %d (a producer must not fill the disk)", info.Config.MaxBytes, spec.DefaultMaxBytes)
	}
	if info.State.Msgs != 2 {
		t.Errorf("stream holds %d events, want 2 (h1 once, h4)", info.State.Msgs)
	}
	dlq, _ := js.Stream(ctx, DLQStreamName(s.Stream("payments")))
	dinfo, _ := dlq.Info(ctx)
	if dinfo.State.Msgs != 2 {
		t.Errorf("dead-letter stream holds %d, want the 2 rejected lines", dinfo.State.Msgs)
	}
	m, err := dlq.GetMsg(ctx, 1)
	if err != nil || m.Header.Get(DLQHeaderSource) != "http" || m.Header.Get(DLQHeaderReason) == "" {
		t.Errorf("dead letter: %v %v", err, m.Header)
	}

	resp, err = http.Post(srv.URL+"/v1/ingest/nope", "application/x-ndjson", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown stream: status %d, want 404", resp.StatusCode)
	}

	// decisions is the scorer's (http_ingest: false): a forged decision is
	// refused, and nothing reaches the stream.
	forged := `{"payment_id":"p-forged","ts":"` + now.Format(time.RFC3339) + `","card_id":"c","merchant_id":"m","country":"US","amount":"1.00","score":0,"decision":"approved"}`
	resp, err = http.Post(srv.URL+"/v1/ingest/decisions", "application/x-ndjson", strings.NewReader(forged))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ds, _ := js.Stream(ctx, "decisions")
	dsInfo, _ := ds.Info(ctx)
	if resp.StatusCode != http.StatusForbidden || dsInfo.State.Msgs != 0 {
		t.Errorf("a forged decision over HTTP: status %d, %d decisions stored; want 403 and none", resp.StatusCode, dsInfo.State.Msgs)
	}
}

func TestSetupConflictingSubjects(t *testing.T) {
	_, _, js := natsForTest(t)
	ctx := t.Context()
	// Another application's stream already takes the payments subjects.
	if _, err := js.CreateStream(ctx, jetstreamConfig("OTHER", "payments.events.>")); err != nil {
		t.Fatal(err)
	}
	err := Setup(ctx, js, fastSpec(t), SetupOptions{})
	if err == nil || !strings.Contains(err.Error(), "another JetStream stream already takes") {
		t.Fatalf("Setup over a conflicting stream: %v", err)
	}
}

// TestIngestCannotLoseOrMiscount: distinct ids that differ only in control
// characters or spaces are three events, not one and two duplicates (the
// id went raw into Nats-Msg-Id, where CR and LF became spaces); a body cut
// at the size limit answers 413 with exactly the lines stored before the
// cut (it said 0 while 67,866 were stored); and a dead letter JetStream
// does not take fails the request instead of vanishing.
func TestIngestCannotLoseOrMiscount(t *testing.T) {
	_, _, js := natsForTest(t)
	s := fastSpec(t)
	ctx := t.Context()
	if err := Setup(ctx, js, s, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	in := NewIngester(js, s, NewMetrics(prometheus.NewRegistry()))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.SetPathValue("stream", "payments")
		in.ServeHTTP(w, r)
	}))
	defer srv.Close()
	post := func(body string) (int, map[string]any) {
		resp, err := http.Post(srv.URL, "application/x-ndjson", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	stored := func(name string) uint64 {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	now := time.Now().UTC()
	ev := func(id string) string {
		b, _ := json.Marshal(map[string]any{"payment_id": id, "ts": now.Format(time.RFC3339Nano), "card_id": "c1", "merchant_id": "m1",
			"country": "US", "amount": "1.00", "currency": "USD", "channel": "pos"})
		return string(b)
	}

	code, out := post(strings.Join([]string{ev("a\nb"), ev("a b"), ev("a\rb"), ev("a%0Ab"), ev("a\r\nNats-Msg-Id: x")}, "\n"))
	if code != http.StatusOK || out["accepted"] != 5.0 || out["duplicates"] != 0.0 {
		t.Fatalf("five distinct ids with control characters, spaces and %%: %d %v; want 5 accepted, 0 duplicates", code, out)
	}
	if n := stored("payments"); n != 5 {
		t.Fatalf("stream holds %d events; want the 5 distinct ids", n)
	}

	in.MaxBody = 64 << 10
	var body strings.Builder
	for i := 0; body.Len() < 200<<10; i++ {
		body.WriteString(ev(fmt.Sprint("big-", i)) + "\n")
	}
	before := stored("payments")
	code, out = post(body.String())
	after := stored("payments")
	if code != http.StatusRequestEntityTooLarge || out["accepted"] != float64(after-before) || after == before {
		t.Fatalf("a body over the limit: %d %v, and %d events stored; want 413 counting exactly what was stored", code, out, after-before)
	}

	if err := js.DeleteStream(ctx, DLQStreamName(s.Stream("payments"))); err != nil {
		t.Fatal(err)
	}
	code, out = post(ev("fine-1") + "\n" + `{"payment_id": "broken`)
	if code != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(out["error"]), "dead-letter") || out["accepted"] != 1.0 {
		t.Fatalf("an invalid line with no dead-letter stream to take it: %d %v; want 503 saying so, the valid line counted", code, out)
	}
}
