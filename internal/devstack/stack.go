package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"

	"go.temporal.io/sdk/log"
)

// Parts selects what Start runs.
type Parts struct {
	NATS, Temporal, MinIO bool
}

// All is every part.
var All = Parts{NATS: true, Temporal: true, MinIO: true}

// Options configures Start. Zero ports pick free ones.
type Options struct {
	Dir    string // data directory; each part keeps its state under it
	BinDir string // FindBinDir() when empty
	Parts  Parts

	NATSPort, TemporalPort, TemporalUIPort, MinIOPort, MinIOConsolePort int
	TemporalSearchAttributes                                            map[string]string

	Log *slog.Logger
}

// Stack is the running parts; the ones not asked for are nil.
type Stack struct {
	NATS     *NATS
	Temporal *Temporal
	MinIO    *MinIO
}

// Start starts the selected parts in order (NATS, Temporal, MinIO). If one
// fails, the ones already started are stopped.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if o.Dir == "" {
		return nil, errors.New("cannot start the dev stack: no data directory given")
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create data directory: %w", err)
	}
	s := &Stack{}
	var err error
	if o.Parts.NATS {
		if s.NATS, err = StartNATS(NATSOptions{Dir: o.Dir, Port: o.NATSPort}); err != nil {
			return nil, errors.Join(err, s.Stop())
		}
		if o.Log != nil {
			o.Log.Info("nats ready", "url", s.NATS.URL, "store", o.Dir)
		}
	}
	if o.Parts.Temporal {
		s.Temporal, err = StartTemporal(ctx, TemporalOptions{
			BinDir: o.BinDir, Dir: o.Dir, Port: o.TemporalPort, UIPort: o.TemporalUIPort,
			SearchAttributes: o.TemporalSearchAttributes, Log: o.Log,
		})
		if err != nil {
			return nil, errors.Join(err, s.Stop())
		}
	}
	if o.Parts.MinIO {
		s.MinIO, err = StartMinIO(ctx, MinIOOptions{BinDir: o.BinDir, Dir: o.Dir, Port: o.MinIOPort, ConsolePort: o.MinIOConsolePort, Log: o.Log})
		if err != nil {
			return nil, errors.Join(err, s.Stop())
		}
	}
	return s, nil
}

// Stop stops every running part, in reverse order of start.
func (s *Stack) Stop() error {
	var errs []error
	if s.MinIO != nil {
		errs = append(errs, s.MinIO.Stop())
		s.MinIO = nil
	}
	if s.Temporal != nil {
		errs = append(errs, s.Temporal.Stop())
		s.Temporal = nil
	}
	if s.NATS != nil {
		s.NATS.Stop()
		s.NATS = nil
	}
	return errors.Join(errs...)
}

// StartForTest starts the selected parts in a temporary directory with free
// ports, and stops them when the test ends, pass or fail.
func StartForTest(t testing.TB, parts Parts) *Stack {
	t.Helper()
	dir := t.TempDir()
	s, err := Start(context.Background(), Options{Dir: dir, Parts: parts})
	if err != nil {
		t.Fatalf("cannot start the dev stack: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("cannot stop the dev stack: %v", err)
		}
	})
	return s
}

func quietLogger() log.Logger {
	return log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
}
