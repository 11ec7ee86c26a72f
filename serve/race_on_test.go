//go:build race

package serve

// raceEnabled: the race detector multiplies the Go heap several times.
const raceEnabled = true
