package spec

import (
	"hash/fnv"
	"strconv"
	"strings"
)

// A partitioned stream (`partitions: N`) splits its events among N
// partitions, each of which the speed layer folds on its own, so that
// several processes share a stream. Every event's subject carries a token
// derived from its id (IDToken), and JetStream's own subject mapping turns
// <prefix>.<token> into <prefix>.<partition>.<token> as it stores the
// event, with partition(N) over the token. A producer needs to know the
// token rule, not the partition count; every copy of an id lands in the
// same partition, so dedup stays per partition.

// MaxPartitions is the most partitions a stream may have.
const MaxPartitions = 64

// IDTokens is how many distinct subject tokens event ids map to: many more
// than partitions, so partitions get even shares.
const IDTokens = 1024

// IDToken is the subject token of an event with this id (its text: a
// string id itself, an int id's decimal digits): FNV-1a of the id, modulo
// IDTokens.
func IDToken(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	return strconv.Itoa(int(h.Sum32() % IDTokens))
}

// IDText is the text of an id value that IDToken takes.
func IDText(x Value, t Type) string {
	if t == TypeInt {
		return strconv.FormatInt(x.Int, 10)
	}
	return x.Str
}

// Partitioned reports whether the stream has more than one partition.
func (st *Stream) Partitioned() bool { return st.Partitions > 1 }

// SubjectPrefix is a partitioned stream's subject without its last,
// wildcard token: events are published to <prefix>.<id token>.
func (st *Stream) SubjectPrefix() string {
	s := st.Subjects[0]
	return s[:strings.LastIndexByte(s, '.')]
}

// PartitionMapping is the JetStream subject transform of a partitioned
// stream: what producers publish to, and what JetStream stores it as.
func (st *Stream) PartitionMapping() (src, dest string) {
	p := st.SubjectPrefix()
	return p + ".*", p + ".{{partition(" + strconv.Itoa(st.Partitions) + ",1)}}.{{wildcard(1)}}"
}

// PartitionSubjects filters the stored events of partition p.
func (st *Stream) PartitionSubjects(p int) string {
	return st.SubjectPrefix() + "." + strconv.Itoa(p) + ".*"
}

// PartitionOf is the partition JetStream's mapping puts an id token in:
// FNV-1a of the token modulo the partition count, as partition(n,1) does.
func (st *Stream) PartitionOf(token string) int {
	h := fnv.New32a()
	h.Write([]byte(token))
	return int(h.Sum32() % uint32(max(st.Partitions, 1)))
}
