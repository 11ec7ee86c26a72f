package stream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/spec"
)

// Ingester implements POST /v1/ingest/{stream}: NDJSON in, each line checked
// against the stream's contract. Valid lines are published with their id as
// Nats-Msg-Id; invalid ones are dead-lettered with their reason and reported
// back by line number. Nothing is dropped silently.
type Ingester struct {
	js      jetstream.JetStream
	spec    *spec.Spec
	metrics *Metrics
	// MaxBody bounds a request (default 64 MiB).
	MaxBody int64
}

// NewIngester returns the ingest handler for s's streams.
func NewIngester(js jetstream.JetStream, s *spec.Spec, m *Metrics) *Ingester {
	return &Ingester{js: js, spec: s, metrics: m, MaxBody: 64 << 20}
}

// IngestResult is the response body.
type IngestResult struct {
	Accepted   int            `json:"accepted"`
	Duplicates int            `json:"duplicates"` // accepted, but JetStream had the id already
	Rejected   []RejectedLine `json:"rejected"`
}

// RejectedLine is one invalid line.
type RejectedLine struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

func (in *Ingester) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("stream")
	st := in.spec.Stream(name)
	if st == nil {
		names := make([]string, len(in.spec.Streams))
		for i, s := range in.spec.Streams {
			names[i] = s.Name
		}
		httpError(w, http.StatusNotFound, fmt.Sprintf("no stream %q; streams are: %s", name, strings.Join(names, ", ")))
		return
	}
	if !st.HTTPIngest {
		httpError(w, http.StatusForbidden, fmt.Sprintf("stream %s is written by tideline itself, not over HTTP (the spec says http_ingest: false)", name))
		return
	}
	res, err := in.Ingest(r.Context(), st, http.MaxBytesReader(w, r.Body, in.MaxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		httpRefusal(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes; split it into smaller batches (the lines before the cut were read: the counts say what was stored)", in.MaxBody), res)
		return
	case err != nil:
		httpRefusal(w, http.StatusServiceUnavailable, err.Error()+" (the counts say what was stored before it; send the rest again, ids make it safe)", res)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}

// httpRefusal answers a request stopped part way with the reason and the
// exact counts of what was stored before it.
func httpRefusal(w http.ResponseWriter, code int, msg string, res IngestResult) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
		IngestResult
	}{msg, res})
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// Ingest validates and publishes NDJSON events from body to st. Whatever
// stops it early (a body over the limit, a client gone, a publish failing),
// the result counts exactly the lines JetStream acknowledged before it, so
// a producer knows what to send again; every rejected line's dead letter is
// acknowledged too, or the request fails.
func (in *Ingester) Ingest(ctx context.Context, st *spec.Stream, body interface{ Read([]byte) (int, error) }) (IngestResult, error) {
	res := IngestResult{Rejected: []RejectedLine{}}
	p := &pending{}
	err := in.read(ctx, st, body, &res, p)
	// What was published before a failure may well be stored: wait for
	// every answer, so the counts say exactly what was.
	if werr := p.wait(st, &res); err == nil {
		err = werr
	}
	if m := in.metrics; m != nil {
		m.Ingested.WithLabelValues(st.Name, "accepted").Add(float64(res.Accepted - res.Duplicates))
		m.Ingested.WithLabelValues(st.Name, "duplicate").Add(float64(res.Duplicates))
		m.Ingested.WithLabelValues(st.Name, "rejected").Add(float64(len(res.Rejected)))
	}
	return res, err
}

// pending is what a request published and has not heard back about.
type pending struct {
	events, dead []jetstream.PubAckFuture
}

// wait collects the answers to everything published: events acknowledged
// count as accepted (or duplicates); the first failure is returned.
func (p *pending) wait(st *spec.Stream, res *IngestResult) error {
	var first error
	// Not the request's context: a client gone still has its events
	// stored, and the metrics count them. The deadline stays expired once
	// reached, so no answer that never comes holds the rest.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, list := range [][]jetstream.PubAckFuture{p.events, p.dead} {
		for _, f := range list {
			select {
			case ack := <-f.Ok():
				if i == 0 {
					res.Accepted++
					if ack.Duplicate {
						res.Duplicates++
					}
				}
			case err := <-f.Err():
				if first == nil {
					what := "publish to stream " + st.Name
					if i == 1 {
						what = "dead-letter an invalid line of stream " + st.Name
					}
					first = fmt.Errorf("cannot %s: %w", what, err)
				}
			case <-ctx.Done():
				if first == nil {
					first = fmt.Errorf("cannot confirm publishes to stream %s: no answer from JetStream in 30s", st.Name)
				}
			}
		}
	}
	return first
}

