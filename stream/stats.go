package stream

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"
)

// StatsSubject is where the processor of a stream publishes its Stats once
// a second, on core NATS: the dashboard's throughput, freshness, late and
// dead-letter charts read them through serve.
func StatsSubject(stream string) string { return "tl.stats." + stream }

// StatsWildcard matches every stream's StatsSubject.
const StatsWildcard = "tl.stats.>"

// Stats is one processor's state at a moment. The counters count since the
// process started: a reader takes rates from differences and treats a
// counter that went down as a restart.
type Stats struct {
	Stream  string    `json:"stream"` // or, for a partition's processor, <stream>.p<n>
	Time    time.Time `json:"time"`
	Started time.Time `json:"started"` // of the process: a new value means the counters restarted
	Seq     uint64    `json:"seq"`     // last stream sequence applied
	Pending uint64    `json:"pending"` // messages in the stream not yet consumed
	// Events counts messages consumed, by outcome: applied, invalid,
	// duplicate, late, filtered.
	Events       map[string]uint64 `json:"events"`
	DeadLettered uint64            `json:"dead_lettered"`
	// Late counts events per view that arrived after every window of the
	// view holding them had closed (since the last checkpoint restore).
	Late        map[string]uint64 `json:"late"`
	Watermark   time.Time         `json:"watermark"`
	OpenWindows int               `json:"open_windows"`
	// Freshness is, over the last interval, the time from JetStream storing
	// an event to its window update being published, for the oldest event
	// of each flush: the median and the worst flush, in milliseconds. Zero
	// when nothing was flushed.
	FreshnessP50Ms float64 `json:"freshness_p50_ms"`
	FreshnessMaxMs float64 `json:"freshness_max_ms"`
}

// ParseStats reads a Stats message.
func ParseStats(data []byte) (Stats, error) {
	var s Stats
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("cannot parse speed-layer stats: %w", err)
	}
	return s, nil
}

// publishStats sends the processor's stats and starts a new freshness
// interval. Run goroutine only.
func (p *Processor) publishStats(now time.Time) {
	p.mu.Lock()
	s := Stats{Stream: p.name, Time: now.UTC(), Started: p.started, Seq: p.op.Seq, Pending: p.pending,
		Late: p.op.LateEvents(), OpenWindows: p.op.OpenWindows(), Events: map[string]uint64{}}
	if wm := p.op.Watermark; wm != math.MinInt64 {
		s.Watermark = time.UnixMicro(wm).UTC()
	}
	p.mu.Unlock()
	for o, name := range outcomeName {
		s.Events[name] = p.counts[o].Load()
	}
	s.DeadLettered = p.deadLettered.Load()
	if n := len(p.freshness); n > 0 {
		slices.Sort(p.freshness)
		s.FreshnessP50Ms = ms(p.freshness[n/2])
		s.FreshnessMaxMs = ms(p.freshness[n-1])
		p.freshness = p.freshness[:0]
	}
	data, _ := json.Marshal(s)
	if err := p.nc.Publish(StatsSubject(p.name), data); err != nil {
		p.log.Debug("cannot publish stats", "err", err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
