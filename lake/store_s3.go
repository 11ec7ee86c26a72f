package lake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Store keeps objects in an S3 bucket (MinIO in dev and tests) under a
// prefix. minio-go's own retries are off; do() retries transient failures.
type s3Store struct {
	c      *minio.Client
	bucket string
	prefix string
	cfg    S3Config
	opts   Options
}

func openS3Store(ctx context.Context, bucket, prefix string, cfg S3Config, o Options) (*s3Store, error) {
	if cfg.Endpoint == "" {
		return nil, fmt.Errorf("cannot open s3://%s: no endpoint; pass --s3-endpoint or set TIDELINE_S3_ENDPOINT to host:port", bucket)
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:     cfg.Secure,
		Region:     cfg.Region,
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot configure S3 client for %s: %w", cfg.Endpoint, err)
	}
	s := &s3Store{c: c, bucket: bucket, prefix: prefix, cfg: cfg, opts: o}
	err = s.do(ctx, "create bucket", bucket, func(ctx context.Context) error {
		ok, err := c.BucketExists(ctx, bucket)
		if err != nil || ok {
			return err
		}
		err = c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: cfg.Region})
		if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *s3Store) String() string {
	return "s3://" + s.bucket + "/" + s.prefix + " at " + s.cfg.Endpoint
}

// transient reports whether err is worth another attempt: the network, a
// 5xx, throttling, or this attempt's own timeout.
func transient(parent context.Context, err error) bool {
	if parent.Err() != nil {
		return false
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && resp.StatusCode != 0 {
		switch resp.Code {
		case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "XMinioServerNotInitialized":
			return true
		}
		return resp.StatusCode >= 500
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "Server not initialized")
}

// do runs fn with a per-attempt timeout, retrying transient failures with
// backoff, and maps what is left to the package's sentinel errors.
func (s *s3Store) do(ctx context.Context, op, key string, fn func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if !transient(ctx, err) {
			return s.permanent(op, key, err)
		}
		if attempt >= s.opts.Attempts {
			return fmt.Errorf("cannot %s %s in %s after %d attempts: %w: %w; is the object store running and reachable?", op, key, s, attempt, ErrUnavailable, err)
		}
		slog.Debug("object store call failed, retrying", "op", op, "key", key, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot %s %s: %w", op, key, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (s *s3Store) permanent(op, key string, err error) error {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchKey" || resp.StatusCode == 404 && resp.Code != "NoSuchBucket":
		return fmt.Errorf("cannot %s %s: %w", op, key, ErrNotFound)
	case resp.StatusCode == 412 || resp.Code == "PreconditionFailed":
		return fmt.Errorf("cannot %s %s: %w", op, key, ErrExists)
	case resp.Code == "AccessDenied" || resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch":
		return fmt.Errorf("cannot %s %s in %s: access denied (%s); check TIDELINE_S3_ACCESS_KEY and TIDELINE_S3_SECRET_KEY", op, key, s, resp.Code)
	case resp.Code == "NoSuchBucket":
		return fmt.Errorf("cannot %s %s: bucket %s does not exist in %s; create it or fix the lake URL", op, key, s.bucket, s.cfg.Endpoint)
	}
	return fmt.Errorf("cannot %s %s in %s: %w", op, key, s, err)
}

func (s *s3Store) Put(ctx context.Context, key string, r io.Reader, size int64) (Info, error) {
	var info Info
	seeker, canRetry := r.(io.Seeker)
	first := true
	err := s.do(ctx, "put", key, func(ctx context.Context) error {
		if !first {
			if !canRetry {
				return fmt.Errorf("cannot retry put of %s: its reader cannot rewind", key)
			}
			if _, err := seeker.Seek(0, io.SeekStart); err != nil {
				return err
			}
		}
		first = false
		up, err := s.c.PutObject(ctx, s.bucket, joinKey(s.prefix, key), r, size, minio.PutObjectOptions{})
		info = Info{Key: key, Size: up.Size, ETag: up.ETag}
		return err
	})
	return info, err
}

func (s *s3Store) PutIfAbsent(ctx context.Context, key string, data []byte) (Info, error) {
	var info Info
	retried := false
	err := s.do(ctx, "create", key, func(ctx context.Context) error {
		opts := minio.PutObjectOptions{}
		opts.SetMatchETagExcept("*")
		up, err := s.c.PutObject(ctx, s.bucket, joinKey(s.prefix, key), bytes.NewReader(data), int64(len(data)), opts)
		if err != nil && retried && minio.ToErrorResponse(err).StatusCode == 412 {
			// An earlier attempt may have landed before its answer was
			// lost: the object is ours if it holds exactly our bytes.
			if got, gerr := s.readAll(ctx, key); gerr == nil && bytes.Equal(got, data) {
				st, serr := s.c.StatObject(ctx, s.bucket, joinKey(s.prefix, key), minio.StatObjectOptions{})
				info = Info{Key: key, Size: st.Size, ETag: st.ETag}
				return serr
			}
		}
		retried = true
		info = Info{Key: key, Size: up.Size, ETag: up.ETag}
		return err
	})
	return info, err
}

func (s *s3Store) readAll(ctx context.Context, key string) ([]byte, error) {
	obj, err := s.c.GetObject(ctx, s.bucket, joinKey(s.prefix, key), minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}

func (s *s3Store) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	var obj *minio.Object
	var info Info
	err := s.do(ctx, "get", key, func(actx context.Context) error {
		// The body outlives this attempt, so it reads under the caller's ctx.
		o, err := s.c.GetObject(ctx, s.bucket, joinKey(s.prefix, key), minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		st, err := o.Stat()
		if err != nil {
			o.Close()
			return err
		}
		obj, info = o, Info{Key: key, Size: st.Size, ETag: st.ETag, Modified: st.LastModified}
		return nil
	})
	if err != nil {
		return nil, Info{}, err
	}
	return &s3Reader{obj: obj, key: key}, info, nil
}

// s3Reader marks a body that breaks off mid-read as unavailable, so callers
// know to fetch it again.
type s3Reader struct {
	obj *minio.Object
	key string
}

func (r *s3Reader) Read(p []byte) (int, error) {
	n, err := r.obj.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("cannot read %s: %w: %w", r.key, ErrUnavailable, err)
	}
	return n, err
}

func (r *s3Reader) Close() error { return r.obj.Close() }

func (s *s3Store) Stat(ctx context.Context, key string) (Info, error) {
	var info Info
	err := s.do(ctx, "stat", key, func(ctx context.Context) error {
		st, err := s.c.StatObject(ctx, s.bucket, joinKey(s.prefix, key), minio.StatObjectOptions{})
		info = Info{Key: key, Size: st.Size, ETag: st.ETag, Modified: st.LastModified}
		return err
	})
	return info, err
}

func (s *s3Store) List(ctx context.Context, prefix string) ([]Info, error) {
	var out []Info
	full := joinKey(s.prefix, prefix)
	err := s.do(ctx, "list", prefix, func(ctx context.Context) error {
		out = out[:0]
		for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: full, Recursive: true}) {
			if o.Err != nil {
				return o.Err
			}
			key := o.Key
			if s.prefix != "" {
				key = strings.TrimPrefix(key, s.prefix+"/")
			}
			out = append(out, Info{Key: key, Size: o.Size, ETag: o.ETag, Modified: o.LastModified})
		}
		return nil
	})
	return out, err
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	return s.do(ctx, "delete", key, func(ctx context.Context) error {
		return s.c.RemoveObject(ctx, s.bucket, joinKey(s.prefix, key), minio.RemoveObjectOptions{})
	})
}
