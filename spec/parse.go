package spec

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

var (
	nameRE      = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	reservedCol = map[string]bool{"window_start": true, "window_end": true, "source": true}
)

// Parse parses and validates a spec. name is the file name used in errors.
// On failure the error is an ErrorList holding every problem found.
func Parse(name string, data []byte) (*Spec, error) {
	p := &parser{file: name}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line := 1
		if m := regexp.MustCompile(`line (\d+)`).FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = regexp.MustCompile(`^line \d+: `).ReplaceAllString(msg, "")
		return nil, ErrorList{{File: name, Line: line, Column: 1, Msg: "cannot parse YAML: " + msg, Hint: "check the indentation and quoting on this line"}}
	}
	if len(doc.Content) == 0 {
		return nil, ErrorList{{File: name, Line: 1, Column: 1, Msg: "spec is empty", Hint: "declare at least one stream under streams:"}}
	}
	s := &Spec{File: name}
	p.spec(doc.Content[0], s)
	if len(p.errs) > 0 {
		p.errs.sort()
		return nil, p.errs
	}
	return s, nil
}

type parser struct {
	file string
	errs ErrorList
}

func (p *parser) add(n *yaml.Node, hint, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: n.Line, Column: n.Column, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

// mapping walks a mapping node, reporting duplicate and unknown keys (with
// the closest known one), and missing required keys. fn gets each known key.
func (p *parser) mapping(n *yaml.Node, what string, known, required []string, fn func(key string, k, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.add(n, "write key: value pairs, indented under it", "%s must be a mapping, got %s", what, kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			p.add(k, "remove one of them", "%s has %q twice", what, k.Value)
			continue
		}
		seen[k.Value] = true
		if known != nil && !contains(known, k.Value) {
			p.add(k, suggest(k.Value, known, "valid keys are"), "unknown key %q in %s", k.Value, what)
			continue
		}
		fn(k.Value, k, v)
	}
	for _, r := range required {
		if !seen[r] {
			p.add(n, fmt.Sprintf("add %s: to it", r), "%s is missing %s", what, r)
		}
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}

func (p *parser) scalar(n *yaml.Node, what, hint string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.add(n, hint, "%s must be a single value, got %s", what, kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) name(n *yaml.Node, what string) bool {
	if !nameRE.MatchString(n.Value) {
		p.add(n, "use lower case letters, digits and _, starting with a letter, like card_id", "%s %q is not a valid name", what, n.Value)
		return false
	}
	return true
}

func (p *parser) duration(n *yaml.Node, what string, min time.Duration) (time.Duration, bool) {
	s, ok := p.scalar(n, what, `write a duration like "30s", "5m" or "1h"`)
	if !ok {
		return 0, false
	}
	d, err := ParseDuration(s)
	if err != nil {
		p.add(n, `write it like "30s", "5m", "1h" or "7d"`, "%s: %v", what, err)
		return 0, false
	}
	if d < min {
		p.add(n, fmt.Sprintf("use at least %s", min), "%s is %s, below the minimum %s", what, s, min)
		return 0, false
	}
	return d, true
}

func (p *parser) integer(n *yaml.Node, what string, lo, hi int64) (int64, bool) {
	s, ok := p.scalar(n, what, "write a whole number")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo || v > hi {
		p.add(n, fmt.Sprintf("write a whole number from %d to %d", lo, hi), "%s %q is not a whole number in range", what, s)
		return 0, false
	}
	return v, true
}

func (p *parser) boolean(n *yaml.Node, what string) bool {
	s, ok := p.scalar(n, what, "write true or false")
	if !ok {
		return false
	}
	switch s {
	case "true":
		return true
	case "false":
	default:
		p.add(n, "write true or false", "%s must be true or false, got %q", what, s)
	}
	return false
}

func (p *parser) strings(n *yaml.Node, what string) []string {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []string{n.Value}
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.add(n, "write a list like [a, b]", "%s must be a non-empty list, got %s", what, kindName(n))
		return nil
	}
	var out []string
	for _, c := range n.Content {
		if s, ok := p.scalar(c, what+" item", "write a plain value"); ok {
			out = append(out, s)
		}
	}
	return out
}

// exprErr maps an expression error's offset to a position in the file.
func (p *parser) exprErr(v *View, n *yaml.Node, what string, err error) {
	e, ok := err.(*ExprError)
	if !ok {
		p.add(n, "", "%s: %v", what, err)
		return
	}
	if contains(v.Stream.broken, e.Unknown) {
		return // the field's own error is already reported
	}
	col := n.Column + e.Offset
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		col++ // the opening quote
	}
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		col = n.Column
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: n.Line, Column: col, Msg: fmt.Sprintf("%s: %s", what, e.Msg), Hint: e.Hint})
}

