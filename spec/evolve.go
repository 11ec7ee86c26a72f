package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Contracts change while a lake keeps the rows written under every earlier
// one. A change is compatible when every row already written still reads
// as a row of the new contract, with nulls where it has no value:
//
//   - adding an optional field (old rows read it as null);
//   - removing a field (no view can use it, or the spec would not parse;
//     rows already written keep it, and it reads again if it comes back with
//     the same type);
//   - making a required field optional;
//   - adding enum values, widening or dropping min, max and max_length;
//   - narrowing them: the new bound applies to new events only, and rows
//     already written are kept as they were accepted (Change.Note says so).
//
// A change is breaking when a written row would read wrong: a field's type
// or decimal scale changed (decimals are int64 minor units, so there is no
// precision to raise; a new scale would rescale every old value), an
// optional field made required, a required field added to rows that lack
// it, or another field made the id or the event time. Breaking changes are
// refused before anything runs: give the field a new name instead.

// FieldDoc is a contract field as the lake records it.
type FieldDoc struct {
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	Scale     int      `json:"scale,omitempty"`
	Required  bool     `json:"required,omitempty"`
	Enum      []string `json:"enum,omitempty"`
	Min       *int64   `json:"min,omitempty"`
	Max       *int64   `json:"max,omitempty"`
	MaxLength int      `json:"max_length,omitempty"`
}

// ContractDoc is a contract as the lake records it beside the rows written
// with it.
type ContractDoc struct {
	ID     string     `json:"id"`
	Time   string     `json:"event_time"`
	Fields []FieldDoc `json:"fields"`
}

// Doc returns the contract's record.
func (c *Contract) Doc() ContractDoc {
	d := ContractDoc{ID: c.Fields[c.ID].Name, Time: c.Fields[c.Time].Name}
	for _, f := range c.Fields {
		d.Fields = append(d.Fields, FieldDoc{Name: f.Name, Type: f.Type.String(), Scale: f.Scale, Required: f.Required,
			Enum: f.Enum, Min: f.Min, Max: f.Max, MaxLength: f.MaxLength})
	}
	return d
}

// Fingerprint names the contract: equal records have equal fingerprints.
func (d ContractDoc) Fingerprint() string {
	data, _ := json.Marshal(d)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:6])
}

func (d ContractDoc) field(name string) *FieldDoc {
	for i := range d.Fields {
		if d.Fields[i].Name == name {
			return &d.Fields[i]
		}
	}
	return nil
}

// String renders a field's definition as a spec would write it.
func (f *FieldDoc) String() string {
	if f == nil {
		return "(absent)"
	}
	parts := []string{"type: " + f.Type}
	if f.Scale != 0 {
		parts = append(parts, "scale: "+strconv.Itoa(f.Scale))
	}
	if f.Required {
		parts = append(parts, "required: true")
	}
	if len(f.Enum) > 0 {
		parts = append(parts, "enum: ["+strings.Join(f.Enum, ", ")+"]")
	}
	if f.Min != nil {
		parts = append(parts, "min: "+strconv.FormatInt(*f.Min, 10))
	}
	if f.Max != nil {
		parts = append(parts, "max: "+strconv.FormatInt(*f.Max, 10))
	}
	if f.MaxLength != 0 {
		parts = append(parts, "max_length: "+strconv.Itoa(f.MaxLength))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// Change is one difference between two contracts.
type Change struct {
	Field    string
	Old, New string // the definitions, as FieldDoc.String renders them
	Breaking bool
	// Note says why a change is breaking, or what a compatible one means
	// for rows already written.
	Note string
}

func (c Change) String() string {
	kind := "compatible"
	if c.Breaking {
		kind = "BREAKING"
	}
	return fmt.Sprintf("%s: field %s: %s -> %s: %s", kind, c.Field, c.Old, c.New, c.Note)
}

// CompareContracts lists what changed from old to new, field by field in
// new's order, then the fields new removed.
func CompareContracts(old, new ContractDoc) []Change {
	var out []Change
	add := func(field string, o, n *FieldDoc, breaking bool, note string) {
		out = append(out, Change{Field: field, Old: o.String(), New: n.String(), Breaking: breaking, Note: note})
	}
	if old.ID != new.ID {
		out = append(out, Change{Field: new.ID, Old: "id: " + old.ID, New: "id: " + new.ID, Breaking: true,
			Note: "the id is how rows written already are told apart; it cannot move to another field"})
	}
	if old.Time != new.Time {
		out = append(out, Change{Field: new.Time, Old: "event_time: " + old.Time, New: "event_time: " + new.Time, Breaking: true,
			Note: "rows written already are partitioned by the old event time; it cannot move to another field"})
	}
	for i := range new.Fields {
		n := &new.Fields[i]
		o := old.field(n.Name)
		switch {
		case o == nil && n.Required:
			add(n.Name, o, n, true, "rows written already have no value for a required field; add it as optional")
			continue
		case o == nil:
			add(n.Name, o, n, false, "an optional field: rows written already read it as null")
			continue
		case o.Type != n.Type:
			add(n.Name, o, n, true, "rows written already hold "+o.Type+" values; give the new field another name")
			continue
		case o.Scale != n.Scale:
			add(n.Name, o, n, true, "a decimal's scale is how its stored minor units are read; rows written already would change value; give the new field another name")
			continue
		case !o.Required && n.Required:
			add(n.Name, o, n, true, "rows written already may have no value; keep it optional")
			continue
		}
		var notes []string
		if o.Required && !n.Required {
			notes = append(notes, "no longer required")
		}
		if !slices.Equal(o.Enum, n.Enum) {
			switch {
			case len(n.Enum) == 0:
				notes = append(notes, "any value allowed")
			case len(o.Enum) == 0 || !subset(o.Enum, n.Enum):
				notes = append(notes, "enum values removed: they apply to new events only, rows written already keep theirs")
			default:
				notes = append(notes, "enum values added")
			}
		}
		if !sameBound(o.Min, n.Min) || !sameBound(o.Max, n.Max) || o.MaxLength != n.MaxLength {
			narrower := (n.Min != nil && (o.Min == nil || *n.Min > *o.Min)) ||
				(n.Max != nil && (o.Max == nil || *n.Max < *o.Max)) ||
				(n.MaxLength != 0 && (o.MaxLength == 0 || n.MaxLength < o.MaxLength))
			if narrower {
				notes = append(notes, "a bound narrowed: it applies to new events only, rows written already keep their values")
			} else {
				notes = append(notes, "a bound widened")
			}
		}
		if len(notes) > 0 {
			add(n.Name, o, n, false, strings.Join(notes, "; "))
		}
	}
	for i := range old.Fields {
		o := &old.Fields[i]
		if new.field(o.Name) == nil && o.Name != new.ID && o.Name != new.Time {
			add(o.Name, o, nil, false, "removed: rows written already keep it, and it reads again if it comes back with the same type")
		}
	}
	return out
}

func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func sameBound(a, b *int64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// Breaking returns the breaking changes of a comparison.
func Breaking(changes []Change) []Change {
	var out []Change
	for _, c := range changes {
		if c.Breaking {
			out = append(out, c)
		}
	}
	return out
}
