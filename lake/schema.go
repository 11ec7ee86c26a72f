package lake

import (
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"

	"tideline/spec"
)

// System columns of a raw table, after the contract's fields.
const (
	SeqColumn      = "_seq"      // the JetStream stream sequence of the event
	ReceivedColumn = "_received" // when JetStream received it
)

// ScaleKey is the Arrow field metadata key holding a decimal's scale.
const ScaleKey = "tideline.scale"

var timestampUTC = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

func arrowType(t spec.Type) arrow.DataType {
	switch t {
	case spec.TypeString:
		return arrow.BinaryTypes.String
	case spec.TypeBool:
		return arrow.FixedWidthTypes.Boolean
	case spec.TypeTimestamp:
		return timestampUTC
	}
	return arrow.PrimitiveTypes.Int64 // int, and decimal as minor units
}

func arrowField(name string, t spec.Type, scale int, nullable bool) arrow.Field {
	f := arrow.Field{Name: name, Type: arrowType(t), Nullable: nullable}
	if t == spec.TypeDecimal {
		f.Metadata = arrow.NewMetadata([]string{ScaleKey}, []string{strconv.Itoa(scale)})
	}
	return f
}

// RawSchema is the schema of a stream's raw table: the contract's fields,
// then _seq and _received.
func RawSchema(c *spec.Contract) *arrow.Schema {
	fields := make([]arrow.Field, 0, len(c.Fields)+2)
	for _, f := range c.Fields {
		fields = append(fields, arrowField(f.Name, f.Type, f.Scale, !f.Required))
	}
	fields = append(fields,
		arrow.Field{Name: SeqColumn, Type: arrow.PrimitiveTypes.Int64},
		arrow.Field{Name: ReceivedColumn, Type: timestampUTC})
	return arrow.NewSchema(fields, nil)
}

// ViewSchema is the schema of a view's batch table: window_start,
// window_end, the group-by columns, then the measures, as View.SQL returns.
func ViewSchema(v *spec.View) *arrow.Schema {
	fields := []arrow.Field{
		{Name: "window_start", Type: timestampUTC},
		{Name: "window_end", Type: timestampUTC},
	}
	for _, c := range v.GroupBy {
		fields = append(fields, arrowField(c.Name, c.Type, c.Scale, true))
	}
	for _, m := range v.Measures {
		t, scale := m.Type()
		fields = append(fields, arrowField(m.Name, t, scale, true))
	}
	return arrow.NewSchema(fields, nil)
}

// DuckDBType is the DuckDB type DuckDB reads an Arrow column as.
func DuckDBType(t arrow.DataType) string {
	switch t.ID() {
	case arrow.STRING:
		return "VARCHAR"
	case arrow.BOOL:
		return "BOOLEAN"
	case arrow.TIMESTAMP:
		return "TIMESTAMPTZ"
	}
	return "BIGINT"
}

var correctionsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "view", Type: arrow.BinaryTypes.String},
	{Name: "kind", Type: arrow.BinaryTypes.String},
	{Name: "window_start", Type: timestampUTC},
	{Name: "window_end", Type: timestampUTC},
	{Name: "dims", Type: arrow.BinaryTypes.String},
	{Name: "measure", Type: arrow.BinaryTypes.String},
	{Name: "old_value", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "new_value", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "delta", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "recorded_at", Type: timestampUTC},
}, nil)

// CorrectionsSchema is the schema of a view's corrections table: one row
// per window, group and measure whose served value batch changed. kind is
// speed (batch replaced the speed layer's value) or batch (a recompute
// replaced an older batch value); dims is a JSON object; values of decimal
// measures are minor units.
func CorrectionsSchema() *arrow.Schema { return correctionsSchema }
