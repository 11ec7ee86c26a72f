package serve

import (
	"net/http"
	"sync"

	"github.com/nats-io/nats.go"

	"tideline/stream"
)

// statsKeep is how many of each processor's stats the server keeps: five
// minutes at one a second, what the dashboard's charts span.
const statsKeep = 300

// statsRing keeps the newest stats of every stream's processor.
type statsRing struct {
	mu      sync.Mutex
	streams map[string][]stream.Stats
}

// followStats subscribes to every processor's stats. The subscription lives
// as long as the connection.
func (s *Server) followStats() error {
	_, err := s.cfg.NC.Subscribe(stream.StatsWildcard, func(m *nats.Msg) {
		st, err := stream.ParseStats(m.Data)
		if err != nil {
			s.cfg.Log.Warn("skipping unreadable speed-layer stats", "subject", m.Subject, "err", err)
			return
		}
		// Anyone may publish on the subject: only the spec's streams, and
		// the partitions of a partitioned one (each its own series), are
		// kept, so forged names cannot grow the map.
		if !s.knownProcessor(st.Stream) || m.Subject != stream.StatsSubject(st.Stream) {
			return
		}
		s.stats.mu.Lock()
		defer s.stats.mu.Unlock()
		h := append(s.stats.streams[st.Stream], st)
		if len(h) > statsKeep {
			h = append(h[:0], h[len(h)-statsKeep:]...)
		}
		s.stats.streams[st.Stream] = h
	})
	return err
}

// knownProcessor reports whether name is a stream of the spec or a
// partition of one (stream.PartitionName).
func (s *Server) knownProcessor(name string) bool {
	if s.cfg.Spec.Stream(name) != nil {
		return true
	}
	for _, st := range s.cfg.Spec.Streams {
		for p := range st.Partitions {
			if name == stream.PartitionName(st, p) {
				return true
			}
		}
	}
	return false
}

// StatsResponse is GET /v1/stats' answer.
type StatsResponse struct {
	// Streams holds each stream processor's stats, oldest first, newer than
	// the since parameter: a partitioned stream's, per partition, under
	// <stream>.p<n>.
	Streams map[string][]stream.Stats `json:"streams"`
}

// serveStats answers GET /v1/stats?since=<RFC 3339>.
func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	since, err := timeOrZero(r.URL.Query().Get("since"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "since is an RFC 3339 time, like 2026-11-25T12:00:00Z")
		return
	}
	out := StatsResponse{Streams: map[string][]stream.Stats{}}
	s.stats.mu.Lock()
	for name, h := range s.stats.streams {
		i := len(h)
		for i > 0 && h[i-1].Time.After(since) {
			i--
		}
		out.Streams[name] = append([]stream.Stats(nil), h[i:]...)
	}
	s.stats.mu.Unlock()
	for _, st := range s.cfg.Spec.Streams {
		if out.Streams[st.Name] == nil {
			out.Streams[st.Name] = []stream.Stats{}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// ViewInfo describes one view for GET /v1/views.
type ViewInfo struct {
	Name     string       `json:"name"`
	Stream   string       `json:"stream"`
	Size     string       `json:"size,omitempty"`
	Hop      string       `json:"hop,omitempty"`
	Session  string       `json:"session,omitempty"` // a session view's gap
	Max      string       `json:"max,omitempty"`     // and its longest span
	Dims     []ColumnInfo `json:"dims"`
	Measures []ColumnInfo `json:"measures"`
}

// ColumnInfo is a dimension (with its type) or a measure (with its kind).
type ColumnInfo struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
	Kind string `json:"kind,omitempty"`
	// Scale is a decimal measure's: values are in minor units, 10^scale
	// to one.
	Scale int `json:"scale,omitempty"`
}

// serveViewList answers GET /v1/views: the views with their dimensions and
// measures, in spec order.
func (s *Server) serveViewList(w http.ResponseWriter, _ *http.Request) {
	out := []ViewInfo{}
	for _, v := range s.cfg.Spec.Views {
		vi := ViewInfo{Name: v.Name, Stream: v.Stream.Name, Dims: []ColumnInfo{}}
		if v.Session() {
			vi.Session, vi.Max = v.Gap.String(), v.Max.String()
		} else {
			vi.Size, vi.Hop = v.Size.String(), v.Hop.String()
		}
		for _, c := range v.GroupBy {
			vi.Dims = append(vi.Dims, ColumnInfo{Name: c.Name, Type: c.Type.String()})
		}
		for _, m := range v.Measures {
			_, scale := m.Type()
			vi.Measures = append(vi.Measures, ColumnInfo{Name: m.Name, Kind: string(m.Kind), Scale: scale})
		}
		out = append(out, vi)
	}
	writeJSON(w, http.StatusOK, map[string]any{"views": out})
}
