// Package payments is the shipped example: card payments in, fraud decisions
// out. tideline.yaml beside this file is its pipeline spec, scoring rules
// included; this package holds the generator profiles that make its events
// (Payment, and Fraud with card-testing bursts and amount spikes) and the
// merchant reference table the scorer joins.
package payments
