// Package stacktest holds what tests against the real stack share: the
// payments example shrunk to seconds, so windows close and partitions seal
// within a test, and the tideline binary built and run as a child process
// for tests that kill it.
package stacktest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tideline/internal/devstack"
	"tideline/spec"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// BuildTideline builds the tideline binary once per test process, for
// tests that run it as a separate process.
func BuildTideline(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tideline-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "tideline")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/tideline")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("cannot build tideline: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// Start runs the binary with args as a child process that dies with the
// test (and with the test process, should it be killed), logging to
// logPath.
func Start(t testing.TB, bin, logPath string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
	return cmd
}

func repoRoot() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "../..")
}

// FastSpecYAML is the payments example with windows, lateness and idle
// timeouts shrunk to seconds and partitions to a minute.
func FastSpecYAML(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(), "examples/payments/tideline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(
		"window: 1m", "window: 5s",
		"lateness: 30s", "lateness: 1s",
		"window: {size: 5m, hop: 1m}", "window: {size: 10s, hop: 5s}",
		"window: {session: 5m, max: 15m}", "window: {session: 3s, max: 45s}", // spans cross the minute partitions
		"out_of_orderness: 5s", "out_of_orderness: 500ms",
		"idle_timeout: 5s", "idle_timeout: 200ms",
		"partition: 5m", "partition: 1m",
	).Replace(string(data))
}

// PartitionedSpecYAML is FastSpecYAML with the payments stream in n
// partitions. Its sessions span 25s, not 45s: a partitioned stream's
// session settles Max - Gap after its end (spec.Window.MergeDelay), and a
// shorter span keeps the tests short; 25s still crosses the minute
// partitions.
func PartitionedSpecYAML(t testing.TB, n int) string {
	t.Helper()
	return strings.NewReplacer(
		"    subjects: [payments.events.>]", "    subjects: [payments.events.>]\n    partitions: "+strconv.Itoa(n),
		"window: {session: 3s, max: 45s}", "window: {session: 3s, max: 25s}",
	).Replace(FastSpecYAML(t))
}

// FastSpec parses FastSpecYAML.
func FastSpec(t testing.TB) *spec.Spec {
	t.Helper()
	s, err := spec.Parse("fast.yaml", []byte(FastSpecYAML(t)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// NATS starts an embedded NATS server with JetStream in a temporary
// directory and connects to it; both stop when the test ends.
func NATS(t testing.TB) (*devstack.NATS, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns, err := devstack.StartNATS(devstack.NATSOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	return ns, nc, js
}

var natsRate = regexp.MustCompile(`stats: ([\d,]+) msgs/sec`)

// NatsBench runs `bin/nats bench` with args against url and returns the
// messages per second it reports; it skips the benchmark when bin/nats is
// missing.
func NatsBench(b *testing.B, url string, args ...string) float64 {
	b.Helper()
	bin := filepath.Join(devstack.FindBinDir(), "nats")
	if _, err := os.Stat(bin); err != nil {
		b.Skipf("no %s: run `make tools`", bin)
	}
	out, err := exec.Command(bin, append(append([]string{"bench"}, args...), "--no-progress", "-s", url)...).CombinedOutput()
	m := natsRate.FindSubmatch(out)
	if err != nil || m == nil {
		b.Fatalf("nats bench: %v\n%s", err, out)
	}
	rate, _ := strconv.ParseFloat(strings.ReplaceAll(string(m[1]), ",", ""), 64)
	return rate
}

// Artifact is the path of a file a test leaves for people to look at, under
// test/artifacts/ in the repository (git ignores it).
func Artifact(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(repoRoot(), "test", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// Chromium is the path of a Chromium for browser tests: $TIDELINE_CHROMIUM,
// or chromium on the PATH. Without one the test is skipped, unless
// TIDELINE_REQUIRE_BROWSER is set (CI sets it), when it fails.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TIDELINE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium for the browser test: install Debian's chromium package (apt-get install chromium) or set TIDELINE_CHROMIUM"
	if os.Getenv("TIDELINE_REQUIRE_BROWSER") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Get fetches url and decodes its JSON answer into out (numbers as
// json.Number; nil skips the body), or says what the server answered.
func Get(url string, out any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	if out == nil {
		return nil
	}
	d := json.NewDecoder(resp.Body)
	d.UseNumber()
	return d.Decode(out)
}

// Query sends one SQL statement to a serve process's POST /v1/query and
// returns the rows, numbers as json.Number.
func Query(serveURL, sql string) ([][]any, error) {
	body, _ := json.Marshal(map[string]string{"sql": sql})
	resp, err := http.Post(serveURL+"/v1/query", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var res struct {
		Rows  [][]any `json:"rows"`
		Error string  `json:"error"`
	}
	d := json.NewDecoder(resp.Body)
	d.UseNumber()
	if err := d.Decode(&res); err != nil || res.Error != "" {
		return nil, fmt.Errorf("%s: %v %s", sql, err, res.Error)
	}
	return res.Rows, nil
}
