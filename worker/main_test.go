package worker

import (
	"os"
	"testing"
)

// benchDir holds data the benchmarks generate once per process.
var benchDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tideline-worker-bench-")
	if err != nil {
		panic(err)
	}
	benchDir = dir
	code := m.Run()
	if sharedStop != nil {
		sharedStop()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}
