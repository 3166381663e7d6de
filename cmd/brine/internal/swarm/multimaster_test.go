package swarm_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/cmd/brine/internal/swarm"
	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/master"
)

func TestParseMasters(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []swarm.Addr
		err  string
	}{
		{"127.0.0.1:4506", []swarm.Addr{{Pub: "127.0.0.1:4505", Req: "127.0.0.1:4506"}}, ""},
		{"127.0.0.1:20001,127.0.0.1:20003, m3.example:4506", []swarm.Addr{
			{Pub: "127.0.0.1:20000", Req: "127.0.0.1:20001"},
			{Pub: "127.0.0.1:20002", Req: "127.0.0.1:20003"},
			{Pub: "m3.example:4505", Req: "m3.example:4506"},
		}, ""},
		{"[::1]:4506", []swarm.Addr{{Pub: "[::1]:4505", Req: "[::1]:4506"}}, ""},
		{"127.0.0.1", nil, "want host:request-port"},
		{"127.0.0.1:4506,", nil, `master address ""`},
		{"127.0.0.1:1", nil, "bad port"},
		{"a:4506,b:x", nil, `"b:x": bad port`},
		{"a:4506,a:4506", nil, "listed twice"},
	} {
		got, err := swarm.ParseMasters(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseMasters(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseMasters(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

// testMasterEnv makes this test binary a master process (TestMain): the value is its
// testMasterSpec in JSON. It prints its request address on stdout and runs until killed or
// until its stdin closes.
const testMasterEnv = "BRINE_SWARM_TEST_MASTER"

type testMasterSpec struct {
	Dir, Store, Name, Pub, Req string
}

// portPair returns the publish and request addresses of a master on loopback, request port one
// above publish port as `bench swarm --master` expects: two ports free a moment ago.
func portPair(t *testing.T) (pub, req string) {
	t.Helper()
	for range 100 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l1.Close()
		if err == nil {
			l2.Close()
			return fmt.Sprintf("127.0.0.1:%d", p), fmt.Sprintf("127.0.0.1:%d", p+1)
		}
	}
	t.Fatal("no two consecutive free ports on 127.0.0.1")
	return "", ""
}

// runTestMaster is the master process of testMasterEnv.
func runTestMaster(js string) error {
	var spec testMasterSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		return err
	}
	cfg, diags := master.LoadConfig("", spec.Dir)
	if diags.HasErrors() {
		return diags
	}
	cfg.Store, cfg.Name, cfg.AutoAccept = spec.Store, spec.Name, true
	cfg.PublishAddr, cfg.RequestAddr = spec.Pub, spec.Req
	m, err := master.New(cfg, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Start(context.Background()); err != nil {
		return err
	}
	fmt.Println("started")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// startMasterProcess starts this test binary as a master on store with a copy of key; it is
// killed and waited for when t ends.
func startMasterProcess(t *testing.T, store, name string, key []byte) (pid int, reqAddr string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "brm") // short: the control socket's path is bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "master.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	pub, req := portPair(t)
	js, _ := json.Marshal(testMasterSpec{Dir: dir, Store: store, Name: name, Pub: pub, Req: req})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), testMasterEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
		t.Fatalf("master process %s did not start: %v", name, err)
	}
	return cmd.Process.Pid, req
}

// TestBenchFailover: `bench swarm --master a,b --kill-master-pid` end to end, small: 30 minions
// in two processes list two masters on one PostgreSQL (one in this process, pinged through;
// one a process of its own), spread over both; the bench kills the second with SIGKILL and
// pings through the first until all 30 answer, and every lease is then on the survivor.
func TestBenchFailover(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	pub1, req1 := portPair(t)
	m1 := master.TestMaster(t, func(c *master.Config) {
		c.Store, c.Name, c.AutoAccept, c.PublishAddr, c.RequestAddr = url, "m1", true, pub1, req1
	})
	key, err := os.ReadFile(filepath.Join(m1.Config().DataDir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	pid, req2 := startMasterProcess(t, url, "m2", key)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 30
	res, err := swarm.Bench(ctx, swarm.BenchConfig{N: n, Runs: 1, Procs: 2, Dir: shmDir(t),
		PartExe: os.Args[0], PartArgs: []string{"-test.run=^$"},
		Master: req1 + "," + req2, Socket: m1.Config().ControlSocket,
		KillMasterPID: pid, PingOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	// Each minion takes a master at random: both get some of 30 (1 in 2^29 that one gets none).
	if res.Masters != 2 || res.Spread["m1"] == 0 || res.Spread["m2"] == 0 || res.Spread["m1"]+res.Spread["m2"] != n {
		t.Fatalf("%d masters, minions per master %v: want 30 over m1 and m2", res.Masters, res.Spread)
	}
	fo := res.Failover
	if fo == nil || len(fo.Tries) == 0 || fo.Tries[len(fo.Tries)-1].Returned != n || fo.RSS == 0 {
		t.Fatalf("failover: %+v", fo)
	}
	if !reflect.DeepEqual(fo.Spread, map[string]int{"m1": n}) {
		t.Fatalf("minions per master after m2 was killed: %v, want all 30 on m1", fo.Spread)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		// Killed but not yet waited for (a zombie) is fine; running is not.
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(st), ") Z") {
			t.Fatalf("master process %d still running after the failover", pid)
		}
	}
	t.Logf("failover of %d minions (%d on m2): %s, %d pings", n, res.Spread["m2"], fo.Wall, len(fo.Tries))
}
