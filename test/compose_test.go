package faults

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"tideline/examples/payments"
	"tideline/internal/oracle"
	"tideline/internal/stacktest"
	"tideline/score"
	"tideline/spec"
	"tideline/stream"
	"tideline/workflows"
)

// composeStack is a running `docker compose up` of the project's own
// docker-compose.yml, reached through its published ports.
type composeStack struct {
	t      *testing.T
	offset int
	env    map[string]string
	spec   *spec.Spec
}

func (c *composeStack) addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port+c.offset) }
func (c *composeStack) url(port int) string  { return "http://" + c.addr(port) }

// TestComposeStack drives the stack `make compose-test` brought up with
// `docker compose up`, only through its published ports: events in through
// NATS and through POST /v1/ingest, a speed window, Parquet in MinIO, a
// Backfill started through the Temporal frontend, the merged views equal to
// DuckDB's answer from the events published, and a fraud decision by
// request-reply. It skips unless make compose-test runs it.
func TestComposeStack(t *testing.T) {
	off := os.Getenv("TIDELINE_COMPOSE_PORT_OFFSET")
	if off == "" {
		t.Skip("drives a running docker compose stack: run `make compose-test`")
	}
	c := &composeStack{t: t, env: readEnvFile(t, os.Getenv("TIDELINE_COMPOSE_ENV_FILE"))}
	var err error
	if c.offset, err = strconv.Atoi(off); err != nil {
		t.Fatalf("TIDELINE_COMPOSE_PORT_OFFSET=%q: %v", off, err)
	}
	// The image runs the example spec as shipped.
	if c.spec, err = spec.Load(filepath.Join("..", "examples", "payments", "tideline.yaml")); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// Every request to the stack's HTTP surfaces carries the token .env
	// gives; first, one without it is refused.
	token := c.env["TIDELINE_TOKEN"]
	if token == "" {
		t.Fatal("the compose env file has no TIDELINE_TOKEN; make compose-test sets one")
	}
	if _, err := stacktest.Query(c.url(8080), "SELECT 1"); err == nil {
		t.Fatal("POST /v1/query without the token was answered; want 401")
	}
	prev := http.DefaultClient.Transport
	http.DefaultClient.Transport = bearer{token: token}
	t.Cleanup(func() { http.DefaultClient.Transport = prev })
	for _, u := range []string{c.url(8080) + "/", c.url(8233) + "/", c.url(9001) + "/", c.url(8081) + "/healthz", c.url(8082) + "/healthz", c.url(8083) + "/healthz"} {
		if err := stacktest.Get(u, nil); err != nil {
			t.Errorf("published port: %v", err)
		}
	}
	if nc, err := nats.Connect("nats://"+c.addr(4222), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("NATS took a client without credentials; want it refused")
	}
	nc, err := nats.Connect("nats://"+c.addr(4222), nats.Timeout(5*time.Second), nats.UserInfo(c.env["TIDELINE_NATS_USER"], c.env["TIDELINE_NATS_PASSWORD"]))
	if err != nil {
		t.Fatalf("cannot connect to NATS on its published port with the credentials of .env: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := client.Dial(client.Options{HostPort: c.addr(7233), Logger: tlog.NewStructuredLogger(quiet)})
	if err != nil {
		t.Fatalf("cannot reach the Temporal frontend on its published port: %v", err)
	}
	t.Cleanup(tc.Close)

	t.Run("speed window", func(t *testing.T) { c.speedWindow(t, js) })
	t.Run("fraud decision by request-reply", func(t *testing.T) { c.decision(t, nc, js) })

	// History: a few seconds of payments three hours ago, across a
	// partition boundary, with disorder, duplicates and malformed events,
	// through NATS; then more of the same through POST /v1/ingest. Nothing
	// else in the stack has events that old, so the views' windows there
	// hold exactly these.
	p := c.spec.Stream("payments").Partition
	boundary := time.Now().UTC().Add(-3 * time.Hour).Truncate(p)
	from, to := boundary.Add(-p), boundary.Add(p)
	out := filepath.Join(t.TempDir(), "events.ndjson")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	gs, err := stream.Generate(ctx, js, c.spec.Stream("payments"), payments.Payment, stream.GenOptions{
		Count: 3000, OOO: 0.05, Dup: 0.01, Invalid: 0.005, Seed: uint64(time.Now().UnixNano()), Start: boundary.Add(-2 * time.Second), Out: f,
	})
	if err != nil {
		t.Fatalf("cannot publish through NATS's published port: %v", err)
	}
	ingested := c.ingest(t, f, boundary)
	f.Close()
	t.Logf("published %d payments through NATS (%d valid, %d duplicates, %d malformed) and %d through POST /v1/ingest, around %s",
		gs.Published, gs.Valid, gs.Dup, gs.Invalid, ingested, boundary.Format(time.RFC3339))

	c.parquetInMinIO(t, boundary)

	// A Backfill of every view over those partitions, as a user starts one
	// from the Temporal UI.
	in := workflows.BackfillInput{View: "*", From: from, To: to, Mode: "all"}
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("compose-test-backfill-%d", time.Now().UnixNano()), TaskQueue: workflows.TaskQueue}, workflows.Backfill, in)
	if err != nil {
		t.Fatalf("cannot start a Backfill through the Temporal frontend: %v", err)
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var progress workflows.BackfillProgress
	if err := run.Get(bctx, &progress); err != nil {
		t.Fatalf("backfill %s: %v", run.GetID(), err)
	}
	if progress.Done == 0 || progress.Failed > 0 {
		t.Fatalf("backfill %s: %+v; want every partition done", run.GetID(), progress)
	}
	t.Logf("backfill %s: %d partitions recomputed", run.GetID(), progress.Done)

	// Every view of the payments stream, read through serve, equal to
	// DuckDB's answer straight from what was published.
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := oracle.Load(ctx, db, c.spec.Stream("payments"), out); err != nil {
		t.Fatal(err)
	}
	lo, hi := from.Add(-time.Hour).Format(time.RFC3339), to.Add(time.Hour).Format(time.RFC3339)
	for _, v := range c.spec.Stream("payments").Views {
		want, err := oracle.ViewRows(ctx, db, v, "")
		if err != nil {
			t.Fatal(err)
		}
		q := fmt.Sprintf("SELECT * EXCLUDE (source) FROM %s WHERE window_start >= '%s' AND window_start < '%s'", spec.QuoteIdent(v.Name), lo, hi)
		var diff string
		deadline := time.Now().Add(3 * time.Minute)
		for {
			rows, err := stacktest.Query(c.url(8080), q)
			if err != nil {
				t.Fatal(err)
			}
			got, n := oracle.FromResult(v, rows)
			if diff = oracle.Diff(got, want); diff == "" && n == len(got) {
				break
			}
			if n != len(got) {
				diff = fmt.Sprintf("%d rows for %d windows: a window appears twice\n%s", n, len(got), diff)
			}
			if time.Now().After(deadline) {
				t.Fatalf("view %s, read through serve, differs from the oracle 3 minutes after the backfill:\n%s", v.Name, diff)
			}
			time.Sleep(2 * time.Second)
		}
		t.Logf("view %s: %d windows equal to the oracle", v.Name, len(want))
	}

	// Every malformed event is in the dead-letter stream (the compose
	// stack's generator adds its own, so at least ours).
	dlq, err := js.Stream(ctx, stream.DLQStreamName(c.spec.Stream("payments")))
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(info.State.Msgs) < gs.Invalid {
		t.Errorf("dead-letter stream has %d messages; we alone published %d malformed events", info.State.Msgs, gs.Invalid)
	}
}

// speedWindow publishes payments now for a merchant of its own and waits
// for serve to show their window from the speed layer.
func (c *composeStack) speedWindow(t *testing.T, js jetstream.JetStream) {
	merchant := fmt.Sprintf("m-compose-%d", time.Now().UnixNano())
	r := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	const n = 25
	for i := range n {
		ev := payments.Payment(r, i, time.Now().UTC())
		ev["merchant_id"] = merchant
		data, _ := json.Marshal(ev)
		id := ev["payment_id"].(string)
		if _, err := js.Publish(t.Context(), stream.PublishSubject(c.spec.Stream("payments"), id), data, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	q := fmt.Sprintf("SELECT source, sum(payments) FROM merchant_minute WHERE merchant_id = '%s' GROUP BY ALL", merchant)
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, err := stacktest.Query(c.url(8080), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 1 && fmt.Sprint(rows[0][0]) == "speed" && fmt.Sprint(rows[0][1]) == strconv.Itoa(n) {
			t.Logf("%d payments of %s in merchant_minute from the speed layer", n, merchant)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("merchant_minute for %s after 30 s: %v; want [[speed %d]]", merchant, rows, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// decision asks the scorer for a decision by request-reply and finds it
// in the decisions stream.
func (c *composeStack) decision(t *testing.T, nc *nats.Conn, js jetstream.JetStream) {
	id := fmt.Sprintf("p-compose-%d", time.Now().UnixNano())
	req := fmt.Sprintf(`{"payment_id":%q,"ts":%q,"card_id":"card-00001","merchant_id":"m-0006","country":"BR","amount":"4999.00","currency":"BRL","channel":"ecom"}`,
		id, time.Now().UTC().Format(time.RFC3339Nano))
	m, err := nc.Request(score.RequestSubject, []byte(req), 15*time.Second)
	if err != nil {
		t.Fatalf("request on %s: %v", score.RequestSubject, err)
	}
	var rep score.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Decision == nil {
		t.Fatalf("reply %s: %v", m.Data, err)
	}
	d := rep.Decision
	if d.PaymentID != id || (d.Decision != "approved" && d.Decision != "flagged") || !strings.Contains(d.Reasons, "big_amount") {
		t.Fatalf("decision %+v; want payment %s decided, big_amount among its reasons", d, id)
	}
	ds := c.spec.Stream("decisions")
	s, err := js.Stream(t.Context(), ds.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLastMsgForSubject(t.Context(), stream.PublishSubject(ds, id)); err != nil {
		t.Fatalf("decision of %s not in stream %s: %v", id, ds.Name, err)
	}
	t.Logf("payment %s: %s, score %d (%s)", id, d.Decision, d.Score, d.Reasons)
}

// ingest posts a batch of payments around boundary to serve's POST
// /v1/ingest/payments, appends them to the oracle's file, and returns how
// many it posted.
func (c *composeStack) ingest(t *testing.T, out io.Writer, boundary time.Time) int {
	r := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	var body bytes.Buffer
	w := bufio.NewWriter(out)
	const n = 500
	for i := range n {
		ev := payments.Payment(r, i, boundary.Add(time.Duration(i-n/2)*10*time.Millisecond))
		data, _ := json.Marshal(ev)
		body.Write(data)
		body.WriteByte('\n')
		line, _ := json.Marshal(stream.OutLine{I: 1_000_000 + i, Kind: "valid", Data: string(data)})
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Post(c.url(8080)+"/v1/ingest/payments", "application/x-ndjson", &body)
	if err != nil {
		t.Fatalf("POST /v1/ingest/payments: %v", err)
	}
	defer resp.Body.Close()
	var res stream.IngestResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK || res.Accepted != n || len(res.Rejected) > 0 {
		t.Fatalf("POST /v1/ingest/payments: %s %+v %v; want %d accepted", resp.Status, res, err, n)
	}
	return n
}

// parquetInMinIO waits for compaction to write the partition holding
// boundary to MinIO, and reads one of its objects back through the S3 API.
func (c *composeStack) parquetInMinIO(t *testing.T, boundary time.Time) {
	mc, err := minio.New(c.addr(9000), &minio.Options{Creds: credentials.NewStaticV4(c.env["TIDELINE_S3_ACCESS_KEY"], c.env["TIDELINE_S3_SECRET_KEY"], "")})
	if err != nil {
		t.Fatal(err)
	}
	prefix := "lake/raw/payments/" + boundary.Format("dt=2006-01-02/hr=15/min=04") + "/"
	deadline := time.Now().Add(3 * time.Minute)
	for {
		for o := range mc.ListObjects(t.Context(), "tideline", minio.ListObjectsOptions{Prefix: prefix}) {
			if o.Err != nil {
				t.Fatalf("cannot list s3://tideline/%s through MinIO's published port: %v", prefix, o.Err)
			}
			if !strings.HasSuffix(o.Key, ".parquet") {
				continue
			}
			obj, err := mc.GetObject(t.Context(), "tideline", o.Key, minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			head := make([]byte, 4)
			_, err = io.ReadFull(obj, head)
			obj.Close()
			if err != nil || string(head) != "PAR1" {
				t.Fatalf("s3://tideline/%s starts %q (%v); want Parquet's PAR1", o.Key, head, err)
			}
			t.Logf("compaction wrote s3://tideline/%s (%d bytes)", o.Key, o.Size)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Parquet under s3://tideline/%s 3 minutes after publishing: compaction did not run", prefix)
		}
		time.Sleep(2 * time.Second)
	}
}

// bearer adds the stack's token to every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// readEnvFile reads a docker compose env file: KEY=VALUE lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("cannot read the compose env file (TIDELINE_COMPOSE_ENV_FILE): %v", err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	return env
}
