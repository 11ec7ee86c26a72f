package lake

import (
	"os"
	"testing"
)

var minioDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lake-minio-")
	if err != nil {
		panic(err)
	}
	minioDir = dir
	code := m.Run()
	if sharedMinIO != nil {
		_ = sharedMinIO.Stop()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}
