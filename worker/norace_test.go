//go:build !race

package worker

const scale = 1
