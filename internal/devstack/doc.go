// Package devstack starts the real parts tideline runs on, for `tideline dev`
// and for tests: an embedded NATS server with JetStream, the Temporal dev
// server from bin/temporal and MinIO from bin/minio.
//
// Guarantees:
//   - Start waits until each part answers a real request (JetStream account
//     info, Temporal's health check, MinIO's readiness probe), or fails with
//     the tail of the part's log.
//   - A missing bin/temporal or bin/minio fails with a message naming
//     `make tools`.
//   - No child process outlives its owner: Stop terminates them in reverse
//     order of start, and if the owning process dies without calling Stop
//     (kill -9, a test timeout), the kernel kills the children (Pdeathsig).
//
// The Temporal SDK's testsuite.StartDevServer is not used because it cannot
// set Pdeathsig, so a killed test would leave its server running.
package devstack
