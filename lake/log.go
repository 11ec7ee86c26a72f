package lake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Errors of Table.Commit; match them with errors.Is.
var (
	// ErrAlreadyCommitted: the commit's source range or files are in the
	// table already. Retrying a commit that landed gets this, never a copy.
	ErrAlreadyCommitted = errors.New("already committed")
	// ErrConflict: the commit no longer fits the table (it removes a file
	// another writer removed, or overlaps a committed range). Re-read the
	// snapshot and decide again.
	ErrConflict = errors.New("commit conflict")
)

// DefaultCheckpointEvery is how many commits lie between checkpoints.
const DefaultCheckpointEvery = 50

// File is one data file of a table.
type File struct {
	Key       string `json:"key"`
	Partition string `json:"partition"`
	Rows      int64  `json:"rows"`
	Bytes     int64  `json:"bytes"`
	ETag      string `json:"etag,omitempty"`
	MinTime   int64  `json:"min_time,omitempty"` // UTC microseconds
	MaxTime   int64  `json:"max_time,omitempty"`
}

// SeqRange is an inclusive range of stream sequences.
type SeqRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// Commit is one entry of a table's log.
type Commit struct {
	Version    int64             `json:"version"`
	Time       time.Time         `json:"time"`
	Writer     string            `json:"writer,omitempty"`
	Op         string            `json:"op"` // compact, recompute, ...
	Add        []File            `json:"add,omitempty"`
	Remove     []string          `json:"remove,omitempty"`
	Partitions []string          `json:"partitions,omitempty"`
	Rows       int64             `json:"rows"` // rows added
	Source     *SeqRange         `json:"source,omitempty"`
	Meta       map[string]string `json:"meta,omitempty"`
	// Replace makes the commit replace its Partitions whole: it must remove
	// exactly the files live in them, so of two writers racing to rewrite a
	// partition only one lands (the other gets ErrConflict).
	Replace bool `json:"replace,omitempty"`
	// Props are table properties this commit sets (a tideline, how far
	// compaction has covered the stream); a snapshot holds the latest value
	// of each. An empty value unsets the property.
	Props map[string]string `json:"props,omitempty"`
	// IfProps makes the commit conditional: each property must have this
	// value ("" for unset) in the snapshot it lands on, or the commit fails
	// with ErrConflict. It is compare-and-swap for Props.
	IfProps map[string]string `json:"if_props,omitempty"`
	// IfFiles makes the commit conditional on what is live in partitions:
	// in each, exactly these files (none, for an empty list), as when the
	// writer read them, or the commit fails with ErrConflict. A commit that
	// records a conclusion drawn from a partition's files uses it.
	IfFiles map[string][]string `json:"if_files,omitempty"`
}

// Snapshot is a table's log replayed up to Version. It is immutable.
type Snapshot struct {
	Table   string          `json:"table"`
	Version int64           `json:"version"`
	Files   map[string]File `json:"files"`
	// HighSeq is the highest source sequence committed (0 if none).
	HighSeq uint64    `json:"high_seq"`
	Time    time.Time `json:"time"` // of the last commit
	// Marks holds each partition's last recompute marker (Commit.Meta
	// "mark"), so a reader knows which input a batch file reflects.
	Marks map[string]string `json:"marks,omitempty"`
	// Props are the table's properties, each as its last commit set it.
	Props map[string]string `json:"props,omitempty"`
	// PropVersion is the commit that last set each property.
	PropVersion map[string]int64 `json:"prop_version,omitempty"`
}

