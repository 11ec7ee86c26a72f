package lake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"
)

// Sentinel errors of every Store; match them with errors.Is.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrExists: a conditional create lost, the object is already there.
	ErrExists = errors.New("object already exists")
	// ErrUnavailable: the store could not be reached or answered with a
	// server error, even after retries. The call may succeed later.
	ErrUnavailable = errors.New("object store unavailable")
)

// Info describes a stored object.
type Info struct {
	Key      string
	Size     int64
	ETag     string
	Modified time.Time // when the object was written (List and Stat)
}

// Store is a flat namespace of immutable-by-convention objects. Keys are
// slash-separated and relative to the store's root. Transient failures are
// retried with backoff inside the store; what is left is wrapped in
// ErrUnavailable.
type Store interface {
	// Put writes an object, replacing any object at key.
	Put(ctx context.Context, key string, r io.Reader, size int64) (Info, error)
	// PutIfAbsent creates an object only if none exists at key; otherwise
	// it returns ErrExists. Of two racing callers exactly one succeeds.
	PutIfAbsent(ctx context.Context, key string, data []byte) (Info, error)
	// Get opens an object for reading.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// Stat describes an object without reading it.
	Stat(ctx context.Context, key string) (Info, error)
	// List returns the objects whose keys start with prefix, in key order.
	List(ctx context.Context, prefix string) ([]Info, error)
	// Delete removes an object; deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// String is the store's URL, for messages.
	String() string
}

// S3Config is how to reach an S3-compatible store.
type S3Config struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
	Secure    bool // https
	Region    string
}

// S3ConfigFromEnv reads TIDELINE_S3_ENDPOINT, TIDELINE_S3_ACCESS_KEY,
// TIDELINE_S3_SECRET_KEY and TIDELINE_S3_SECURE, falling back to
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the credentials.
func S3ConfigFromEnv() S3Config {
	get := func(keys ...string) string {
		for _, k := range keys {
			if v := os.Getenv(k); v != "" {
				return v
			}
		}
		return ""
	}
	return S3Config{
		Endpoint:  get("TIDELINE_S3_ENDPOINT"),
		AccessKey: get("TIDELINE_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
		SecretKey: get("TIDELINE_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
		Secure:    get("TIDELINE_S3_SECURE") == "true",
		Region:    get("TIDELINE_S3_REGION", "AWS_REGION"),
	}
}

// Options tune how a store retries.
type Options struct {
	// Attempts is how many times a transient failure is tried in all
	// (default 5); backoff doubles from 100ms up to 2s between them.
	Attempts int
	// Timeout bounds one attempt (default 30s).
	Timeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	return o
}

// Open opens the store at a URL: s3://bucket/prefix (reached with cfg, and
// the bucket created when missing) or file:///path (created when missing).
func Open(ctx context.Context, rawURL string, cfg S3Config, o Options) (Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("cannot parse lake URL %q: write s3://bucket/prefix or file:///path", rawURL)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("cannot use lake URL %q: a file URL needs an absolute path, like file:///var/lib/tideline/lake", rawURL)
		}
		return openFileStore(u.Path)
	case "s3":
		if u.Host == "" {
			return nil, fmt.Errorf("cannot use lake URL %q: name the bucket, like s3://tideline/lake", rawURL)
		}
		return openS3Store(ctx, u.Host, strings.Trim(u.Path, "/"), cfg, o.withDefaults())
	}
	return nil, fmt.Errorf("cannot use lake URL %q: the scheme must be s3:// or file://", rawURL)
}

func joinKey(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "/" + key
}