func (p *parser) spec(root *yaml.Node, s *Spec) {
	var streams, views, scoring *yaml.Node
	p.mapping(root, "the spec", []string{"version", "streams", "views", "scoring"}, []string{"streams"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "version":
			if ver, ok := p.integer(v, "version", 1, 1); ok && ver != 1 {
				p.add(v, "write version: 1", "unsupported spec version")
			}
		case "streams":
			streams = v
		case "views":
			views = v
		case "scoring":
			scoring = v
		}
	})
	if streams != nil {
		p.mapping(streams, "streams", nil, nil, func(name string, k, v *yaml.Node) {
			if p.name(k, "stream name") {
				if st := p.stream(name, v); st != nil {
					s.Streams = append(s.Streams, st)
				}
			}
		})
		if streams.Kind == yaml.MappingNode && len(streams.Content) == 0 {
			p.add(streams, "declare a stream with its subjects and fields", "streams is empty")
		}
		p.checkSubjectOverlap(streams, s.Streams)
	}
	if views != nil {
		p.mapping(views, "views", nil, nil, func(name string, k, v *yaml.Node) {
			if !p.name(k, "view name") {
				return
			}
			if s.Stream(name) != nil {
				p.add(k, "give the view its own name", "view %q has the name of a stream", name)
				return
			}
			if view := p.view(s, name, v); view != nil {
				s.Views = append(s.Views, view)
				view.Stream.Views = append(view.Stream.Views, view)
			}
		})
	}
	if scoring != nil {
		s.Scoring = p.scoring(s, scoring)
	}
}

var streamKeys = []string{"subjects", "id", "event_time", "fields", "partition", "partitions", "retention", "dedup_window", "out_of_orderness", "idle_timeout", "compact_every", "unknown_fields", "http_ingest", "lake_retention"}

