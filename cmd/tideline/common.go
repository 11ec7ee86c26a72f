package main

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/net/netutil"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"tideline/internal/httpauth"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"tideline/lake"
	"tideline/spec"
)

// commonFlags are the flags every part that reads the spec or talks to
// NATS takes.
type commonFlags struct {
	specPath string
	natsURL  string
}

func (c *commonFlags) register(f *pflag.FlagSet) {
	f.StringVar(&c.specPath, "spec", envOr("TIDELINE_SPEC", "examples/payments/tideline.yaml"), "pipeline spec file (env TIDELINE_SPEC)")
	f.StringVar(&c.natsURL, "nats", envOr("TIDELINE_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (env TIDELINE_NATS_URL)")
}

func (c *commonFlags) spec() (*spec.Spec, error) {
	s, err := spec.Load(c.specPath)
	var list spec.ErrorList
	if errors.As(err, &list) {
		return nil, fmt.Errorf("the spec has %d error(s); run `tideline spec check %s`:\n%s", len(list), c.specPath, list)
	}
	return s, err
}

func (c *commonFlags) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.Name("tideline " + name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond), nats.Timeout(5 * time.Second)}
	if name == "stream" {
		// No reconnect buffer for the speed layer: a publish while the
		// connection moves between servers fails now rather than going
		// out seconds later. The processor sends again what failed, at
		// its next checkpoint, and a window write held back that long
		// could land after its partition had moved to another process.
		opts = append(opts, nats.ReconnectBufSize(-1))
	}
	nc, err := nats.Connect(c.natsURL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach NATS at %s: %w; is it running (`tideline dev` starts one), or set --nats / TIDELINE_NATS_URL", c.natsURL, err)
	}
	// The async publish timeout answers a publish the server never will (it
	// restarted): the speed layer's checkpoint then sees the failure and
	// sends again, instead of waiting forever.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("cannot use JetStream on %s: %w", c.natsURL, err)
	}
	return nc, js, nil
}

// newRegistry is a Prometheus registry with the Go and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// lakeFlags say where the lake is and where its local cache goes.
type lakeFlags struct {
	url        string
	cacheDir   string
	cacheBytes int64
}

func (l *lakeFlags) register(f *pflag.FlagSet) {
	f.StringVar(&l.url, "lake", envOr("TIDELINE_LAKE", "s3://tideline/lake"), "lake URL: s3://bucket/prefix (endpoint and keys from TIDELINE_S3_*, default the dev MinIO) or file:///path (env TIDELINE_LAKE)")
	f.StringVar(&l.cacheDir, "cache", envOr("TIDELINE_CACHE", filepath.Join(os.TempDir(), "tideline-cache")), "directory for local copies of lake files DuckDB reads (env TIDELINE_CACHE)")
	f.Int64Var(&l.cacheBytes, "cache-bytes", 8<<30, "most bytes the cache keeps")
}

// open opens the lake store. An S3 lake with no endpoint configured is at
// 127.0.0.1:9000, where `tideline dev` runs MinIO; its credentials always
// come from the environment (no built-in one: `tideline dev` prints its
// own and gives them to the processes it starts).
func (l *lakeFlags) open(ctx context.Context) (lake.Store, error) {
	cfg := lake.S3ConfigFromEnv()
	if cfg.Endpoint == "" {
		cfg.Endpoint = "127.0.0.1:9000"
	}
	if strings.HasPrefix(l.url, "s3://") && (cfg.AccessKey == "" || cfg.SecretKey == "") {
		return nil, fmt.Errorf("cannot open the lake at %s: no S3 credentials; set TIDELINE_S3_ACCESS_KEY and TIDELINE_S3_SECRET_KEY (`tideline dev` prints those of its MinIO)", l.url)
	}
	store, err := lake.Open(ctx, l.url, cfg, lake.Options{})
	if err != nil {
		return nil, fmt.Errorf("cannot open the lake at %s: %w; is MinIO running (`tideline dev` starts one), or set --lake / TIDELINE_LAKE", l.url, err)
	}
	return store, nil
}

// temporalFlags say how to reach Temporal.
type temporalFlags struct {
	hostPort  string
	namespace string
}

func (t *temporalFlags) register(f *pflag.FlagSet) {
	f.StringVar(&t.hostPort, "temporal", envOr("TIDELINE_TEMPORAL", "127.0.0.1:7233"), "Temporal frontend host:port (env TIDELINE_TEMPORAL)")
	f.StringVar(&t.namespace, "namespace", envOr("TIDELINE_NAMESPACE", "default"), "Temporal namespace (env TIDELINE_NAMESPACE)")
}

