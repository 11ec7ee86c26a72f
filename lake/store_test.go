package lake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tideline/internal/devstack"
)

// stores returns one store of each kind, the S3 one on a real MinIO.
func stores(t *testing.T) map[string]Store {
	t.Helper()
	ctx := t.Context()
	fs, err := Open(ctx, "file://"+t.TempDir(), S3Config{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Store{"file": fs, "s3": minioStore(t, "s3://conformance/some/prefix")}
}

var (
	sharedMinIO     *devstack.MinIO
	sharedMinIOOnce sync.Once
)

// minioStore opens url on a MinIO shared by the package's tests; each test
// uses its own bucket or prefix.
func minioStore(t testing.TB, url string) Store {
	t.Helper()
	sharedMinIOOnce.Do(func() {
		m, err := devstack.StartMinIO(context.Background(), devstack.MinIOOptions{Dir: minioDir})
		if err != nil {
			t.Fatalf("cannot start MinIO: %v", err)
		}
		sharedMinIO = m
	})
	if sharedMinIO == nil {
		t.Fatal("MinIO did not start")
	}
	s, err := Open(t.Context(), url, minioConfig(sharedMinIO), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func minioConfig(m *devstack.MinIO) S3Config {
	return S3Config{Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey}
}

func TestStoreConformance(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			body := []byte("hello lake")
			info, err := s.Put(ctx, "a/b/one.bin", bytes.NewReader(body), int64(len(body)))
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != int64(len(body)) || info.ETag == "" {
				t.Errorf("Put info %+v", info)
			}
			r, ginfo, err := s.Get(ctx, "a/b/one.bin")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(r)
			r.Close()
			if !bytes.Equal(got, body) || ginfo.ETag != info.ETag {
				t.Errorf("Get = %q etag %q, want %q etag %q", got, ginfo.ETag, body, info.ETag)
			}
			if st, err := s.Stat(ctx, "a/b/one.bin"); err != nil || st.ETag != info.ETag || st.Size != info.Size {
				t.Errorf("Stat = %+v, %v", st, err)
			}

			// Replacing an object changes its ETag.
			time.Sleep(10 * time.Millisecond)
			info2, err := s.Put(ctx, "a/b/one.bin", strings.NewReader("changed!"), 8)
			if err != nil || info2.ETag == info.ETag {
				t.Errorf("replace: %+v, %v; ETag should change from %q", info2, err, info.ETag)
			}

			if _, _, err := s.Get(ctx, "a/missing"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get missing: %v, want ErrNotFound", err)
			}
			if _, err := s.Stat(ctx, "a/missing"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat missing: %v, want ErrNotFound", err)
			}
			if err := s.Delete(ctx, "a/missing"); err != nil {
				t.Errorf("Delete missing: %v", err)
			}

			if _, err := s.PutIfAbsent(ctx, "a/log/1", []byte("first")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.PutIfAbsent(ctx, "a/log/1", []byte("second")); !errors.Is(err, ErrExists) {
				t.Errorf("second PutIfAbsent: %v, want ErrExists", err)
			}
			if got := readAll(t, s, "a/log/1"); got != "first" {
				t.Errorf("after a lost PutIfAbsent the object is %q, want first", got)
			}

			// Racing creators: exactly one wins, and the object is the winner's.
			var wins atomic.Int32
			var winner atomic.Value
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					data := fmt.Sprintf("writer %d", i)
					_, err := s.PutIfAbsent(ctx, "a/log/2", []byte(data))
					switch {
					case err == nil:
						wins.Add(1)
						winner.Store(data)
					case !errors.Is(err, ErrExists):
						t.Errorf("writer %d: %v", i, err)
					}
				})
			}
			wg.Wait()
			if wins.Load() != 1 {
				t.Fatalf("%d writers won the race for one key, want 1", wins.Load())
			}
			if got := readAll(t, s, "a/log/2"); got != winner.Load() {
				t.Errorf("object holds %q, winner wrote %q", got, winner.Load())
			}

			list, err := s.List(ctx, "a/")
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, o := range list {
				keys = append(keys, o.Key)
			}
			if want := "a/b/one.bin a/log/1 a/log/2"; strings.Join(keys, " ") != want {
				t.Errorf("List = %v, want %s", keys, want)
			}
			if err := s.Delete(ctx, "a/b/one.bin"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Stat(ctx, "a/b/one.bin"); !errors.Is(err, ErrNotFound) {
				t.Errorf("after Delete: %v", err)
			}
			if _, err := s.Put(ctx, "../escape", strings.NewReader("x"), 1); err == nil && name == "file" {
				t.Error("file store accepted a key with ..")
			}
		})
	}
}

func readAll(t *testing.T, s Store, key string) string {
	t.Helper()
	r, _, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOpenErrors(t *testing.T) {
	ctx := t.Context()
	for url, want := range map[string]string{
		"ftp://x/y":       "scheme must be s3:// or file://",
		"file://relative": "absolute path",
		"s3:///nobucket":  "name the bucket",
		"s3://b/p":        "no endpoint",
	} {
		if _, err := Open(ctx, url, S3Config{}, Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want an error with %q", url, err, want)
		}
	}
	// A refused connection is transient: retried, then ErrUnavailable.
	port, _ := devstack.FreePort()
	_, err := Open(ctx, "s3://bucket", S3Config{Endpoint: fmt.Sprintf("127.0.0.1:%d", port)}, Options{Attempts: 2})
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("unreachable endpoint: %v, want ErrUnavailable", err)
	}
	// Bad credentials are permanent and say what to check.
	m := minioStore(t, "s3://conformance").(*s3Store)
	_, err = Open(ctx, "s3://conformance", S3Config{Endpoint: m.cfg.Endpoint, AccessKey: "nobody", SecretKey: "wrongwrong"}, Options{})
	if err == nil || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("bad credentials: %v, want a permanent access denied error", err)
	}
}

// TestMinIORestart stops MinIO under a store and starts it again: calls fail
// as retryable while it is down and succeed once it is back.
func TestMinIORestart(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	port, _ := devstack.FreePort()
	m, err := devstack.StartMinIO(ctx, devstack.MinIOOptions{Dir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	s, err := Open(ctx, "s3://restart/lake", minioConfig(m), Options{Attempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutIfAbsent(ctx, "k1", []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutIfAbsent(ctx, "k2", []byte("during")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("put while MinIO is down: %v, want ErrUnavailable", err)
	}
	if _, _, err := s.Get(ctx, "k1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("get while MinIO is down: %v, want ErrUnavailable", err)
	}
	m, err = devstack.StartMinIO(ctx, devstack.MinIOOptions{Dir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	if _, err := s.PutIfAbsent(ctx, "k2", []byte("after")); err != nil {
		t.Fatalf("put after MinIO is back: %v", err)
	}
	if got := readAll(t, s, "k1"); got != "before" {
		t.Fatalf("k1 = %q after restart", got)
	}
}
