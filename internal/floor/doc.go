// Package floor holds no code, only benchmarks: what the pieces of brine's 50-minion rows in
// BENCHMARKS.md cost at least on the machine they run on (starting a process, a round trip over
// loopback, the signatures of a job, the fsyncs of an apply that writes files), so that each
// row can be set against the floor it could reach.
//
//	go test -run XXX -bench . -benchtime 20x ./internal/floor/
//
// FLOOR_DIR chooses the filesystem of the fsync benchmarks (default: the system's temporary
// directory, which must be on a disk for the figures to mean anything).
package floor
