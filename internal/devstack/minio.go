package devstack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"
)

// The credentials of the dev MinIO. Dev and tests only.
const (
	MinIOAccessKey = "tideline"
	MinIOSecretKey = "tideline-dev-secret"
)

// MinIO is a MinIO server running as a child process.
type MinIO struct {
	Endpoint   string // host:port of the S3 API
	ConsoleURL string
	AccessKey  string
	SecretKey  string
	proc       *process
}

// MinIOOptions configures StartMinIO.
type MinIOOptions struct {
	BinDir      string // holds the minio binary; FindBinDir() when empty
	Dir         string // data in Dir/minio, log in Dir/minio.log
	Port        int    // S3 API port; 0 picks a free one
	ConsolePort int    // 0 picks a free one
	Log         *slog.Logger
}

// StartMinIO starts a single-node MinIO and waits for its readiness probe.
func StartMinIO(ctx context.Context, o MinIOOptions) (*MinIO, error) {
	if o.BinDir == "" {
		o.BinDir = FindBinDir()
	}
	bin, err := toolPath(o.BinDir, "minio")
	if err != nil {
		return nil, err
	}
	if err := freePorts(&o.Port, &o.ConsolePort); err != nil {
		return nil, err
	}
	m := &MinIO{
		Endpoint:   net.JoinHostPort("127.0.0.1", itoa(o.Port)),
		ConsoleURL: fmt.Sprintf("http://127.0.0.1:%d", o.ConsolePort),
		AccessKey:  MinIOAccessKey,
		SecretKey:  MinIOSecretKey,
	}
	args := []string{"server", "--quiet", "--address", m.Endpoint, "--console-address", net.JoinHostPort("127.0.0.1", itoa(o.ConsolePort)), filepath.Join(o.Dir, "minio")}
	env := []string{
		"MINIO_ROOT_USER=" + m.AccessKey, "MINIO_ROOT_PASSWORD=" + m.SecretKey,
		"MINIO_UPDATE=off", "MINIO_CALLHOME_ENABLE=off",
	}
	p, err := startProcess("minio", bin, args, env, filepath.Join(o.Dir, "minio.log"))
	if err != nil {
		return nil, err
	}
	m.proc = p
	url := "http://" + m.Endpoint + "/minio/health/ready"
	err = p.waitReady(ctx, 60*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if o.Log != nil {
		o.Log.Info("minio ready", "endpoint", m.Endpoint, "console", m.ConsoleURL, "pid", p.Pid())
	}
	return m, nil
}

// Pid is the server's process id.
func (m *MinIO) Pid() int { return m.proc.Pid() }

// Stop terminates the server; its data stays in its directory.
func (m *MinIO) Stop() error { return m.proc.stop(10 * time.Second) }
