package swarm_test

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/cmd/brine/internal/swarm"
	"github.com/brinecm/brine/internal/pgtest"
)

// TestMain makes this test binary a part of a split swarm when TestSplitSwarm starts it so, or
// a master process when TestBenchFailover does (testMasterEnv); it stops the tests' PostgreSQL.
func TestMain(m *testing.M) {
	if ran, err := swarm.RunPartFromEnv(context.Background()); ran {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if js := os.Getenv(testMasterEnv); js != "" {
		if err := runTestMaster(js); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	pgtest.Main(m)
}

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		n, procs int
		limit    uint64
		inProc   bool
		want     []int
	}{
		{40, 2, 20000, false, []int{20, 20}},
		{41, 3, 20000, false, []int{14, 14, 13}},
		{4000, 0, 20000, false, []int{4000}},
		{5000, 0, 20000, false, []int{4744, 256}},
		{10000, 0, 20000, false, []int{4744, 2628, 2628}},
		{20000, 0, 20000, false, []int{4744, 3814, 3814, 3814, 3814}},
		{10000, 0, 65536, false, []int{10000}},
		// an in-process master holds the other end of every connection in the first process
		{5000, 0, 20000, true, []int{2244, 2756}},
		{10000, 0, 20000, true, []int{0, 3334, 3333, 3333}},
	} {
		got, err := swarm.Split(c.n, c.procs, c.limit, c.inProc)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Split(%d, %d, %d, %v) = %v, %v; want %v", c.n, c.procs, c.limit, c.inProc, got, err, c.want)
		}
		sum := 0
		for _, s := range got {
			sum += s
		}
		if sum != c.n {
			t.Errorf("Split(%d, ...) shares add up to %d", c.n, sum)
		}
	}
	if _, err := swarm.Split(10, 0, 1000, false); err == nil {
		t.Error("a file limit of 1,000 holds no minion past the spare 1,024, and Split said nothing")
	}
}

// TestSplitSwarm: 2 processes x 20 minions against one master: this process runs 20, a child
// (this test binary, swarm.PartEnv set) the other 20, and every one of the 40 answers the
// bench's pings, applies and runs; the child is gone when Bench returns.
func TestSplitSwarm(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := swarm.Bench(ctx, swarm.BenchConfig{N: 40, Runs: 1, Files: 2, Procs: 2, Dir: shmDir(t),
		PartExe: os.Args[0], PartArgs: []string{"-test.run=^$"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Procs != 2 {
		t.Fatalf("%d swarm processes, want 2", res.Procs)
	}
	for name, st := range map[string]swarm.JobStats{"first ping": res.FirstPing, "ping": res.Pings[0], "first apply": res.FirstApply} {
		if st.Minions != 40 || st.Returned != 40 {
			t.Fatalf("%s: %d of %d minions returned, want 40", name, st.Returned, st.Minions)
		}
	}
	if res.FirstApply.Changed != 80 {
		t.Fatalf("first apply changed %d files, want 80", res.FirstApply.Changed)
	}
	// The child has exited and been waited for: it is no longer this process's child.
	kids, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/children", os.Getpid()))
	if err == nil && strings.TrimSpace(string(kids)) != "" {
		for _, k := range strings.Fields(string(kids)) {
			cmdline, _ := os.ReadFile("/proc/" + k + "/cmdline")
			if strings.Contains(string(cmdline), os.Args[0]) {
				t.Fatalf("swarm part %s still running after Bench", k)
			}
		}
	}
}

// A child that exits before making its minions fails the bench at once, with its share named.
func TestSplitSwarmChildFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := swarm.Bench(ctx, swarm.BenchConfig{N: 4, Runs: 1, Procs: 2, Dir: shmDir(t), PartExe: "/bin/false"})
	if err == nil || !strings.Contains(err.Error(), "minions 3-4 exited before making them") {
		t.Fatalf("Bench with a failing child: %v", err)
	}
}
