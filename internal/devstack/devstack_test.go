package devstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestStackRoundTrips starts the real parts and does one real round trip
// through each: a JetStream publish and consume, a workflow run to completion,
// and an object put and read back.
func TestStackRoundTrips(t *testing.T) {
	s := StartForTest(t, All)
	ctx := t.Context()

	t.Run("jetstream", func(t *testing.T) {
		nc, err := nats.Connect(s.NATS.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ROUNDTRIP", Subjects: []string{"roundtrip.>"}, Storage: jetstream.FileStorage})
		if err != nil {
			t.Fatal(err)
		}
		ack, err := js.Publish(ctx, "roundtrip.a", []byte("hello"), jetstream.WithMsgID("id-1"))
		if err != nil {
			t.Fatal(err)
		}
		dup, err := js.Publish(ctx, "roundtrip.a", []byte("hello"), jetstream.WithMsgID("id-1"))
		if err != nil || !dup.Duplicate || dup.Sequence != ack.Sequence {
			t.Fatalf("republish with the same Nats-Msg-Id: %+v, %v; want a duplicate of seq %d", dup, err, ack.Sequence)
		}
		cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if string(msg.Data()) != "hello" {
			t.Fatalf("consumed %q, want hello", msg.Data())
		}
		if err := msg.Ack(); err != nil {
			t.Fatal(err)
		}
		t.Logf("jetstream: published and consumed seq %d on %s", ack.Sequence, s.NATS.URL)
	})

	t.Run("temporal", func(t *testing.T) {
		c, err := client.Dial(client.Options{HostPort: s.Temporal.HostPort, Namespace: s.Temporal.Namespace, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		w := worker.New(c, "devstack-test", worker.Options{})
		w.RegisterWorkflowWithOptions(func(ctx workflow.Context, name string) (string, error) {
			return "hello " + name, nil
		}, workflow.RegisterOptions{Name: "Greet"})
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "greet-1", TaskQueue: "devstack-test"}, "Greet", "tideline")
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if err := run.Get(ctx, &got); err != nil {
			t.Fatal(err)
		}
		if got != "hello tideline" {
			t.Fatalf("workflow returned %q", got)
		}
		t.Logf("temporal: workflow %s/%s completed on %s (UI %s)", run.GetID(), run.GetRunID(), s.Temporal.HostPort, s.Temporal.UIURL)
	})

	t.Run("minio", func(t *testing.T) {
		mc, err := minio.New(s.MinIO.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.MinIO.AccessKey, s.MinIO.SecretKey, "")})
		if err != nil {
			t.Fatal(err)
		}
		if err := mc.MakeBucket(ctx, "roundtrip", minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
		body := []byte("a lake object")
		if _, err := mc.PutObject(ctx, "roundtrip", "a/b.txt", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		obj, err := mc.GetObject(ctx, "roundtrip", "a/b.txt", minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(obj)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("read back %q, %v", got, err)
		}
		t.Logf("minio: put and got %d bytes at %s", len(got), s.MinIO.Endpoint)
	})

	t.Run("stop leaves no process", func(t *testing.T) {
		pids := []int{s.Temporal.Pid(), s.MinIO.Pid()}
		if err := s.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process %d still exists after Stop (kill 0: %v)", pid, err)
			}
		}
	})
}

func TestMissingToolNamesMakeTools(t *testing.T) {
	empty := t.TempDir()
	_, err := Start(context.Background(), Options{Dir: t.TempDir(), BinDir: empty, Parts: All})
	if !errors.Is(err, ErrToolMissing) || !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("want an error naming make tools, got %v", err)
	}
}

func TestTemporalRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	start := func() *Temporal {
		tp, err := StartTemporal(ctx, TemporalOptions{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tp.Stop() })
		return tp
	}
	tp := start()
	c, err := client.Dial(client.Options{HostPort: tp.HostPort, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	// A workflow nobody runs stays open; after a restart on the same
	// database it must still be there.
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "survives-restart", TaskQueue: "nobody"}, "Nothing")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := tp.Stop(); err != nil {
		t.Fatal(err)
	}
	tp = start()
	c, err = client.Dial(client.Options{HostPort: tp.HostPort, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	desc, err := c.DescribeWorkflowExecution(ctx, "survives-restart", run.GetRunID())
	if err != nil {
		t.Fatalf("workflow lost across a restart: %v", err)
	}
	if st := desc.WorkflowExecutionInfo.Status.String(); st != "Running" {
		t.Fatalf("status after restart %s, want Running", st)
	}
}

// TestChildrenDieWithOwner kills -9 a process that started MinIO, without a
// chance to clean up, and checks that MinIO goes with it.
func TestChildrenDieWithOwner(t *testing.T) {
	if os.Getenv("DEVSTACK_OWNER_DIR") != "" {
		return // running as the owner, see ownerMain
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMain$")
	cmd.Env = append(os.Environ(), "DEVSTACK_OWNER_DIR="+dir, "TIDELINE_BIN="+FindBinDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("owner did not report MinIO's pid: %v", err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("MinIO (pid %d) is not running under its owner: %v", pid, err)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("MinIO (pid %d) outlived its owner by 10s", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMain doubles as the owner process of TestChildrenDieWithOwner.
func TestMain(m *testing.M) {
	if dir := os.Getenv("DEVSTACK_OWNER_DIR"); dir != "" {
		mc, err := StartMinIO(context.Background(), MinIOOptions{Dir: dir})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(mc.Pid())
		time.Sleep(time.Minute) // until killed
		os.Exit(1)
	}
	os.Exit(m.Run())
}
