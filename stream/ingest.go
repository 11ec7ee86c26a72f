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
	res, err := in.Ingest(r.Context(), st, http.MaxBytesReader(w, r.Body, in.MaxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes; split it into smaller batches (lines before the cut were ingested: %d accepted)", in.MaxBody, res.Accepted))
		return
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, err.Error()+fmt.Sprintf(" (%d lines were accepted before the failure; send the rest again, ids make it safe)", res.Accepted))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// Ingest validates and publishes NDJSON events from body to st.
func (in *Ingester) Ingest(ctx context.Context, st *spec.Stream, body interface{ Read([]byte) (int, error) }) (IngestResult, error) {
	res := IngestResult{Rejected: []RejectedLine{}}
	br := bufio.NewReaderSize(body, 64<<10)
	var futures []jetstream.PubAckFuture
	c := st.Contract
	now := time.Now()
	line := 0
	for {
		raw, size, err := readLine(br, maxLine)
		if err != nil && err != io.EOF {
			return res, err
		}
		if size == 0 && err == io.EOF {
			break
		}
		line++
		data := bytes.TrimSpace(raw)
		if size > maxLine {
			err := fmt.Errorf("line of %d bytes is longer than 8 MiB; split the event or make it smaller", size)
			res.Rejected = append(res.Rejected, RejectedLine{Line: line, Error: err.Error()})
			if err := in.deadLetter(st, bytes.Clone(data), size, err); err != nil {
				return res, err
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
			if err := in.deadLetter(st, data, len(data), err); err != nil {
				return res, err
			}
			continue
		}
		id := idKey(ev.Values[c.ID], c.Fields[c.ID].Type)
		f, err := in.js.PublishAsync(PublishSubject(st, id), data, jetstream.WithMsgID(id))
		if err != nil {
			return res, fmt.Errorf("cannot publish line %d to stream %s: %w", line, st.Name, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			res.Accepted++
			if ack.Duplicate {
				res.Duplicates++
			}
		case err := <-f.Err():
			return res, fmt.Errorf("cannot publish to stream %s: %w", st.Name, err)
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	if m := in.metrics; m != nil {
		m.Ingested.WithLabelValues(st.Name, "accepted").Add(float64(res.Accepted - res.Duplicates))
		m.Ingested.WithLabelValues(st.Name, "duplicate").Add(float64(res.Duplicates))
		m.Ingested.WithLabelValues(st.Name, "rejected").Add(float64(len(res.Rejected)))
	}
	return res, nil
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
func (in *Ingester) deadLetter(st *spec.Stream, data []byte, size int, reason error) error {
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
	m.Header.Set(DLQHeaderReason, reason.Error())
	m.Header.Set(DLQHeaderStream, st.Name)
	m.Header.Set(DLQHeaderSource, "http")
	sum := sha256.Sum256(data)
	if _, err := in.js.PublishMsgAsync(m, jetstream.WithMsgID("http:"+hex.EncodeToString(sum[:16]))); err != nil {
		return fmt.Errorf("cannot dead-letter an invalid line of stream %s: %w", st.Name, err)
	}
	if in.metrics != nil {
		in.metrics.DeadLettered.WithLabelValues(st.Name, "http").Inc()
	}
	return nil
}
