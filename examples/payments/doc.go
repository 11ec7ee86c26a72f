// Package payments is the shipped example: card payments in, fraud decisions
// out. tideline.yaml beside this file is its pipeline spec; this package
// holds the generator profile that makes its events.
package payments
