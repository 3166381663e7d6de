// Package tb declares the part of testing.TB that brine's test helpers (master.TestMaster,
// minion.TestMinion, the testbed's NewT...) use. Those helpers live in packages the brine binary
// links; taking this interface instead of testing.TB keeps the testing package out of the
// binary. *testing.T and *testing.B satisfy it.
package tb

// TB is a subset of testing.TB.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Failed() bool
	Logf(format string, args ...any)
	Skip(args ...any)
	TempDir() string
}
