package lake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// fileStore keeps objects as files under a root directory. Writes go to a
// temporary file first, so a reader never sees half an object: Put renames
// it into place, PutIfAbsent hard-links it, which fails if the name exists.
type fileStore struct {
	root string
}

func openFileStore(root string) (*fileStore, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("cannot use lake directory %q: give an absolute path, like file:///var/lib/tideline/lake", root)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create lake directory %s: %w", root, err)
	}
	return &fileStore{root: root}, nil
}

func (s *fileStore) String() string { return "file://" + s.root }

func (s *fileStore) path(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, "..") || strings.Contains(key, "\\") {
		return "", fmt.Errorf("cannot use object key %q: keys are relative slash-separated paths without ..", key)
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// temp writes r to a new temporary file beside path.
func (s *fileStore) temp(path string, r io.Reader) (string, int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", 0, err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := path + ".tmp-" + hex.EncodeToString(rnd[:])
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return "", 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", 0, err
	}
	return tmp, n, nil
}

func (s *fileStore) Put(_ context.Context, key string, r io.Reader, _ int64) (Info, error) {
	path, err := s.path(key)
	if err != nil {
		return Info{}, err
	}
	tmp, _, err := s.temp(path, r)
	if err != nil {
		return Info{}, fmt.Errorf("cannot write %s: %w", key, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return Info{}, fmt.Errorf("cannot write %s: %w", key, err)
	}
	return s.stat(key, path)
}

func (s *fileStore) PutIfAbsent(_ context.Context, key string, data []byte) (Info, error) {
	path, err := s.path(key)
	if err != nil {
		return Info{}, err
	}
	tmp, _, err := s.temp(path, strings.NewReader(string(data)))
	if err != nil {
		return Info{}, fmt.Errorf("cannot write %s: %w", key, err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return Info{}, fmt.Errorf("cannot create %s: %w", key, ErrExists)
		}
		return Info{}, fmt.Errorf("cannot create %s: %w", key, err)
	}
	return s.stat(key, path)
}

func (s *fileStore) stat(key, path string) (Info, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("cannot read %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return Info{}, fmt.Errorf("cannot read %s: %w", key, err)
	}
	if st.IsDir() {
		return Info{}, fmt.Errorf("cannot read %s: %w", key, ErrNotFound)
	}
	// Objects are written once under a new inode, so size and mtime change
	// whenever the content does.
	return Info{Key: key, Size: st.Size(), ETag: fmt.Sprintf("%x-%x", st.ModTime().UnixNano(), st.Size()), Modified: st.ModTime()}, nil
}

func (s *fileStore) Get(_ context.Context, key string) (io.ReadCloser, Info, error) {
	path, err := s.path(key)
	if err != nil {
		return nil, Info{}, err
	}
	info, err := s.stat(key, path)
	if err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, Info{}, fmt.Errorf("cannot read %s: %w", key, err)
	}
	return f, info, nil
}

func (s *fileStore) Stat(_ context.Context, key string) (Info, error) {
	path, err := s.path(key)
	if err != nil {
		return Info{}, err
	}
	return s.stat(key, path)
}

func (s *fileStore) List(_ context.Context, prefix string) ([]Info, error) {
	var out []Info
	err := filepath.WalkDir(s.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.Contains(d.Name(), ".tmp-") {
			return nil
		}
		rel, _ := filepath.Rel(s.root, path)
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := s.stat(key, path)
		if err != nil {
			return nil // removed while listing
		}
		out = append(out, info)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot list %s under %s: %w", prefix, s.root, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *fileStore) Delete(_ context.Context, key string) error {
	path, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot delete %s: %w", key, err)
	}
	return nil
}
