// Package stacktest holds what tests against the real stack share: the
// payments example shrunk to seconds, so windows close and partitions seal
// within a test, and the tideline binary built and run as a child process
// for tests that kill it.
package stacktest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

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
		"out_of_orderness: 5s", "out_of_orderness: 500ms",
		"idle_timeout: 5s", "idle_timeout: 200ms",
		"partition: 5m", "partition: 1m",
	).Replace(string(data))
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
