package lake

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Partition is one event-time slice of a table: [Start, Start+Size).
type Partition struct {
	Start time.Time // UTC, aligned to Size
	Size  time.Duration
}

// PartitionOf is the partition of size holding the event time us (UTC
// microseconds). Partitions are aligned to the Unix epoch; size divides a day.
func PartitionOf(us int64, size time.Duration) Partition {
	s := size.Microseconds()
	start := us - ((us%s)+s)%s
	return Partition{Start: time.UnixMicro(start).UTC(), Size: size}
}

// End is the first instant after the partition.
func (p Partition) End() time.Time { return p.Start.Add(p.Size) }

// Path is the partition's key segment: dt=YYYY-MM-DD/hr=HH, with /min=MM
// when partitions are shorter than an hour.
func (p Partition) Path() string {
	s := p.Start.Format("dt=2006-01-02/hr=15")
	if p.Size < time.Hour {
		s += p.Start.Format("/min=04")
	}
	return s
}

func (p Partition) String() string { return p.Path() }

// ParsePartition parses a partition path made by Path for partitions of size.
func ParsePartition(path string, size time.Duration) (Partition, error) {
	layout := "dt=2006-01-02/hr=15"
	if size < time.Hour {
		layout += "/min=04"
	}
	t, err := time.ParseInLocation(layout, path, time.UTC)
	if err != nil {
		return Partition{}, fmt.Errorf("cannot parse partition %q: want %s", path, strings.NewReplacer("2006", "YYYY", "01", "MM", "02", "DD", "15", "HH", "04", "MM").Replace(layout))
	}
	p := PartitionOf(t.UnixMicro(), size)
	if !p.Start.Equal(t) {
		return Partition{}, fmt.Errorf("cannot use partition %q: it does not start on a %s boundary", path, size)
	}
	return p, nil
}

// RawTable is the lake table name of a stream's raw events.
func RawTable(stream string) string { return "raw/" + stream }

// ViewTable is the lake table name of a view's batch results.
func ViewTable(view string) string { return "views/" + view }

// RawFileKey names the raw file of one partition written from the stream
// sequence range [from, to]. A retry of the same range writes the same key.
func RawFileKey(stream string, p Partition, from, to uint64) string {
	return fmt.Sprintf("%s/%s/seq-%020d-%020d.parquet", RawTable(stream), p.Path(), from, to)
}

// CorrectionsTable is the lake table name of a view's corrections.
func CorrectionsTable(view string) string { return "corrections/" + view }

// PropStagedCorrection, followed by a corrections file's key, is a view
// table property naming a correction file whose view commit has landed and
// which is not yet in the corrections table. Its value is the File, as JSON.
const PropStagedCorrection = "staged-correction:"

// StagedCorrections counts the correction files a view table's snapshot
// names and the corrections table may not hold yet.
func StagedCorrections(s *Snapshot) int {
	n := 0
	for k := range s.Props {
		if strings.HasPrefix(k, PropStagedCorrection) {
			n++
		}
	}
	return n
}

// ViewFileKey names a view partition's batch file computed from version of
// the raw table, with mark naming the input it read. A retry of the same
// recompute writes the same key.
func ViewFileKey(view string, p Partition, rawVersion int64, mark string) string {
	return fmt.Sprintf("%s/%s/v-%020d-%s.parquet", ViewTable(view), p.Path(), rawVersion, mark)
}

func logKey(table string, version int64) string {
	return fmt.Sprintf("%s/_log/%020d.json", table, version)
}

func checkpointKey(table string, version int64) string {
	return fmt.Sprintf("%s/_log/%020d.checkpoint.json", table, version)
}

func lastCheckpointKey(table string) string { return table + "/_log/_last_checkpoint" }

// PropFailed, followed by a partition path, is a view table property
// recording why the partition's last recompute failed in a way no retry
// fixes. Its value is a Failure, as JSON. A recompute of the partition that
// succeeds unsets it.
const PropFailed = "failed:"

// Failure is a recompute that cannot succeed until something changes: the
// spec, the lake's files, or the code.
type Failure struct {
	Partition string    `json:"partition"`
	Type      string    `json:"type"` // the non-retryable error type
	Message   string    `json:"message"`
	At        time.Time `json:"at"`
}

// Failures lists the failures a view table's snapshot records, by
// partition.
func Failures(s *Snapshot) []Failure {
	var out []Failure
	for k, v := range s.Props {
		if !strings.HasPrefix(k, PropFailed) {
			continue
		}
		var f Failure
		if json.Unmarshal([]byte(v), &f) != nil {
			f = Failure{Partition: strings.TrimPrefix(k, PropFailed), Message: v}
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Failure) int { return strings.Compare(a.Partition, b.Partition) })
	return out
}

// Table properties the batch layer keeps (Commit.Props), read by serve too.
const (
	// PropCovered (raw tables): every message the broker received before
	// this instant (RFC 3339) is committed.
	PropCovered = "covered"
	// PropTideline (view tables): windows starting before this instant
	// (RFC 3339) are served from batch.
	PropTideline = "tideline"
)

// PropRetainedFrom is a table property: partitions before this instant
// (RFC 3339) were dropped by retention, and reads of them say so.
const PropRetainedFrom = "retained_from"

// OptimizedFileKey names the file that replaces a raw partition's files
// (keys) by one: a retry with the same files writes the same key.
func OptimizedFileKey(stream string, p Partition, keys []string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(slices.Values(keys)) {
		h.Write([]byte(k))
		h.Write([]byte{0})
	}
	return fmt.Sprintf("%s/%s/opt-%s.parquet", RawTable(stream), p.Path(), hex.EncodeToString(h.Sum(nil)[:10]))
}