func (t *temporalFlags) dial(ctx context.Context) (client.Client, error) {
	c, err := client.DialContext(ctx, client.Options{
		HostPort: t.hostPort, Namespace: t.namespace,
		Logger: tlog.NewStructuredLogger(slog.Default().With("component", "temporal")),
	})
	if err != nil {
		return nil, fmt.Errorf("cannot reach Temporal at %s: %w; is it running (`tideline dev` starts one), or set --temporal / TIDELINE_TEMPORAL", t.hostPort, err)
	}
	return c, nil
}

// opsMux has /metrics for reg and /healthz, what the stream, worker and
// score processes serve; httpFlags.serveOps adds the profiler if asked.
func opsMux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler(reg))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}

// httpFlags are a process's HTTP surface: its address, the token guarding
// it (httpauth: from TIDELINE_TOKEN or a file, never a flag's value) and
// whether the Go profiler is on it.
type httpFlags struct {
	addr, tokenFile string
	pprof           bool
}

// register adds --http and --token-file, and --pprof for an ops surface.
func (h *httpFlags) register(f *pflag.FlagSet, env, def, what string, ops bool) {
	f.StringVar(&h.addr, "http", envOr(env, def), "HTTP address for "+what+" (env "+env+")")
	f.StringVar(&h.tokenFile, "token-file", "", "file holding the bearer token every request must send but the health checks, /metrics and the dashboard's page (env "+httpauth.EnvFile+", or the token itself in "+httpauth.Env+")")
	if ops {
		f.BoolVar(&h.pprof, "pprof", os.Getenv("TIDELINE_PPROF") == "true", "serve the Go profiler on /debug/pprof/, behind the token (env TIDELINE_PPROF=true)")
	}
}

func (h *httpFlags) token() (httpauth.Token, error) {
	t, err := httpauth.Load(h.tokenFile)
	if err == nil && !t.Set() && !loopback(h.addr) {
		slog.Warn("no token: anyone who reaches this address can read and write through it; set TIDELINE_TOKEN or --token-file", "http", h.addr)
	}
	return t, err
}

// serveOps serves mux, with the profiler if asked, everything but /healthz
// and /metrics (counts, not data, for health checks and scrapers) behind
// the token.
func (h *httpFlags) serveOps(ctx context.Context, mux *http.ServeMux) (func(), error) {
	tok, err := h.token()
	if err != nil {
		return nil, err
	}
	if h.pprof {
		// For a process that is stuck or slow: for example
		// curl -H "Authorization: Bearer $TIDELINE_TOKEN" 'localhost:8082/debug/pprof/goroutine?debug=2'.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return serveHTTP(ctx, h.addr, tok.Require(mux, func(path string) bool { return path == "/healthz" || path == "/metrics" }))
}

// loopback reports whether addr listens on this machine only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// httpLimits bound what one client can hold of an HTTP server (I8).
type httpLimits struct {
	// ReadTimeout is for a whole request, body included: an ingest body
	// that never ends is cut here. WriteTimeout is for a whole answer; the
	// live route sets its own deadline per write instead.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxConns                                                  int // connections open at once; more wait to be accepted
}

var defaultHTTPLimits = httpLimits{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 2 * time.Minute, WriteTimeout: 2 * time.Minute, IdleTimeout: time.Minute, MaxConns: 1024}

// serveHTTP serves mux on addr, within defaultHTTPLimits, until the
// returned stop is called.
func serveHTTP(ctx context.Context, addr string, mux http.Handler) (func(), error) {
	return serveHTTPWithin(addr, mux, defaultHTTPLimits)
}

func serveHTTPWithin(addr string, mux http.Handler, l httpLimits) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on --http %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout,
		WriteTimeout: l.WriteTimeout, IdleTimeout: l.IdleTimeout, MaxHeaderBytes: 64 << 10}
	go func() { _ = srv.Serve(netutil.LimitListener(ln, l.MaxConns)) }()
	slog.Info("http listening", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close() // live readers do not end by themselves
		}
	}, nil
}

// discardLog is a logger for commands whose output is their answer.
func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// data is what the worker and serve both open: the spec, NATS and the lake.
type data struct {
	spec  *spec.Spec
	nc    *nats.Conn
	js    jetstream.JetStream
	store lake.Store
}

// openData opens the spec, connects to NATS as name and opens the lake.
// The caller closes nc.
func openData(ctx context.Context, c *commonFlags, l *lakeFlags, name string) (*data, error) {
	s, err := c.spec()
	if err != nil {
		return nil, err
	}
	nc, js, err := c.connect(name)
	if err != nil {
		return nil, err
	}
	store, err := l.open(ctx)
	if err == nil {
		err = lake.CheckSpec(ctx, store, s)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &data{spec: s, nc: nc, js: js, store: store}, nil
}