func (p *parser) stream(name string, n *yaml.Node) *Stream {
	before := len(p.errs)
	st := &Stream{
		Name: name, Partition: DefaultPartition, Retention: Retention{MaxAge: DefaultRetention, MaxBytes: DefaultMaxBytes},
		DedupWindow: DefaultDedupWindow, OutOfOrderness: DefaultOutOfOrderness,
		IdleTimeout: DefaultIdleTimeout, CompactEvery: DefaultCompactEvery, HTTPIngest: true,
	}
	c := &Contract{ID: -1, Time: -1, index: map[string]int{}}
	st.Contract = c
	var idNode, timeNode, partitionsNode *yaml.Node
	what := "stream " + name
	p.mapping(n, what, streamKeys, []string{"subjects", "id", "event_time", "fields"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "subjects":
			for i, s := range p.strings(v, "subjects") {
				at := v
				if v.Kind == yaml.SequenceNode {
					at = v.Content[i]
				}
				if err := checkSubject(s); err != "" {
					p.add(at, "write a NATS subject like payments.events.>", "subject %q %s", s, err)
				} else if strings.HasPrefix(s, "tl.") || s == ">" || strings.HasPrefix(s, "$") {
					p.add(at, "pick a subject outside tl.*, which tideline uses itself", "subject %q is reserved", s)
				} else {
					st.Subjects = append(st.Subjects, s)
				}
			}
		case "id":
			idNode = v
		case "event_time":
			timeNode = v
		case "fields":
			p.mapping(v, what+" fields", nil, nil, func(fname string, fk, fv *yaml.Node) {
				if !p.name(fk, "field name") {
					return
				}
				if reservedCol[fname] {
					p.add(fk, "rename the field", "field name %q is reserved for view output", fname)
					return
				}
				if f := p.field(fname, fv); f != nil {
					c.index[fname] = len(c.Fields)
					for len(c.byLen) <= len(fname) {
						c.byLen = append(c.byLen, nil)
					}
					c.byLen[len(fname)] = append(c.byLen[len(fname)], len(c.Fields))
					c.Fields = append(c.Fields, f)
				} else {
					st.broken = append(st.broken, fname)
				}
			})
			if v.Kind == yaml.MappingNode && len(v.Content) == 0 {
				p.add(v, "declare the id and event-time fields at least", "%s has no fields", what)
			}
		case "partition":
			if d, ok := p.duration(v, "partition", time.Minute); ok {
				if (24*time.Hour)%d != 0 || d%time.Minute != 0 {
					p.add(v, "use a whole number of minutes that divides a day, like 5m, 15m, 1h", "partition %s does not divide a day", v.Value)
				} else {
					st.Partition = d
				}
			}
		case "partitions":
			n, err := strconv.Atoi(v.Value)
			switch {
			case err != nil || v.Kind != yaml.ScalarNode:
				p.add(v, "write a whole number, like 8", "partitions must be a number, got %q", v.Value)
			case n < 1 || n > MaxPartitions:
				p.add(v, fmt.Sprintf("use 1 to %d", MaxPartitions), "partitions %d is out of range", n)
			default:
				st.Partitions = n
				partitionsNode = v
			}
		case "retention":
			p.retention(v, &st.Retention)
		case "dedup_window":
			if d, ok := p.duration(v, "dedup_window", time.Second); ok {
				st.DedupWindow = d
			}
		case "out_of_orderness":
			if d, ok := p.duration(v, "out_of_orderness", 0); ok {
				st.OutOfOrderness = d
			}
		case "idle_timeout":
			if d, ok := p.duration(v, "idle_timeout", 100*time.Millisecond); ok {
				st.IdleTimeout = d
			}
		case "compact_every":
			if d, ok := p.duration(v, "compact_every", time.Second); ok {
				st.CompactEvery = d
			}
		case "http_ingest":
			st.HTTPIngest = p.boolean(v, "http_ingest")
		case "lake_retention":
			st.LakeRetention, _ = p.duration(v, "lake_retention", time.Hour)
		case "unknown_fields":
			switch v.Value {
			case "ignore":
			case "reject":
				c.RejectUnknown = true
			default:
				p.add(v, "write ignore or reject", "unknown_fields must be ignore or reject, got %q", v.Value)
			}
		}
	})
	if idNode != nil {
		c.ID = c.Field(idNode.Value)
		switch {
		case c.ID < 0:
			p.add(idNode, "name one of the stream's fields", "id field %q is not declared in fields", idNode.Value)
		case c.Fields[c.ID].Type != TypeString && c.Fields[c.ID].Type != TypeInt:
			p.add(idNode, "use a string or int field as the id", "id field %q is %s", idNode.Value, c.Fields[c.ID].Type)
		case !c.Fields[c.ID].Required:
			p.add(idNode, "add required: true to the field", "id field %q must be required", idNode.Value)
		}
	}
	if timeNode != nil {
		c.Time = c.Field(timeNode.Value)
		switch {
		case c.Time < 0:
			p.add(timeNode, "name one of the stream's timestamp fields", "event_time field %q is not declared in fields", timeNode.Value)
		case c.Fields[c.Time].Type != TypeTimestamp:
			p.add(timeNode, "use a field with type: timestamp", "event_time field %q is %s", timeNode.Value, c.Fields[c.Time].Type)
		case !c.Fields[c.Time].Required:
			p.add(timeNode, "add required: true to the field", "event_time field %q must be required", timeNode.Value)
		}
	}
	if st.Partitioned() && len(st.Subjects) > 0 {
		if last := st.Subjects[0]; len(st.Subjects) > 1 || !(strings.HasSuffix(last, ".>") || strings.HasSuffix(last, ".*")) {
			p.add(partitionsNode, "give the stream one subject ending in .> or .*, like payments.events.>: events go to payments.events.<id token>",
				"a partitioned stream takes one subject ending in a wildcard, got %s", strings.Join(st.Subjects, ", "))
		}
	}
	if len(p.errs) > before && (c.ID < 0 || c.Time < 0) {
		return nil // views over it would only repeat these errors
	}
	return st
}

