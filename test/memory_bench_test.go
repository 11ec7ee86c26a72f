package faults

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"tideline/examples/payments"
	"tideline/stream"
)

// peakRSS is a process's peak resident set (VmHWM), in MiB.
func peakRSS(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// BenchmarkMemoryPeak runs the stack as processes (stream, worker, serve,
// score), publishes 50,000 payments as fast as JetStream takes them, waits
// until the speed layer has applied them and a compaction has committed
// them, and reports each process's peak resident memory in MiB, beside
// MinIO's and the Temporal dev server's in the same run.
func BenchmarkMemoryPeak(b *testing.B) {
	peaks := map[string]float64{}
	for b.Loop() {
		s := startStack(b)
		s.args["score"] = []string{"score", "--http", "127.0.0.1:0"}
		s.start("score")
		st, err := stream.Generate(b.Context(), s.js, s.spec.Stream("payments"), payments.Fraud(0.005, 0.001), stream.GenOptions{Count: 50_000})
		if err != nil {
			b.Fatal(err)
		}
		jss, err := s.js.Stream(b.Context(), "payments")
		if err != nil {
			b.Fatal(err)
		}
		info, _ := jss.Info(b.Context())
		s.waitFor("the speed layer caught up", 3*time.Minute, func() error {
			if x := s.lastStats(); x.Seq < info.State.LastSeq {
				return fmt.Errorf("at %d of %d", x.Seq, info.State.LastSeq)
			}
			return nil
		})
		if err := s.compact(); err != nil {
			b.Fatal(err)
		}
		pids := map[string]int{"minio": s.minio.Pid(), "temporal": s.temporal.Pid()}
		for name, cmd := range s.procs {
			pids[name] = cmd.Process.Pid
		}
		for name, pid := range pids {
			mib, err := peakRSS(pid)
			if err != nil {
				b.Fatal(err)
			}
			peaks[name] = max(peaks[name], mib)
		}
		_ = st
	}
	for _, name := range []string{"stream", "worker", "serve", "score", "minio", "temporal"} {
		b.ReportMetric(peaks[name], name+"-MiB")
	}
}