// read validates body line by line and publishes each line, valid to st
// and invalid to its dead-letter stream.
func (in *Ingester) read(ctx context.Context, st *spec.Stream, body interface{ Read([]byte) (int, error) }, res *IngestResult, p *pending) error {
	br := bufio.NewReaderSize(body, 64<<10)
	c := st.Contract
	now := time.Now()
	line := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		raw, size, err := readLine(br, maxLine)
		if err != nil && err != io.EOF {
			return err
		}
		if size == 0 && err == io.EOF {
			return nil
		}
		line++
		data := bytes.TrimSpace(raw)
		if size > maxLine {
			err := fmt.Errorf("line of %d bytes is longer than 8 MiB; split the event or make it smaller", size)
			res.Rejected = append(res.Rejected, RejectedLine{Line: line, Error: err.Error()})
			if err := in.deadLetter(st, bytes.Clone(data), size, err, p); err != nil {
				return err
			}
			continue
		}
		if len(data) == 0 {
			continue
		}
		data = bytes.Clone(data)
		ev, err := c.Decode(data, now)
		if err == nil && len(data) > int(in.js.Conn().MaxPayload()) {
			err = fmt.Errorf("event is %d bytes; the NATS server takes at most %d (max_payload): make it smaller, or raise max_payload", len(data), in.js.Conn().MaxPayload())
		}
		if err != nil {
			res.Rejected = append(res.Rejected, RejectedLine{Line: line, Error: err.Error()})
			if err := in.deadLetter(st, data, len(data), err, p); err != nil {
				return err
			}
			continue
		}
		id := spec.IDText(ev.Values[c.ID], c.Fields[c.ID].Type)
		f, err := in.js.PublishAsync(PublishSubject(st, id), data, jetstream.WithMsgID(MsgID(id)))
		if err != nil {
			return fmt.Errorf("cannot publish line %d to stream %s: %w", line, st.Name, err)
		}
		p.events = append(p.events, f)
	}
}

// headerValue is s fit for a NATS header: a reason quoting a producer's
// value may hold CR or LF, which would end the header or start another.
func headerValue(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			fmt.Fprintf(&b, "\\x%02x", r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// MsgID is the Nats-Msg-Id that carries an event id. A header value cannot
// hold control characters (CR and LF would end it, or start another
// header) and loses spaces at its ends, so those bytes and '%' are written
// %XX: distinct ids stay distinct, and an id of printable characters
// without '%' is itself.
func MsgID(id string) string {
	escape := false
	for i := 0; i < len(id); i++ {
		if b := id[i]; b <= ' ' || b == 0x7f || b == '%' {
			escape = true
			break
		}
	}
	if !escape {
		return id
	}
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c == 0x7f || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// DLQHeaderTruncated marks a dead letter cut to fit the server's maximum
// payload; its value is the original size in bytes.
const DLQHeaderTruncated = "Tl-Truncated-From"

// maxLine is the longest NDJSON line ingest reads whole.
const maxLine = 8 << 20

// readLine reads one line of at most max bytes (without its newline) and
// the line's whole size; of a longer line it keeps the first max bytes and
// skips the rest, so the lines after it are still read.
func readLine(br *bufio.Reader, max int) ([]byte, int, error) {
	var buf []byte
	size := 0
	for {
		chunk, err := br.ReadSlice('\n')
		size += len(chunk)
		if room := max + 1 - len(buf); room > 0 {
			buf = append(buf, chunk[:min(len(chunk), room)]...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == nil { // the chunk ends with the newline
			size--
			if n := len(buf); n > 0 && buf[n-1] == '\n' {
				buf = buf[:n-1]
			}
		}
		return buf, size, err
	}
}

// deadLetter keeps a rejected line in the stream's dead-letter stream with
// its reason. size is the line's whole size: data may be only its start.
func (in *Ingester) deadLetter(st *spec.Stream, data []byte, size int, reason error, p *pending) error {
	m := nats.NewMsg(DLQSubject(st))
	m.Data = data
	// An event too large for the server cannot be kept whole; its start
	// and its size are, so it is not lost without a trace.
	if max := int(in.js.Conn().MaxPayload()) - 4096; max > 0 && len(data) > max {
		m.Data = data[:max]
	}
	if len(m.Data) < size {
		m.Header.Set(DLQHeaderTruncated, strconv.Itoa(size))
	}
	m.Header.Set(DLQHeaderReason, headerValue(reason.Error()))
	m.Header.Set(DLQHeaderStream, st.Name)
	m.Header.Set(DLQHeaderSource, "http")
	sum := sha256.Sum256(data)
	f, err := in.js.PublishMsgAsync(m, jetstream.WithMsgID("http:"+hex.EncodeToString(sum[:16])))
	if err != nil {
		return fmt.Errorf("cannot dead-letter an invalid line of stream %s: %w", st.Name, err)
	}
	p.dead = append(p.dead, f)
	if in.metrics != nil {
		in.metrics.DeadLettered.WithLabelValues(st.Name, "http").Inc()
	}
	return nil
}
