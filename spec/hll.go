package spec

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
)

// approx_count_distinct is a HyperLogLog sketch (Flajolet et al. 2007)
// whose every step is defined here and computed the same way in Go and in
// DuckDB SQL, so the speed layer's value of a window and the batch layer's
// are the same number, not two estimates within the error of each other:
//
//   - a value's hash h is the first 8 bytes of the MD5 of its text, read
//     little-endian: DuckDB's md5_number_upper. The text is the string
//     itself, or the decimal digits of an int, decimal (minor units) or
//     timestamp (microseconds), or true/false;
//   - its register is the top HLLBits bits of h, and its rank is one more
//     than the leading zeros of the next 40 bits (1 to 41);
//   - a window keeps, per register, the largest rank seen;
//   - the estimate is alpha*m*m / sum(2^-rank) over the m = 4096 registers
//     (0 for an empty one), or m*ln(m/V) when that is at most 2.5*m and V
//     registers are empty (linear counting), rounded to an integer. The
//     sum is taken exactly, as the integer sum(2^(41-rank)), so no order of
//     addition can change it.
//
// Its standard error is 1.04/sqrt(4096) = 1.6%: 99.7% of estimates are
// within 4.9% of the true count. Sketches merge by taking the larger rank
// per register, so windows, partitions and processes combine exactly.
const (
	HLLBits  = 12
	hllM     = 1 << HLLBits
	hllRanks = 40 // bits a rank is counted in
	// HLLError is the sketch's standard error.
	HLLError = 1.04 / 64
	// sparseMax is how many registers a sketch holds as a sorted list
	// before it keeps all 4096: most windows see few distinct values.
	sparseMax = 512
)

// hllK is alpha*m*m*2^41: the estimate is hllK over the exact sum.
var hllK = 0.7213 / (1 + 1.079/hllM) * hllM * hllM * (1 << (hllRanks + 1))

// HLLHash is the register and rank of a value's text.
func HLLHash(text string) (register int, rank uint8) {
	sum := md5.Sum([]byte(text))
	h := binary.LittleEndian.Uint64(sum[:8])
	rest := (h >> (64 - HLLBits - hllRanks)) & (1<<hllRanks - 1)
	return int(h >> (64 - HLLBits)), uint8(hllRanks + 1 - bits.Len64(rest))
}

// hllText is the text a value is hashed by, as hllTextSQL renders it.
func hllText(x Value, t Type) string {
	switch t {
	case TypeString:
		return x.Str
	case TypeBool:
		return strconv.FormatBool(x.Bool)
	}
	return strconv.FormatInt(x.Int, 10)
}

func hllTextSQL(x string, t Type) string {
	switch t {
	case TypeString:
		return x
	case TypeTimestamp:
		return "CAST(epoch_us(" + x + ") AS VARCHAR)"
	}
	return "CAST(" + x + " AS VARCHAR)"
}

// hllSQL is the DuckDB aggregate of approx_count_distinct over column x of
// type t: x+"_top" marks one row per window, group and register, the one
// of the largest rank (hllTopSQL).
func hllSQL(x string) string {
	top := fmt.Sprintf("%s_top AND %s IS NOT NULL", x, x)
	present := fmt.Sprintf("count(*) FILTER (WHERE %s)", top)
	empty := fmt.Sprintf("(%d - %s)", hllM, present)
	sum := fmt.Sprintf("(coalesce(sum(CAST(1 AS BIGINT) << (%d - %s_rank)) FILTER (WHERE %s), 0) + %s * %d)", hllRanks+1, x, top, empty, int64(1)<<(hllRanks+1))
	est := fmt.Sprintf("(CAST('%s' AS DOUBLE) / CAST(%s AS DOUBLE))", strconv.FormatFloat(hllK, 'g', -1, 64), sum)
	return fmt.Sprintf("CASE WHEN %s <= %d AND %s > 0 THEN CAST(round(CAST(%d AS DOUBLE) * ln(CAST(%d AS DOUBLE) / %s)) AS BIGINT) ELSE CAST(round(%s) AS BIGINT) END",
		est, hllM*5/2, empty, hllM, hllM, empty, est)
}

// hllRowSQL adds to a row of column x (of type t) its register and rank,
// as x_reg and x_rank, and marks as x_top the row of the largest rank of
// each register in the row's window and group (part, a PARTITION BY
// list). It is two selects deep: they are the columns of each.
func hllRowSQL(x string, t Type, part string) (first, second string) {
	h := "md5_number_upper(" + hllTextSQL(x, t) + ")"
	rest := fmt.Sprintf("((%s >> %d) & %d)", h, 64-HLLBits-hllRanks, int64(1)<<hllRanks-1)
	// The first 1 of the 64-bit string of rest is at 24 + the leading zeros
	// of its 40 bits, plus one; none at all is rank 41.
	pos := "bit_position('1'::BIT, CAST(" + rest + " AS BIT))"
	first = fmt.Sprintf("%s >> %d AS %s_reg, CASE %s WHEN 0 THEN %d ELSE %s - %d END AS %s_rank",
		h, 64-HLLBits, x, pos, hllRanks+1, pos, 64-hllRanks, x)
	second = fmt.Sprintf("row_number() OVER (PARTITION BY %s, %s_reg ORDER BY %s_rank DESC) = 1 AS %s_top", part, x, x, x)
	return first, second
}

