package stream

import (
	"encoding/json"
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
