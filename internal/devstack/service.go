package devstack

import (
	"context"
	"log/slog"
	"time"
)

// Service is one of tideline's own processes under `tideline dev`: a
// command whose output goes to a log file, restarted after an unexpected
// exit (waiting 1 s, doubling to 30 s while it keeps failing within a
// minute), and stopped with SIGTERM, then SIGKILL after 10 s.
type Service struct {
	Name    string
	LogPath string
	cancel  context.CancelFunc
	done    chan struct{}
	started chan int // pids, one per start, for tests
}

// StartService starts bin with args and env (added to this process's) and
// keeps it running until Stop.
func StartService(name, bin string, args, env []string, logPath string, log *slog.Logger) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{Name: name, LogPath: logPath, cancel: cancel, done: make(chan struct{}), started: make(chan int, 16)}
	go func() {
		defer close(s.done)
		backoff := time.Second
		for ctx.Err() == nil {
			began := time.Now()
			p, err := startProcess(name, bin, args, env, logPath)
			if err == nil {
				select {
				case s.started <- p.Pid():
				default:
				}
				select {
				case <-ctx.Done():
					_ = p.stop(10 * time.Second)
					return
				case <-p.done:
				}
				err = p.err
			}
			if time.Since(began) > time.Minute {
				backoff = time.Second
			}
			log.Warn("a tideline process exited; restarting it", "process", name, "err", err, "in", backoff, "log", logPath)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
		}
	}()
	return s
}

// Stop stops the process and waits for it to exit.
func (s *Service) Stop() {
	s.cancel()
	<-s.done
}

// Started delivers the pid of each start of the process.
func (s *Service) Started() <-chan int { return s.started }
