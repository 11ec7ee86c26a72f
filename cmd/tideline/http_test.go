package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHTTPServerBoundsClients: the HTTP server every tideline process runs
// lets go of a body that never ends and of an idle keep-alive connection
// (both were open 75 s later, 500 of them holding 525 goroutines), while a
// handler that sets its own write deadlines, as the live route does,
// outlives WriteTimeout.
func TestHTTPServerBoundsClients(t *testing.T) {
	lim := httpLimits{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, MaxConns: 8}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /ingest", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		rc := http.NewResponseController(w)
		for i := range 6 {
			_ = rc.SetWriteDeadline(time.Now().Add(time.Second))
			fmt.Fprintf(w, "data: %d\n\n", i)
			_ = rc.Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	addr := freeAddr(t)
	stop, err := serveHTTPWithin(addr, mux, lim)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	closedWithin := func(c net.Conn, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, c)
		ne, timeout := err.(net.Error)
		return !(timeout && ne.Timeout())
	}
	// A body that never ends.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n{\"a\":")
	if !closedWithin(c, 3*time.Second) {
		t.Error("a request body that never ends was still open 3 s later; ReadTimeout is 300 ms")
	}
	c.Close()
	// An idle keep-alive connection.
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ok: %v %v", resp, err)
	}
	if !closedWithin(c, 3*time.Second) {
		t.Error("an idle keep-alive connection was still open 3 s later; IdleTimeout is 300 ms")
	}
	c.Close()
	// A live answer longer than WriteTimeout, with deadlines per write.
	r, err := http.Get("http://" + addr + "/live")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil || strings.Count(string(body), "data:") != 6 {
		t.Errorf("a live answer of 600 ms with WriteTimeout 300 ms: %q %v; want all 6 events", body, err)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestOpsSurfaceIsGuarded: a process's HTTP surface (the stream process's
// ingest among it) needs the token from TIDELINE_TOKEN on everything but
// /healthz and /metrics, and serves the profiler only when asked, behind
// the token too (it was open on every process).
func TestOpsSurfaceIsGuarded(t *testing.T) {
	t.Setenv("TIDELINE_TOKEN", "s3cret")
	for _, withPprof := range []bool{false, true} {
		h := httpFlags{addr: freeAddr(t), pprof: withPprof}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {})
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {})
		mux.HandleFunc("POST /v1/ingest/{stream}", func(w http.ResponseWriter, _ *http.Request) {})
		stop, err := h.serveOps(t.Context(), mux)
		if err != nil {
			t.Fatal(err)
		}
		do := func(method, path, token string) int {
			req, _ := http.NewRequest(method, "http://"+h.addr+path, nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		pprofWant := http.StatusNotFound
		if withPprof {
			pprofWant = http.StatusOK
		}
		for _, c := range []struct {
			method, path, token string
			want                int
		}{
			{"GET", "/healthz", "", http.StatusOK},
			{"GET", "/metrics", "", http.StatusOK},
			{"POST", "/v1/ingest/payments", "", http.StatusUnauthorized},
			{"POST", "/v1/ingest/payments", "wrong", http.StatusUnauthorized},
			{"POST", "/v1/ingest/payments", "s3cret", http.StatusOK},
			{"GET", "/debug/pprof/", "", http.StatusUnauthorized},
			{"GET", "/debug/pprof/", "s3cret", pprofWant},
		} {
			if got := do(c.method, c.path, c.token); got != c.want {
				t.Errorf("pprof %v: %s %s with token %q: %d, want %d", withPprof, c.method, c.path, c.token, got, c.want)
			}
		}
		stop()
	}
}