func (p *parser) retention(n *yaml.Node, r *Retention) {
	if n.Kind == yaml.ScalarNode {
		if d, ok := p.duration(n, "retention", time.Minute); ok {
			r.MaxAge = d
		}
		return
	}
	p.mapping(n, "retention", []string{"max_age", "max_bytes", "max_msgs"}, nil, func(key string, k, v *yaml.Node) {
		switch key {
		case "max_age":
			if d, ok := p.duration(v, "max_age", time.Minute); ok {
				r.MaxAge = d
			}
		case "max_bytes":
			r.MaxBytes, _ = p.integer(v, "max_bytes", 1, 1<<62)
		case "max_msgs":
			r.MaxMsgs, _ = p.integer(v, "max_msgs", 1, 1<<62)
		}
	})
}

var fieldKeys = []string{"type", "required", "scale", "enum", "min", "max", "max_length", "max_future"}

func (p *parser) field(name string, n *yaml.Node) *Field {
	f := &Field{Name: name}
	what := "field " + name
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		// Shorthand: "amount: int" is an optional int.
		f.Type = p.fieldType(n)
		if f.Type == 0 {
			return nil
		}
		return f
	}
	var minN, maxN *yaml.Node
	before := len(p.errs)
	p.mapping(n, what, fieldKeys, []string{"type"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "type":
			f.Type = p.fieldType(v)
		case "required":
			f.Required = p.boolean(v, "required")
		case "scale":
			s, _ := p.integer(v, "scale", 0, 18)
			f.Scale = int(s)
		case "enum":
			f.Enum = p.strings(v, "enum")
		case "min":
			minN = v
		case "max":
			maxN = v
		case "max_length":
			l, _ := p.integer(v, "max_length", 1, 1<<30)
			f.MaxLength = int(l)
		case "max_future":
			f.MaxFuture, _ = p.duration(v, "max_future", 0)
		}
	})
	if f.Type == 0 || len(p.errs) > before {
		return nil
	}
	onlyFor := func(key string, ok bool, types string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key && !ok {
				p.add(n.Content[i], "remove it", "%s applies only to %s fields, and %s is %s", key, types, name, f.Type)
			}
		}
	}
	onlyFor("scale", f.Type == TypeDecimal, "decimal")
	onlyFor("enum", f.Type == TypeString, "string")
	onlyFor("max_length", f.Type == TypeString, "string")
	onlyFor("max_future", f.Type == TypeTimestamp, "timestamp")
	onlyFor("min", f.Type.Numeric() || f.Type == TypeTimestamp, "int, decimal and timestamp")
	onlyFor("max", f.Type.Numeric() || f.Type == TypeTimestamp, "int, decimal and timestamp")
	f.Min = p.bound(minN, f)
	f.Max = p.bound(maxN, f)
	if f.Min != nil && f.Max != nil && *f.Min > *f.Max {
		p.add(minN, "make min at most max", "min is greater than max")
	}
	if len(p.errs) > before {
		return nil
	}
	return f
}

func (p *parser) fieldType(n *yaml.Node) Type {
	for t, name := range typeNames {
		if n.Value == name {
			return t
		}
	}
	p.add(n, suggest(n.Value, []string{"string", "int", "decimal", "bool", "timestamp"}, "types are"), "unknown field type %q", n.Value)
	return 0
}

