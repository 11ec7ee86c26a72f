package devstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrToolMissing is returned when bin/temporal or bin/minio is absent.
var ErrToolMissing = errors.New("tool missing")

// process is a child server process that dies with its owner.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // exit status, valid after done
}

// startProcess runs bin with args, appending its output to logPath. The
// goroutine that starts the child stays locked to its OS thread until the
// child exits, because Pdeathsig fires when the creating thread exits, not
// the process.
func startProcess(name, bin string, args, env []string, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open %s log %s: %w", name, logPath, err)
	}
	p := &process{name: name, logPath: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer logf.Close()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("cannot start %s (%s): %w", name, bin, err)
			close(p.done)
			return
		}
		p.cmd = cmd
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
		// The locked thread ends with this goroutine; the child is gone already.
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pid is the child's process id.
func (p *process) Pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM to the child's process group, and SIGKILL after grace.
func (p *process) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	return nil
}

// failure wraps err with the tail of the process's log, which is where the
// reason a server did not come up usually is.
func (p *process) failure(err error) error {
	data, _ := os.ReadFile(p.logPath)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	state := "running"
	if p.exited() {
		state = fmt.Sprintf("exited: %v", p.err)
	}
	return fmt.Errorf("%s did not become ready (%s): %w\n--- last lines of %s ---\n%s", p.name, state, err, p.logPath, bytes.TrimSpace(data))
}

// waitReady polls check until it succeeds, the process exits, or ctx ends.
// A process that does not become ready is stopped.
func (p *process) waitReady(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	err := p.poll(ctx, timeout, check)
	if err != nil {
		_ = p.stop(5 * time.Second)
	}
	return err
}

func (p *process) poll(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
			return p.failure(last)
		case <-ctx.Done():
			return p.failure(fmt.Errorf("not ready after %s: %w", timeout, last))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("cannot find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StablePort returns a TCP port on 127.0.0.1 that was free a moment ago
// and lies below the kernel's ephemeral range, for a server that will be
// stopped and started again on it: a port of that range can meanwhile be
// taken as the local end of some outgoing connection (clients moving to
// another node of a cluster make many), and the server could not listen
// on it again.
func StablePort() (int, error) {
	lo := 32768 // Linux's default start of the ephemeral range
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
				lo = n
			}
		}
	}
	base := 1024 + rand.IntN(lo-1024)
	for i := range lo - 1024 {
		port := 1024 + (base-1024+i)%(lo-1024)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("cannot find a free port below %d", lo)
}

func freePorts(ports ...*int) error {
	for _, p := range ports {
		if *p != 0 {
			continue
		}
		port, err := FreePort()
		if err != nil {
			return err
		}
		*p = port
	}
	return nil
}

// FindBinDir locates the directory holding the tools `make tools` builds:
// $TIDELINE_BIN, else the directory of the running executable if it holds
// them, else bin/ in the nearest parent directory with the tideline go.mod.
func FindBinDir() string {
	if d := os.Getenv("TIDELINE_BIN"); d != "" {
		return d
	}
	if exe, err := os.Executable(); err == nil {
		d := filepath.Dir(exe)
		if _, err := os.Stat(filepath.Join(d, "temporal")); err == nil {
			return d
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "bin"
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(data, []byte("module tideline\n")) {
			return filepath.Join(dir, "bin")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "bin"
		}
		dir = parent
	}
}

func toolPath(binDir, name string) (string, error) {
	p := filepath.Join(binDir, name)
	if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("cannot find %s at %s: run `make tools` to build it (a few minutes the first time), or set TIDELINE_BIN to where it is: %w", name, p, ErrToolMissing)
	}
	return p, nil
}

func itoa(n int) string { return strconv.Itoa(n) }
