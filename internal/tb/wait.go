package tb

import "time"

// WaitFor polls cond until it holds, failing t if it does not within d (a hang guard, not an
// assertion about time: d is generous).
func WaitFor(t TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
