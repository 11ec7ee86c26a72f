//go:build race

package worker

// The race detector slows Go code several-fold: the real-stack tests
// generate fewer events under it, to stay well inside CI's time.
const scale = 2