func (p *parser) bound(n *yaml.Node, f *Field) *int64 {
	if n == nil || !(f.Type.Numeric() || f.Type == TypeTimestamp) {
		return nil
	}
	if f.Type == TypeTimestamp {
		t, err := time.Parse(time.RFC3339Nano, n.Value)
		us, ok := timeMicros(t)
		if err != nil || !ok {
			p.add(n, `write an RFC 3339 time like "2020-01-01T00:00:00Z"`, "cannot parse %q as a timestamp bound", n.Value)
			return nil
		}
		return &us
	}
	v, err := ParseDecimal(n.Value, f.Scale)
	if err != nil {
		p.add(n, fmt.Sprintf("write a number with at most %d decimal places", f.Scale), "bound of %s: %v", f.Name, err)
		return nil
	}
	return &v
}

var viewKeys = []string{"stream", "window", "lateness", "filter", "derive", "group_by", "measures", "retention"}

func (p *parser) view(s *Spec, name string, n *yaml.Node) *View {
	before := len(p.errs)
	v := &View{Name: name}
	what := "view " + name
	var nodes = map[string]*yaml.Node{}
	p.mapping(n, what, viewKeys, []string{"stream", "window", "measures"}, func(key string, k, val *yaml.Node) {
		nodes[key] = val
	})
	if sn := nodes["stream"]; sn != nil {
		if v.Stream = s.Stream(sn.Value); v.Stream == nil {
			names := make([]string, len(s.Streams))
			for i, st := range s.Streams {
				names[i] = st.Name
			}
			p.add(sn, suggest(sn.Value, names, "declared streams"), "%s reads unknown stream %q", what, sn.Value)
		}
	}
	if wn := nodes["window"]; wn != nil {
		p.window(v, wn)
	}
	if ln := nodes["lateness"]; ln != nil {
		v.Lateness, _ = p.duration(ln, "lateness", 0)
	}
	if v.Stream == nil {
		return nil // every other check needs the stream's fields
	}
	v.Retention = v.Stream.LakeRetention
	if rn := nodes["retention"]; rn != nil {
		v.Retention, _ = p.duration(rn, "retention", time.Hour)
	}
	if v.Size > 0 && v.Hop > 0 && !v.Session() && nodes["window"] != nil {
		part := v.Stream.Partition
		if v.Size > part || part%v.Hop != 0 {
			p.add(nodes["window"], fmt.Sprintf("use a window no longer than the partition (%s) whose hop divides it", part),
				"window of %s does not fit the partitions of stream %s", what, v.Stream.Name)
		}
	}
	for i, f := range v.Stream.Contract.Fields {
		v.Columns = append(v.Columns, &Column{Name: f.Name, Type: f.Type, Scale: f.Scale, Index: i})
	}
	if dn := nodes["derive"]; dn != nil {
		p.mapping(dn, what+" derive", nil, nil, func(dname string, k, val *yaml.Node) {
			if !p.name(k, "derived field name") {
				return
			}
			if reservedCol[dname] || v.column(dname) != nil {
				p.add(k, "give the derived field a new name", "derived field %q clashes with a field or reserved name", dname)
				return
			}
			src, ok := p.scalar(val, "derived field "+dname, "write an expression like amount * 2")
			if !ok {
				return
			}
			e, err := ParseExpr(src, v.Columns)
			if err != nil {
				p.exprErr(v, val, "derived field "+dname, err)
				return
			}
			c := &Column{Name: dname, Type: e.Type, Scale: e.Scale, Index: len(v.Columns), Derived: e}
			v.Columns = append(v.Columns, c)
			v.Derived = append(v.Derived, c)
		})
	}
	if fn := nodes["filter"]; fn != nil {
		if src, ok := p.scalar(fn, "filter", "write a condition like amount > 100"); ok {
			e, err := ParseExpr(src, v.Columns)
			switch {
			case err != nil:
				p.exprErr(v, fn, "filter", err)
			case e.Type != TypeBool:
				p.add(fn, "write a condition, for example amount > 0", "filter is %s, not a condition", e.Type)
			default:
				v.Filter = e
			}
		}
	}
	taken := map[string]bool{}
	if gn := nodes["group_by"]; gn != nil {
		items := p.strings(gn, "group_by")
		for i, g := range items {
			at := gn
			if gn.Kind == yaml.SequenceNode {
				at = gn.Content[i]
			}
			c := v.column(g)
			switch {
			case c == nil && contains(v.Stream.broken, g):
			case c == nil:
				p.add(at, p.columnHint(v, g), "group_by names unknown field %q", g)
			case taken[g]:
				p.add(at, "list it once", "group_by has %q twice", g)
			default:
				taken[g] = true
				v.GroupBy = append(v.GroupBy, c)
			}
		}
	}
	if mn := nodes["measures"]; mn != nil {
		p.mapping(mn, what+" measures", nil, nil, func(mname string, k, val *yaml.Node) {
			if !p.name(k, "measure name") {
				return
			}
			if taken[mname] || reservedCol[mname] {
				p.add(k, "rename the measure", "measure %q clashes with a group_by field or a reserved name", mname)
				return
			}
			taken[mname] = true
			if m := p.measure(v, mname, val); m != nil {
				v.Measures = append(v.Measures, m)
			}
		})
		if mn.Kind == yaml.MappingNode && len(mn.Content) == 0 {
			p.add(mn, "add one, like payments: count", "%s has no measures", what)
		}
	}
	if len(p.errs) > before {
		return nil
	}
	return v
}