// hllEstimate is the estimate of a sketch with present registers set,
// whose sum(2^(41-rank)) over them is sum.
func hllEstimate(present int, sum int64) int64 {
	empty := hllM - present
	est := hllK / float64(sum+int64(empty)<<(hllRanks+1))
	if est <= hllM*5/2 && empty > 0 {
		return int64(math.Round(float64(hllM) * math.Log(float64(hllM)/float64(empty))))
	}
	return int64(math.Round(est))
}

// Sketch is the registers of one approx_count_distinct cell: a sorted
// list of register<<8|rank while few are set, then all of them.
type Sketch struct {
	Sparse []uint32
	Dense  []uint8
}

func (s *Sketch) add(reg int, rank uint8) {
	if s.Dense != nil {
		s.Dense[reg] = max(s.Dense[reg], rank)
		return
	}
	i, found := slices.BinarySearchFunc(s.Sparse, uint32(reg), func(e, r uint32) int { return int(e>>8) - int(r) })
	switch {
	case found:
		if uint8(s.Sparse[i]) < rank {
			s.Sparse[i] = uint32(reg)<<8 | uint32(rank)
		}
	case len(s.Sparse) < sparseMax:
		s.Sparse = slices.Insert(s.Sparse, i, uint32(reg)<<8|uint32(rank))
	default:
		s.Dense = make([]uint8, hllM)
		for _, e := range s.Sparse {
			s.Dense[e>>8] = uint8(e)
		}
		s.Sparse = nil
		s.Dense[reg] = max(s.Dense[reg], rank)
	}
}

func (s *Sketch) merge(o *Sketch) {
	if o.Dense != nil {
		for reg, rank := range o.Dense {
			if rank > 0 {
				s.add(reg, rank)
			}
		}
		return
	}
	for _, e := range o.Sparse {
		s.add(int(e>>8), uint8(e))
	}
}

// Estimate is the sketch's distinct count.
func (s *Sketch) Estimate() int64 {
	present, sum := 0, int64(0)
	if s.Dense != nil {
		for _, rank := range s.Dense {
			if rank > 0 {
				present++
				sum += 1 << (hllRanks + 1 - int(rank))
			}
		}
	} else {
		for _, e := range s.Sparse {
			present++
			sum += 1 << (hllRanks + 1 - int(uint8(e)))
		}
	}
	return hllEstimate(present, sum)
}

func (s *Sketch) clone() *Sketch {
	return &Sketch{Sparse: slices.Clone(s.Sparse), Dense: slices.Clone(s.Dense)}
}

// Sketches holds the sketches of the cells of an engine's windows: a
// sketch cell's V is its number here, plus one (0: none yet). The
// operator keeps one, and checkpoints it.
type Sketches struct {
	All  []*Sketch // nil where freed
	Free []int64
}

// of returns the sketch of cell c, made if it has none.
func (sk *Sketches) of(c *Cell) *Sketch {
	if c.V > 0 {
		return sk.All[c.V-1]
	}
	s := &Sketch{}
	if n := len(sk.Free); n > 0 {
		c.V = sk.Free[n-1] + 1
		sk.Free = sk.Free[:n-1]
		sk.All[c.V-1] = s
	} else {
		sk.All = append(sk.All, s)
		c.V = int64(len(sk.All))
	}
	return s
}

func (sk *Sketches) release(c *Cell) {
	if c.V > 0 {
		sk.All[c.V-1] = nil
		sk.Free = append(sk.Free, c.V-1)
		c.V = 0
	}
}

// Len is how many sketches are held.
func (sk *Sketches) Len() int { return len(sk.All) - len(sk.Free) }

// Clone copies every sketch, for a checkpoint taken while the engine runs
// on. A freed number holds an empty sketch in the copy (gob cannot encode
// nil), and stays free.
func (sk *Sketches) Clone() *Sketches {
	out := &Sketches{All: make([]*Sketch, len(sk.All)), Free: slices.Clone(sk.Free)}
	for i, s := range sk.All {
		if s == nil {
			s = &Sketch{}
		}
		out.All[i] = s.clone()
	}
	return out
}

// AppendBinary appends the sketch's registers: 4 bytes (register<<8|rank,
// big-endian) per set register while it is sparse, or every register's
// rank, HLLRegisters bytes, once dense.
func (s *Sketch) AppendBinary(b []byte) []byte {
	if s.Dense != nil {
		return append(b, s.Dense...)
	}
	for _, e := range s.Sparse {
		b = binary.BigEndian.AppendUint32(b, e)
	}
	return b
}

// DecodeSketch reads a sketch AppendBinary wrote, checking every register
// and rank: the bytes come from a KV bucket any client can write.
func DecodeSketch(b []byte) (*Sketch, error) {
	if len(b) == hllM {
		for reg, rank := range b {
			if int(rank) > hllRanks+1 {
				return nil, fmt.Errorf("register %d has rank %d, above the most a sketch holds (%d)", reg, rank, hllRanks+1)
			}
		}
		return &Sketch{Dense: slices.Clone(b)}, nil
	}
	if len(b)%4 != 0 || len(b)/4 > sparseMax {
		return nil, fmt.Errorf("%d bytes is neither a sparse sketch (4 bytes a register, at most %d) nor a dense one (%d)", len(b), sparseMax, hllM)
	}
	s := &Sketch{}
	for i := 0; i < len(b); i += 4 {
		e := binary.BigEndian.Uint32(b[i:])
		reg, rank := int(e>>8), uint8(e)
		if reg >= hllM || rank == 0 || int(rank) > hllRanks+1 {
			return nil, fmt.Errorf("register entry %#x is out of range", e)
		}
		s.add(reg, rank)
	}
	return s, nil
}
