package spec

import (
	"fmt"
	"os"
	"time"
)

// Defaults applied where the spec says nothing.
const (
	DefaultPartition      = time.Hour
	DefaultDedupWindow    = 2 * time.Minute
	DefaultOutOfOrderness = 5 * time.Second
	DefaultIdleTimeout    = 10 * time.Second
	DefaultCompactEvery   = time.Minute
	DefaultRetention      = 7 * 24 * time.Hour
	// DefaultMaxBytes bounds a stream's storage when the spec gives no
	// max_bytes (its dead-letter stream gets a quarter), so producers cannot
	// fill the disk: past it JetStream drops the oldest messages, which
	// compaction has read by then or reports as lost. JetStream reserves it
	// against the server's max_store when the stream is created.
	DefaultMaxBytes = 2 << 30
)

// Spec is a parsed, validated pipeline spec.
type Spec struct {
	File    string
	Streams []*Stream // in file order
	Views   []*View   // in file order
	Scoring *Scoring  // nil when the spec has no scoring section
}

// Stream returns the stream called name, or nil.
func (s *Spec) Stream(name string) *Stream {
	for _, st := range s.Streams {
		if st.Name == name {
			return st
		}
	}
	return nil
}

// View returns the view called name, or nil.
func (s *Spec) View(name string) *View {
	for _, v := range s.Views {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// Stream is a named event source backed by one JetStream stream.
type Stream struct {
	Name     string
	Subjects []string
	Contract *Contract
	// Partition is the event-time slice of compaction and recompute.
	Partition time.Duration
	// Partitions is how many partitions the speed layer splits the stream
	// into (partition.go); 0 or 1 is one, unpartitioned.
	Partitions int
	// Retention bounds the JetStream stream (age; bytes and messages when > 0).
	Retention      Retention
	DedupWindow    time.Duration
	OutOfOrderness time.Duration // the watermark trails max event time by this
	IdleTimeout    time.Duration // the watermark advances on wall time after this long without events
	CompactEvery   time.Duration
	// HTTPIngest is whether POST /v1/ingest takes events for the stream
	// (default true); false for a stream tideline writes itself, such as
	// the scorer's decisions.
	HTTPIngest bool
	// LakeRetention is how long the lake keeps the stream's raw
	// partitions, by event time: older ones are dropped, then vacuumed.
	// 0 keeps them for ever.
	LakeRetention time.Duration
	Views         []*View // the views over this stream, in file order

	broken []string // fields with errors, so views do not report them again
}

// Retention bounds a stream.
type Retention struct {
	MaxAge   time.Duration
	MaxBytes int64
	MaxMsgs  int64
}

// Load reads and parses the spec file at path.
func Load(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read spec: %w", err)
	}
	return Parse(path, data)
}