// List returns the live files in key order.
func (s *Snapshot) List() []File {
	out := slices.Collect(maps.Values(s.Files))
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// In returns the live files of one partition, in key order.
func (s *Snapshot) In(partition string) []File {
	var out []File
	for _, f := range s.List() {
		if f.Partition == partition {
			out = append(out, f)
		}
	}
	return out
}

// Partitions returns the partitions that have live files, in order.
func (s *Snapshot) Partitions() []string {
	set := map[string]bool{}
	for _, f := range s.Files {
		set[f.Partition] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// Rows is the number of rows in live files.
func (s *Snapshot) Rows() int64 {
	var n int64
	for _, f := range s.Files {
		n += f.Rows
	}
	return n
}

func (s *Snapshot) clone() *Snapshot {
	c := *s
	c.Files = maps.Clone(s.Files)
	c.Marks = maps.Clone(s.Marks)
	c.Props = maps.Clone(s.Props)
	c.PropVersion = maps.Clone(s.PropVersion)
	if c.Files == nil {
		c.Files = map[string]File{}
	}
	return &c
}

// check decides whether c can be applied on top of s.
func (s *Snapshot) check(c *Commit) error {
	if r := c.Source; r != nil {
		switch {
		case r.From > r.To:
			return fmt.Errorf("cannot commit to %s: source range %d-%d is empty", s.Table, r.From, r.To)
		case r.To <= s.HighSeq && r.From <= s.HighSeq:
			return fmt.Errorf("cannot commit sequences %d-%d to %s: %w (committed up to %d)", r.From, r.To, s.Table, ErrAlreadyCommitted, s.HighSeq)
		case r.From <= s.HighSeq:
			return fmt.Errorf("cannot commit sequences %d-%d to %s: %w: it overlaps what is committed (up to %d)", r.From, r.To, s.Table, ErrConflict, s.HighSeq)
		}
	}
	live := 0
	for _, f := range c.Add {
		if _, ok := s.Files[f.Key]; ok {
			live++
		}
	}
	if len(c.Add) > 0 && live == len(c.Add) {
		return fmt.Errorf("cannot commit %d file(s) to %s: %w", len(c.Add), s.Table, ErrAlreadyCommitted)
	}
	if live > 0 {
		return fmt.Errorf("cannot commit to %s: %w: %d of its %d files are live already", s.Table, ErrConflict, live, len(c.Add))
	}
	for _, k := range c.Remove {
		if _, ok := s.Files[k]; !ok {
			return fmt.Errorf("cannot commit to %s: %w: it removes %s, which is not live at version %d", s.Table, ErrConflict, k, s.Version)
		}
	}
	if c.Replace {
		removes := map[string]bool{}
		for _, k := range c.Remove {
			removes[k] = true
		}
		for _, p := range c.Partitions {
			for _, f := range s.In(p) {
				if !removes[f.Key] {
					return fmt.Errorf("cannot replace partition %s of %s: %w: %s was committed there since (version %d)", p, s.Table, ErrConflict, f.Key, s.Version)
				}
			}
		}
	}
	for k, want := range c.IfProps {
		if got := s.Props[k]; got != want {
			return fmt.Errorf("cannot commit to %s: %w: property %s is %q at version %d, not %q", s.Table, ErrConflict, k, got, s.Version, want)
		}
	}
	for p, want := range c.IfFiles {
		var got []string
		for _, f := range s.In(p) {
			got = append(got, f.Key)
		}
		slices.Sort(got)
		if !slices.Equal(got, slices.Sorted(slices.Values(want))) {
			return fmt.Errorf("cannot commit to %s: %w: partition %s holds %d file(s) at version %d, not the %d read", s.Table, ErrConflict, p, len(got), s.Version, len(want))
		}
	}
	return nil
}

func (s *Snapshot) apply(c *Commit) {
	for _, k := range c.Remove {
		delete(s.Files, k)
	}
	for _, f := range c.Add {
		s.Files[f.Key] = f
	}
	if c.Source != nil && c.Source.To > s.HighSeq {
		s.HighSeq = c.Source.To
	}
	if m, ok := c.Meta["mark"]; ok {
		if s.Marks == nil {
			s.Marks = map[string]string{}
		}
		for _, p := range c.Partitions {
			s.Marks[p] = m
		}
	}
	if len(c.Props) > 0 {
		if s.Props == nil {
			s.Props, s.PropVersion = map[string]string{}, map[string]int64{}
		}
		if s.PropVersion == nil {
			s.PropVersion = map[string]int64{}
		}
		for k, v := range c.Props {
			if v == "" {
				delete(s.Props, k)
				delete(s.PropVersion, k)
			} else {
				s.Props[k] = v
				s.PropVersion[k] = c.Version
			}
		}
	}
	s.Version, s.Time = c.Version, c.Time
}

// Table is a lake table: data files and the ordered log of commits that
// says which of them are live. It is safe for concurrent use, and any number
// of Tables in any number of processes may commit to the same name.
type Table struct {
	Name            string
	store           Store
	checkpointEvery int64
	writer          string

	mu      sync.Mutex
	snap    *Snapshot // the newest one read, shared read-only
	checked time.Time // when the checkpoint pointer was last read
}

// TableOption configures OpenTable.
type TableOption func(*Table)

// WithCheckpointEvery sets how many commits lie between checkpoints.
func WithCheckpointEvery(k int) TableOption {
	return func(t *Table) { t.checkpointEvery = int64(max(k, 1)) }
}

// WithWriter names this writer in the commits it makes.
func WithWriter(name string) TableOption { return func(t *Table) { t.writer = name } }

// OpenTable returns the table called name in store. It reads nothing yet.
func OpenTable(store Store, name string, opts ...TableOption) *Table {
	host, _ := os.Hostname()
	t := &Table{Name: name, store: store, checkpointEvery: DefaultCheckpointEvery, writer: host + ":" + strconv.Itoa(os.Getpid())}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Store is where the table lives.
func (t *Table) Store() Store { return t.store }

// Snapshot returns the table's newest snapshot: the last one read, advanced
// by every commit after it. A table with no commits has version 0.
func (t *Table) Snapshot(ctx context.Context) (*Snapshot, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	base := t.snap
	// Vacuum deletes commits older than its retention once a checkpoint
	// covers them: a snapshot held that long must restart from the
	// checkpoint, or it would take the missing commits for the log's end.
	if base == nil || time.Since(t.checked) > snapshotRecheck {
		after := int64(-1)
		if base != nil {
			after = base.Version
		}
		ck, err := t.loadCheckpoint(ctx, after)
		if err != nil {
			return nil, err
		}
		if ck != nil {
			base = ck
		}
		t.checked = time.Now()
	}
	next, err := t.replay(ctx, base)
	if err != nil {
		return nil, err
	}
	t.snap = next
	return next, nil
}

// replay applies the commits after base, probing version by version, so no
// listing is needed.
func (t *Table) replay(ctx context.Context, base *Snapshot) (*Snapshot, error) {
	var s *Snapshot
	for v := base.Version + 1; ; v++ {
		c, err := t.readCommit(ctx, v)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		if s == nil {
			s = base.clone()
		}
		s.apply(c)
	}
	if s == nil {
		return base, nil
	}
	return s, nil
}

func (t *Table) readCommit(ctx context.Context, v int64) (*Commit, error) {
	key := logKey(t.Name, v)
	data, err := t.get(ctx, key)
	if err != nil {
		return nil, err
	}
	var c Commit
	if err := json.Unmarshal(data, &c); err != nil || c.Version != v {
		if err == nil {
			err = fmt.Errorf("it says version %d", c.Version)
		}
		return nil, fmt.Errorf("cannot parse commit %s of table %s: %w: %w; the log cannot be read past version %d until the object is restored", key, t.Name, ErrCorrupt, err, v-1)
	}
	return &c, nil
}

func (t *Table) get(ctx context.Context, key string) ([]byte, error) {
	r, _, err := t.store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", key, err)
	}
	return data, nil
}

// loadCheckpoint returns the newest checkpointed snapshot, or an empty one;
// nil if the checkpoint is at version after or before it. A damaged
// checkpoint is skipped: the log alone is the truth.
func (t *Table) loadCheckpoint(ctx context.Context, after int64) (*Snapshot, error) {
	empty := &Snapshot{Table: t.Name, Files: map[string]File{}}
	if after >= 0 {
		empty = nil
	}
	ptr, err := t.get(ctx, lastCheckpointKey(t.Name))
	if errors.Is(err, ErrNotFound) {
		return empty, nil
	}
	if err != nil {
		return nil, err
	}
	v, err := strconv.ParseInt(string(bytes.TrimSpace(ptr)), 10, 64)
	if err != nil {
		slog.Warn("ignoring unreadable checkpoint pointer; replaying the whole log", "key", lastCheckpointKey(t.Name), "err", err)
		return empty, nil
	}
	if v <= after {
		return nil, nil
	}
	data, err := t.get(ctx, checkpointKey(t.Name, v))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	var s Snapshot
	if err != nil || json.Unmarshal(data, &s) != nil || s.Version != v || s.Table != t.Name {
		// The whole log is the truth only while it is whole: Vacuum
		// deletes the commits a checkpoint covers.
		if _, err := t.store.Stat(ctx, logKey(t.Name, 1)); errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("cannot read table %s: %w: its checkpoint %s is damaged or missing and the log before it was vacuumed; restore the object from a backup",
				t.Name, ErrCorrupt, checkpointKey(t.Name, v))
		}
		slog.Warn("ignoring damaged checkpoint; replaying the whole log", "key", checkpointKey(t.Name, v))
		return empty, nil
	}
	if s.Files == nil {
		s.Files = map[string]File{}
	}
	return &s, nil
}

// Commit appends c to the log as the next version and returns the snapshot
// it produced. Racing writers are ordered by the store's conditional create:
// a loser re-reads the log and tries again on top of the winner, unless the
// winner's changes make c fail (ErrAlreadyCommitted, ErrConflict).
func (t *Table) Commit(ctx context.Context, c Commit) (*Snapshot, error) {
	if c.Writer == "" {
		c.Writer = t.writer
	}
	for attempt := 1; ; attempt++ {
		s, err := t.Snapshot(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.check(&c); err != nil {
			return nil, err
		}
		c.Version, c.Time = s.Version+1, time.Now().UTC()
		c.Rows = 0
		for _, f := range c.Add {
			c.Rows += f.Rows
		}
		data, err := json.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("cannot encode commit to %s: %w", t.Name, err)
		}
		if _, err := t.store.PutIfAbsent(ctx, logKey(t.Name, c.Version), data); err != nil {
			if errors.Is(err, ErrExists) && attempt < 1000 {
				continue // another writer took this version
			}
			return nil, fmt.Errorf("cannot commit version %d of %s: %w", c.Version, t.Name, err)
		}
		next := s.clone()
		next.apply(&c)
		t.mu.Lock()
		if t.snap == nil || t.snap.Version < next.Version {
			t.snap = next
		}
		t.mu.Unlock()
		if c.Version%t.checkpointEvery == 0 {
			t.writeCheckpoint(ctx, next)
		}
		return next, nil
	}
}

// writeCheckpoint stores s and points readers at it. Failing is harmless:
// readers replay more of the log.
func (t *Table) writeCheckpoint(ctx context.Context, s *Snapshot) {
	data, err := json.Marshal(s)
	if err == nil {
		_, err = t.store.PutIfAbsent(ctx, checkpointKey(t.Name, s.Version), data)
	}
	if err == nil || errors.Is(err, ErrExists) {
		ptr := strconv.FormatInt(s.Version, 10)
		_, err = t.store.Put(ctx, lastCheckpointKey(t.Name), bytes.NewReader([]byte(ptr)), int64(len(ptr)))
	}
	if err != nil {
		slog.Warn("cannot write checkpoint; readers will replay more of the log", "table", t.Name, "version", s.Version, "err", err)
	}
}
