package devstack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
)

// Temporal is the Temporal CLI's dev server running as a child process.
type Temporal struct {
	HostPort  string // frontend gRPC, for client.Options.HostPort
	UIURL     string // the web UI
	Namespace string
	proc      *process
}

// TemporalOptions configures StartTemporal.
type TemporalOptions struct {
	BinDir string // holds the temporal binary; FindBinDir() when empty
	Dir    string // holds temporal.db (persistent across restarts) and temporal.log
	Port   int    // frontend gRPC port; 0 picks a free one
	UIPort int    // 0 picks a free one
	// SearchAttributes to register, name to type (Keyword, Int, Text, ...).
	SearchAttributes map[string]string
	Log              *slog.Logger
}

// StartTemporal starts `temporal server start-dev` with the UI on and the
// default namespace, and waits for its health check. A port it picked that
// another process took before the server bound it is picked again.
func StartTemporal(ctx context.Context, o TemporalOptions) (*Temporal, error) {
	for attempt := 1; ; attempt++ {
		t, err := startTemporal(ctx, o)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return t, err
		}
		if o.Log != nil {
			o.Log.Warn("a port the temporal dev server was given was taken; trying others", "err", err)
		}
	}
}

func startTemporal(ctx context.Context, o TemporalOptions) (*Temporal, error) {
	if o.BinDir == "" {
		o.BinDir = FindBinDir()
	}
	bin, err := toolPath(o.BinDir, "temporal")
	if err != nil {
		return nil, err
	}
	httpPort, metricsPort := 0, 0
	if err := freePorts(&o.Port, &o.UIPort, &httpPort, &metricsPort); err != nil {
		return nil, err
	}
	args := []string{"server", "start-dev",
		"--ip", "127.0.0.1",
		"--port", itoa(o.Port), "--ui-port", itoa(o.UIPort),
		"--http-port", itoa(httpPort), "--metrics-port", itoa(metricsPort),
		"--db-filename", filepath.Join(o.Dir, "temporal.db"),
		"--namespace", "default",
		"--log-level", "warn", "--log-format", "json",
	}
	for k, v := range o.SearchAttributes {
		args = append(args, "--search-attribute", k+"="+v)
	}
	p, err := startProcess("temporal", bin, args, nil, filepath.Join(o.Dir, "temporal.log"))
	if err != nil {
		return nil, err
	}
	t := &Temporal{
		HostPort:  net.JoinHostPort("127.0.0.1", itoa(o.Port)),
		UIURL:     fmt.Sprintf("http://127.0.0.1:%d", o.UIPort),
		Namespace: "default",
		proc:      p,
	}
	err = p.waitReady(ctx, 90*time.Second, func(ctx context.Context) error {
		c, err := client.DialContext(ctx, client.Options{HostPort: t.HostPort, Namespace: t.Namespace, Logger: quietLogger()})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.CheckHealth(ctx, &client.CheckHealthRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	if o.Log != nil {
		o.Log.Info("temporal dev server ready", "hostport", t.HostPort, "ui", t.UIURL, "pid", p.Pid())
	}
	return t, nil
}

// Pid is the server's process id.
func (t *Temporal) Pid() int { return t.proc.Pid() }

// Stop terminates the server; its state stays in temporal.db.
func (t *Temporal) Stop() error { return t.proc.stop(10 * time.Second) }

// Exited is closed when the server process has exited.
func (t *Temporal) Exited() <-chan struct{} { return t.proc.done }
