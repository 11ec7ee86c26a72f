package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tideline/internal/devstack"
	"tideline/internal/stacktest"
)

// TestDevBringsUpTheWholeSystem runs `tideline dev` as a user would, with
// free ports and a fresh data directory, and requires within 60 s of the
// start: live speed windows and processor stats (what the dashboard draws),
// a compaction's Parquet in MinIO read back through raw_payments, the
// scorer's decisions aggregated in merchant_flag_rate, and the merged view
// answering. Then Ctrl-C (SIGINT) stops everything cleanly, and a second
// start on the same data directory resumes with what is there.
func TestDevBringsUpTheWholeSystem(t *testing.T) {
	bin := stacktest.BuildTideline(t)
	dir := t.TempDir()
	ports := make([]int, 9)
	for i := range ports {
		p, err := devstack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	api := fmt.Sprintf("127.0.0.1:%d", ports[5])
	logPath := filepath.Join(dir, "dev.out")
	start := time.Now()
	startDev := func(extra ...string) *exec.Cmd {
		args := append([]string{"dev", "--data", filepath.Join(dir, "data"), "--bin", devstack.FindBinDir(),
			"--spec", "../../examples/payments/tideline.yaml", "--gen-rate", "100",
			"--nats-port", fmt.Sprint(ports[0]), "--temporal-port", fmt.Sprint(ports[1]), "--temporal-ui-port", fmt.Sprint(ports[2]),
			"--minio-port", fmt.Sprint(ports[3]), "--minio-console-port", fmt.Sprint(ports[4]),
			"--http", api, "--stream-http", fmt.Sprintf("127.0.0.1:%d", ports[6]), "--worker-http", fmt.Sprintf("127.0.0.1:%d", ports[7]),
			"--score-http", fmt.Sprintf("127.0.0.1:%d", ports[8])}, extra...)
		return stacktest.Start(t, bin, logPath, nil, args...)
	}
	cmd := startDev()
	failed := func(format string, args ...any) {
		t.Helper()
		out, _ := os.ReadFile(logPath)
		for _, name := range []string{"stream", "worker", "serve", "score", "gen"} {
			data, _ := os.ReadFile(filepath.Join(dir, "data", "logs", name+".log"))
			if len(data) > 3000 {
				data = data[len(data)-3000:]
			}
			t.Logf("--- %s.log (tail) ---\n%s", name, data)
		}
		t.Fatalf(format+"\n--- tideline dev ---\n%s", append(args, out)...)
	}
	get := func(path string, out any) error { return stacktest.Get("http://"+api+path, out) }
	query := func(sql string) ([][]any, error) { return stacktest.Query("http://"+api, sql) }

	checks := map[string]func() error{
		"live speed windows": func() error {
			var v struct {
				Rows []struct {
					Source string `json:"source"`
				} `json:"rows"`
			}
			if err := get("/v1/views/merchant_minute", &v); err != nil {
				return err
			}
			for _, r := range v.Rows {
				if r.Source == "speed" {
					return nil
				}
			}
			return fmt.Errorf("no speed rows among %d", len(v.Rows))
		},
		"processor stats for the dashboard": func() error {
			var s struct {
				Streams map[string][]json.RawMessage `json:"streams"`
			}
			if err := get("/v1/stats", &s); err != nil {
				return err
			}
			if len(s.Streams["payments"]) < 2 {
				return fmt.Errorf("%d stats of payments", len(s.Streams["payments"]))
			}
			return nil
		},
		"compacted Parquet in MinIO": func() error {
			rows, err := query("SELECT count(*) FROM raw_payments")
			if err != nil {
				return err
			}
			if n := num(rows[0][0]); n == 0 {
				return fmt.Errorf("raw_payments is empty")
			}
			return nil
		},
		"fraud decisions in merchant_flag_rate": func() error {
			rows, err := query("SELECT sum(decisions), sum(flagged) FROM merchant_flag_rate")
			if err != nil {
				return err
			}
			if n := num(rows[0][0]); n == 0 {
				return fmt.Errorf("no decisions yet")
			}
			return nil
		},
		"the merged view answers": func() error {
			rows, err := query("SELECT source, count(*) FROM merchant_minute GROUP BY ALL")
			if err != nil {
				return err
			}
			if len(rows) == 0 {
				return fmt.Errorf("merchant_minute is empty")
			}
			return nil
		},
	}
	pending := map[string]error{}
	for name := range checks {
		pending[name] = fmt.Errorf("not checked yet")
	}
	for len(pending) > 0 {
		for name := range pending {
			if err := checks[name](); err == nil {
				t.Logf("%s after %s", name, time.Since(start).Round(100*time.Millisecond))
				delete(pending, name)
			} else {
				pending[name] = err
			}
		}
		if len(pending) > 0 && time.Since(start) > 60*time.Second {
			failed("not within 60 s of start: %v", pending)
		}
		time.Sleep(500 * time.Millisecond)
	}
	resp, err := http.Get("http://" + api + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "/assets/app.js") {
		t.Errorf("the dashboard page is not served at /: %.200s", page)
	}
	out, _ := os.ReadFile(logPath)
	for _, want := range []string{"Dashboard       http://" + api + "/", "Temporal UI", "MinIO console", "Workflow Type   Backfill"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("tideline dev did not print %q", want)
		}
	}

	rows, err := query("SELECT count(*) FROM raw_payments")
	if err != nil {
		t.Fatal(err)
	}
	compacted := num(rows[0][0])

	// Ctrl-C stops every process, and the ports are free again.
	stopDev := func(cmd *exec.Cmd) {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				failed("tideline dev exited with %v after Ctrl-C", err)
			}
		case <-time.After(45 * time.Second):
			failed("tideline dev still running 45 s after Ctrl-C")
		}
		for _, p := range ports {
			if err := waitPortFree(p, 10*time.Second); err != nil {
				t.Errorf("after Ctrl-C: %v", err)
			}
		}
	}
	stopDev(cmd)

	// Again, on the same data: it resumes with the lake and streams there.
	cmd = startDev("--no-gen")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		rows, err := query("SELECT count(*) FROM raw_payments")
		if err == nil {
			if n := num(rows[0][0]); n >= compacted && n > 0 {
				t.Logf("restarted: raw_payments has %d rows (%d before)", n, compacted)
				break
			}
			err = fmt.Errorf("raw_payments has %v rows, %d before the restart", rows[0][0], compacted)
		}
		if time.Now().After(deadline) {
			failed("after a restart on the same data: %v", err)
		}
	}
	stopDev(cmd)
}

func waitPortFree(port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return nil
		}
		c.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("something still listens on port %d", port)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// num reads a JSON number from a query result; NULL is 0.
func num(x any) int64 {
	n, _ := x.(json.Number)
	v, _ := n.Int64()
	return v
}
