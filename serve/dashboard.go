package serve

import (
	"embed"
	"io/fs"
	"net/http"
)

// The dashboard is plain HTML, CSS and JavaScript drawing SVG: nothing to
// build and nothing fetched from outside, so it renders offline.
//
//go:embed dashboard
var dashboardFS embed.FS

// dashboard serves index.html at / and the rest under /assets/.
func dashboard() http.Handler {
	sub, err := fs.Sub(dashboardFS, "dashboard")
	if err != nil {
		panic(err) // the embedded directory is there, or the build failed
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:")
		if r.URL.Path == "/" {
			http.ServeFileFS(w, r, sub, "index.html")
			return
		}
		r2 := *r
		r2.URL = new(*r.URL)
		r2.URL.Path = r.URL.Path[len("/assets"):]
		files.ServeHTTP(w, &r2)
	})
}