func (v *View) column(name string) *Column {
	for _, c := range v.Columns {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (p *parser) columnHint(v *View, name string) string {
	names := make([]string, len(v.Columns))
	for i, c := range v.Columns {
		names[i] = c.Name
	}
	return suggest(name, names, "fields are")
}

// MaxSession is the longest a session's max may be: it bounds how long
// after a partition ends it is sealed.
const MaxSession = 24 * time.Hour

func (p *parser) window(v *View, n *yaml.Node) {
	before := len(p.errs)
	if n.Kind == yaml.ScalarNode {
		v.Size, _ = p.duration(n, "window", time.Second)
		v.Hop = v.Size
	} else {
		p.mapping(n, "window", []string{"size", "hop", "session", "max"}, nil, func(key string, k, val *yaml.Node) {
			d, _ := p.duration(val, "window "+key, time.Second)
			switch key {
			case "size":
				v.Size = d
			case "hop":
				v.Hop = d
			case "session":
				v.Gap = d
			case "max":
				v.Max = d
			}
		})
		if v.Hop == 0 {
			v.Hop = v.Size
		}
	}
	const hint = "write window: 5m, window: {size: 5m, hop: 1m} or window: {session: 5m, max: 1h}"
	switch {
	case len(p.errs) > before:
	case v.Gap > 0 || v.Max > 0:
		switch {
		case v.Size > 0:
			p.add(n, hint, "a window is fixed (size) or a session, not both")
		case v.Gap == 0 || v.Max == 0:
			p.add(n, "give a session both its gap and its longest span, like {session: 5m, max: 1h}", "session window needs session and max")
		case v.Gap%time.Second != 0 || v.Max%time.Second != 0:
			p.add(n, "use whole seconds", "session gap and max must be whole seconds")
		case v.Gap >= v.Max || v.Max > MaxSession:
			p.add(n, fmt.Sprintf("use a max longer than the gap and at most %s", MaxSession), "session max %s does not fit gap %s", v.Max, v.Gap)
		}
	case v.Size == 0:
		p.add(n, hint, "window has no size")
	case v.Size%time.Second != 0 || v.Hop%time.Second != 0:
		p.add(n, "use whole seconds", "window size and hop must be whole seconds")
	case v.Hop > v.Size || v.Size%v.Hop != 0:
		p.add(n, "use a hop that divides the size, like size: 5m, hop: 1m", "window hop %s does not divide size %s", v.Hop, v.Size)
	}
}

var measureRE = regexp.MustCompile(`^\s*([a-z_]+)\s*(?:\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\))?\s*$`)

func (p *parser) measure(v *View, name string, n *yaml.Node) *Measure {
	const hint = "write count, count_if(flag), sum(field), min(field), max(field), count_distinct(field) or approx_count_distinct(field)"
	src, ok := p.scalar(n, "measure "+name, hint)
	if !ok {
		return nil
	}
	m := measureRE.FindStringSubmatch(src)
	if m == nil {
		p.add(n, hint+"; put expressions under derive:", "cannot parse measure %q", src)
		return nil
	}
	kind, arg := MeasureKind(m[1]), m[2]
	k := measureKinds[kind]
	out := &Measure{Name: name, Kind: kind, k: k}
	switch {
	case kind == "avg" || kind == "mean":
		p.add(n, "averages derive from sum/count: declare "+name+"_sum: sum(field) and a count", "%s is not mergeable exactly", m[1])
		return nil
	case k == nil:
		p.add(n, hint, "unknown measure %q", m[1])
		return nil
	case k.arg == "" && arg != "":
		p.add(n, "write "+string(kind)+", or count_if(flag) to count rows where flag is true", "%s takes no field", kind)
		return nil
	case k.arg == "":
		return out
	}
	if arg == "" {
		p.add(n, fmt.Sprintf("write %s(field)", kind), "%s needs a field", kind)
		return nil
	}
	if out.Arg = v.column(arg); out.Arg == nil {
		if contains(v.Stream.broken, arg) {
			return nil
		}
		p.add(n, p.columnHint(v, arg), "measure %s reads unknown field %q", name, arg)
		return nil
	}
	if k.arg == "bool" && out.Arg.Type != TypeBool {
		p.add(n, "derive a bool field, like big: amount > 100, and "+string(kind)+"(big)", "%s needs a bool field, %s is %s", kind, arg, out.Arg.Type)
		return nil
	}
	if k.arg == "few" {
		if out.Arg.Derived != nil {
			p.add(n, "count a contract field with few values, like an enum", "count_distinct counts a contract field, %s is derived", arg)
			return nil
		}
		bit, err := distinctBits(v.Stream.Contract.Fields[out.Arg.Index])
		if err != nil {
			p.add(n, "declare an enum (at most 63 values) or min and max on the field, or estimate with approx_count_distinct("+arg+")", "%v", err)
			return nil
		}
		out.bit = bit
		return out
	}
	if k.arg == "number" && !out.Arg.Type.Numeric() {
		p.add(n, "aggregate an int or decimal field", "%s needs an int or decimal field, %s is %s", kind, arg, out.Arg.Type)
		return nil
	}
	return out
}

// checkSubject returns what is wrong with a NATS subject, or "".
func checkSubject(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\r\n") {
		return "is empty or has white space"
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return "has an empty token"
		case t == ">" && i != len(toks)-1:
			return "has > before its last token"
		case t != ">" && t != "*" && strings.ContainsAny(t, "*>"):
			return "mixes a wildcard into a token"
		}
	}
	return ""
}

// subjectsOverlap reports whether some subject matches both patterns.
func subjectsOverlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(at) && i == len(bt):
			return true
		case i == len(at) || i == len(bt):
			return false
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] != "*" && bt[i] != "*" && at[i] != bt[i]:
			return false
		}
	}
}

func (p *parser) checkSubjectOverlap(n *yaml.Node, streams []*Stream) {
	for i, a := range streams {
		for _, b := range streams[i+1:] {
			for _, sa := range a.Subjects {
				for _, sb := range b.Subjects {
					if subjectsOverlap(sa, sb) {
						at := n
						for j := 0; j+1 < len(n.Content); j += 2 {
							if n.Content[j].Value == b.Name {
								at = n.Content[j]
							}
						}
						p.add(at, "give each stream subjects no other stream matches", "subject %q of stream %s overlaps %q of stream %s", sb, b.Name, sa, a.Name)
					}
				}
			}
		}
	}
}
