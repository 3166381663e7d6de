package minioncli

import (
	"runtime"
	"testing"
)

// brine-minion runs with MaxProcs Ps unless GOMAXPROCS is in its environment.
func TestLimitProcs(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	runtime.GOMAXPROCS(MaxProcs + 1)
	t.Setenv("GOMAXPROCS", "")
	limitProcs()
	if got := runtime.GOMAXPROCS(0); got != MaxProcs {
		t.Fatalf("GOMAXPROCS %d, want %d", got, MaxProcs)
	}
	runtime.GOMAXPROCS(MaxProcs + 1)
	t.Setenv("GOMAXPROCS", "3")
	limitProcs()
	if got := runtime.GOMAXPROCS(0); got != MaxProcs+1 {
		t.Fatalf("GOMAXPROCS %d with GOMAXPROCS set in the environment, want %d (left alone)", got, MaxProcs+1)
	}
}
