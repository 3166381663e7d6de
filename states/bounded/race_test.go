//go:build race

package bounded_test

// raceEnabled: the race detector's runtime maps shadow memory that counts in the child's
// RLIMIT_DATA, so the tests' memory bound must leave room for it.
const raceEnabled = true
