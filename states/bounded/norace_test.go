//go:build !race

package bounded_test

const raceEnabled = false
