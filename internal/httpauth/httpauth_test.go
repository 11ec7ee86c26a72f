package httpauth

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestRequire(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(Env, "from-env")
	for _, tc := range []struct {
		name, file, good string
	}{
		{"file", file, "s3cret"},
		{"env", "", "from-env"},
	} {
		tok, err := Load(tc.file)
		if err != nil || !tok.Set() {
			t.Fatalf("%s: %v", tc.name, err)
		}
		h := tok.Require(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), func(p string) bool { return p == "/healthz" })
		for _, c := range []struct {
			path, auth string
			want       int
		}{
			{"/data", "", http.StatusUnauthorized},
			{"/data", "Bearer wrong", http.StatusUnauthorized},
			{"/data", "Bearer " + tc.good + "x", http.StatusUnauthorized},
			{"/data", tc.good, http.StatusUnauthorized}, // no scheme
			{"/data", "Bearer " + tc.good, http.StatusOK},
			{"/healthz", "", http.StatusOK},
		} {
			r := httptest.NewRequest("GET", c.path, nil)
			if c.auth != "" {
				r.Header.Set("Authorization", c.auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != c.want {
				t.Errorf("%s: %s with %q: %d, want %d", tc.name, c.path, c.auth, w.Code, c.want)
			}
		}
	}
	if err := os.WriteFile(file, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file); err == nil {
		t.Error("an empty token file was taken as no token; it must be an error")
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing token file was taken as no token; it must be an error")
	}
	t.Setenv(Env, "")
	if tok, err := Load(""); err != nil || tok.Set() {
		t.Errorf("no token configured: %v %v; want none, and every surface open", tok.Set(), err)
	}
}
