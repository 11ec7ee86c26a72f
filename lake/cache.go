package lake

import (
	"container/list"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// Cache keeps local copies of lake objects, so DuckDB reads local files.
// Entries are keyed by object key and ETag, so a changed object is never
// served stale. The cache is bounded: least recently used files go first,
// but never a pinned one (a file a live DuckDB view reads).
type Cache struct {
	dir string
	max int64

	mu       sync.Mutex
	lru      *list.List               // of *cacheEntry, most recent at front
	entries  map[string]*list.Element // by local path
	size     int64
	pinned   map[string]int // local path -> pin count
	inflight map[string]*fetch
}

type cacheEntry struct {
	path string
	size int64
}

type fetch struct {
	done chan struct{}
	err  error
}

// NewCache opens a cache in dir holding at most maxBytes, adopting the
// files already there.
func NewCache(dir string, maxBytes int64) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create cache directory %s: %w", dir, err)
	}
	c := &Cache{dir: dir, max: maxBytes, lru: list.New(), entries: map[string]*list.Element{}, pinned: map[string]int{}, inflight: map[string]*fetch{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.Contains(d.Name(), ".tmp-") {
			return os.Remove(path) // a download cut short
		}
		if info, err := d.Info(); err == nil {
			c.entries[path] = c.lru.PushBack(&cacheEntry{path: path, size: info.Size()})
			c.size += info.Size()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot scan cache directory %s: %w", dir, err)
	}
	return c, nil
}

// Size is the bytes the cache holds.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

func (c *Cache) path(f File) string {
	k := sha256.Sum256([]byte(f.Key))
	e := sha256.Sum256([]byte(f.ETag))
	name := hex.EncodeToString(k[:12]) + "-" + hex.EncodeToString(e[:6]) + filepath.Ext(f.Key)
	return filepath.Join(c.dir, name[:2], name)
}

// Fetch returns the local path of f, downloading it from store if it is not
// cached. The download is checked against the commit: its ETag (and MD5,
// where the ETag is one), its size, and for Parquet its footer and row
// count. A mismatch is ErrCorrupt naming the object key.
func (c *Cache) Fetch(ctx context.Context, store Store, f File) (string, error) {
	path := c.path(f)
	for {
		c.mu.Lock()
		if el, ok := c.entries[path]; ok {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return path, nil
		}
		if fl, ok := c.inflight[path]; ok {
			c.mu.Unlock()
			select {
			case <-fl.done:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			if fl.err != nil {
				return "", fl.err
			}
			continue
		}
		fl := &fetch{done: make(chan struct{})}
		c.inflight[path] = fl
		c.mu.Unlock()

		size, err := c.download(ctx, store, f, path)
		c.mu.Lock()
		delete(c.inflight, path)
		if err == nil {
			c.entries[path] = c.lru.PushFront(&cacheEntry{path: path, size: size})
			c.size += size
			c.evictLocked()
		}
		c.mu.Unlock()
		fl.err = err
		close(fl.done)
		return path, err
	}
}

var md5ETag = regexp.MustCompile(`^[0-9a-f]{32}$`)

func (c *Cache) download(ctx context.Context, store Store, f File, path string) (int64, error) {
	r, info, err := store.Get(ctx, f.Key)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	if f.ETag != "" && info.ETag != f.ETag {
		return 0, fmt.Errorf("cannot use %s: %w: the store has ETag %s, the commit recorded %s; it was overwritten after it was committed", f.Key, ErrCorrupt, info.ETag, f.ETag)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, fmt.Errorf("cannot create cache directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("cannot cache %s: %w", f.Key, err)
	}
	defer os.Remove(tmp.Name())
	var sum hash.Hash
	w := io.Writer(tmp)
	if md5ETag.MatchString(info.ETag) {
		sum = md5.New()
		w = io.MultiWriter(tmp, sum)
	}
	n, err := io.Copy(w, r)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("cannot download %s: %w", f.Key, err)
	}
	if sum != nil && hex.EncodeToString(sum.Sum(nil)) != info.ETag {
		return 0, fmt.Errorf("cannot use %s: %w: its MD5 does not match its ETag %s", f.Key, ErrCorrupt, info.ETag)
	}
	if f.Bytes > 0 && n != f.Bytes {
		return 0, fmt.Errorf("cannot use %s: %w: it has %d bytes, the commit recorded %d", f.Key, ErrCorrupt, n, f.Bytes)
	}
	if strings.HasSuffix(f.Key, ".parquet") {
		rows, err := CheckParquet(tmp.Name())
		if err != nil {
			return 0, fmt.Errorf("cannot read Parquet object %s: %w", f.Key, err)
		}
		if rows != f.Rows {
			return 0, fmt.Errorf("cannot use %s: %w: it has %d rows, the commit recorded %d", f.Key, ErrCorrupt, rows, f.Rows)
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("cannot cache %s: %w", f.Key, err)
	}
	return n, nil
}

// Pin keeps paths from eviction until Unpin is called as often.
func (c *Cache) Pin(paths []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range paths {
		c.pinned[p]++
	}
}

// Unpin releases paths pinned before, and evicts if the cache is over size.
func (c *Cache) Unpin(paths []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range paths {
		if c.pinned[p]--; c.pinned[p] <= 0 {
			delete(c.pinned, p)
		}
	}
	c.evictLocked()
}

func (c *Cache) evictLocked() {
	for el := c.lru.Back(); el != nil && c.size > c.max; {
		prev := el.Prev()
		e := el.Value.(*cacheEntry)
		if c.pinned[e.path] == 0 {
			if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				slog.Warn("cannot evict cached file", "path", e.path, "err", err)
			}
			c.lru.Remove(el)
			delete(c.entries, e.path)
			c.size -= e.size
		}
		el = prev
	}
	if c.size > c.max {
		slog.Warn("lake cache is over its bound: every file in it is in use", "bytes", c.size, "max", c.max, "dir", c.dir)
	}
}
