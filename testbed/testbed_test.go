package testbed

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustSh(t *testing.T, h *Host, script string) string {
	t.Helper()
	out, code, err := h.Sh(testCtx(t), script)
	if err != nil || code != 0 {
		t.Fatalf("%s: %q: exit %d, %v:\n%s", h.Name(), script, code, err, out)
	}
	return out
}

func TestHostsAreIsolatedAndConnected(t *testing.T) {
	t.Parallel()
	c := NewT(t, "alpha", "beta")
	a, b := c.Host("alpha"), c.Host("beta")
	if a == nil || b == nil || len(c.Hosts()) != 2 {
		t.Fatalf("hosts: %v", c.Hosts())
	}
	if out := mustSh(t, a, "hostname; cat /etc/hostname"); out != "alpha\nalpha\n" {
		t.Errorf("hostname in alpha: %q", out)
	}
	// Each host sees only its own processes.
	if out := mustSh(t, a, "ls /proc | grep -c '^[0-9]'"); strings.TrimSpace(out) == "" || len(strings.TrimSpace(out)) > 2 {
		t.Errorf("alpha sees %s processes", out)
	}
	for _, need := range []string{"/dev/null", "/dev/net/tun", "/dev/urandom", "/dev/ptmx", "/srv/brine", "/srv/brine-apt"} {
		mustSh(t, a, "test -e "+need)
	}

	t.Run("tcp both ways and to the bridge", func(t *testing.T) {
		for _, pair := range [][2]*Host{{a, b}, {b, a}} {
			srv, cli := pair[0], pair[1]
			d, err := srv.Start("listen", "python3", "-c", fmt.Sprintf(`
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("%s", 7070)); s.listen(1); print("listening", flush=True)
c, _ = s.accept(); c.sendall(b"hello from " + socket.gethostname().encode()); c.close()`, srv.Addr()))
			if err != nil {
				t.Fatal(err)
			}
			tb.WaitFor(t, 10*time.Second, "listener", func() bool { return strings.Contains(d.Log(), "\nlistening\n") })
			out := mustSh(t, cli, fmt.Sprintf(`python3 -c 'import socket; s=socket.create_connection(("%s",7070),5); print(s.recv(100).decode())'`, srv.Addr()))
			if want := "hello from " + srv.Name(); strings.TrimSpace(out) != want {
				t.Errorf("%s -> %s: got %q, want %q", cli.Name(), srv.Name(), out, want)
			}
			select {
			case <-d.Exited():
			case <-time.After(5 * time.Second):
				t.Errorf("listener on %s did not exit after serving", srv.Name())
			}
		}
		// The machine listens on the bridge address; both hosts reach it.
		ln, err := net.Listen("tcp", c.BridgeAddr()+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				conn.Write([]byte("machine"))
				conn.Close()
			}
		}()
		port := ln.Addr().(*net.TCPAddr).Port
		for _, h := range []*Host{a, b} {
			out := mustSh(t, h, fmt.Sprintf(`python3 -c 'import socket; s=socket.create_connection(("%s",%d),5); print(s.recv(100).decode())'`, c.BridgeAddr(), port))
			if strings.TrimSpace(out) != "machine" {
				t.Errorf("%s -> bridge: %q", h.Name(), out)
			}
		}
	})

	t.Run("bridge does not forward beyond the machine", func(t *testing.T) {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + c.Bridge() + "/forwarding")
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Errorf("ipv4 forwarding on %s: %q, %v", c.Bridge(), b, err)
		}
	})

	t.Run("etc writes stay in the host", func(t *testing.T) {
		mustSh(t, a, "echo secret > /etc/brine-testbed-probe")
		if _, err := os.Stat("/etc/brine-testbed-probe"); err == nil {
			t.Error("file written in alpha's /etc is on the machine")
		}
		if _, code, _ := b.Sh(testCtx(t), "test -e /etc/brine-testbed-probe"); code == 0 {
			t.Error("file written in alpha's /etc is in beta")
		}
		b2, err := os.ReadFile(filepath.Join(a.Root(), "etc/brine-testbed-probe"))
		if err != nil || string(b2) != "secret\n" {
			t.Errorf("Root() view: %q, %v", b2, err)
		}
	})

	t.Run("iptables rules stay in the host", func(t *testing.T) {
		const rule = "-A INPUT -p tcp --dport 4506 -m comment --comment brine-testbed-probe -j ACCEPT"
		mustSh(t, a, "iptables "+rule)
		if out := mustSh(t, a, "iptables -S INPUT"); !strings.Contains(out, "brine-testbed-probe") {
			t.Errorf("rule not in alpha: %s", out)
		}
		if out := mustSh(t, b, "iptables -S INPUT"); strings.Contains(out, "brine-testbed-probe") {
			t.Errorf("alpha's rule is in beta: %s", out)
		}
		out, err := exec.Command("iptables", "-S", "INPUT").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables on the machine: %v: %s", err, out)
		}
		if strings.Contains(string(out), "brine-testbed-probe") {
			t.Errorf("alpha's rule is on the machine: %s", out)
		}
	})

	t.Run("partition and heal", func(t *testing.T) {
		d, err := a.Start("echo", "python3", "-c", fmt.Sprintf(`
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7071)); s.listen(8); print("listening", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"ok"); c.close()`))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Stop()
		tb.WaitFor(t, 10*time.Second, "listener", func() bool { return strings.Contains(d.Log(), "\nlistening\n") })
		reach := func(from *Host, addr string) bool {
			script := fmt.Sprintf(`python3 -c 'import socket; s=socket.create_connection(("%s",7071),1); assert s.recv(10)==b"ok"'`, addr)
			_, code, err := from.Sh(testCtx(t), script)
			if err != nil {
				t.Fatal(err)
			}
			return code == 0
		}
		if !reach(b, a.Addr()) {
			t.Fatal("beta cannot reach alpha before the partition")
		}
		if err := c.Partition("alpha"); err != nil {
			t.Fatal(err)
		}
		if reach(b, a.Addr()) {
			t.Error("beta reaches alpha through a partition")
		}
		if conn, err := net.DialTimeout("tcp", a.Addr()+":7071", time.Second); err == nil {
			conn.Close()
			t.Error("the machine reaches partitioned alpha")
		}
		if !reach(a, "127.0.0.1") {
			t.Error("partitioned alpha cannot reach itself")
		}
		if err := c.Heal("alpha"); err != nil {
			t.Fatal(err)
		}
		tb.WaitFor(t, 10*time.Second, "alpha reachable after heal", func() bool { return reach(b, a.Addr()) })
	})

	t.Run("daemon killed, reported, restarted", func(t *testing.T) {
		d, err := a.Start("sleeper", "sh", "-c", "echo up; exec sleep 1000")
		if err != nil {
			t.Fatal(err)
		}
		tb.WaitFor(t, 5*time.Second, "daemon up", func() bool { return strings.Contains(d.Log(), "\nup\n") })
		if !d.Running() || d.Pid() == 0 {
			t.Fatalf("daemon not running: pid %d", d.Pid())
		}
		// Kill it from inside the host, as a crash would.
		mustSh(t, a, "pkill -KILL -f '^sleep 1000$'")
		select {
		case <-d.Exited():
		case <-time.After(5 * time.Second):
			t.Fatal("killed daemon not reported")
		}
		if d.Running() || d.Err() == nil || !strings.Contains(d.Err().Error(), "signal") && !strings.Contains(d.Err().Error(), "137") {
			t.Errorf("after kill: running %v, err %v", d.Running(), d.Err())
		}
		if err := d.Restart(); err != nil {
			t.Fatal(err)
		}
		tb.WaitFor(t, 5*time.Second, "restarted daemon up", func() bool { return strings.Count(d.Log(), "up\n") == 2 })
		if !d.Running() {
			t.Fatal("not running after restart")
		}
		start := time.Now()
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
		if d.Running() || time.Since(start) > 5*time.Second {
			t.Errorf("Stop: running %v after %v", d.Running(), time.Since(start))
		}
		// The daemon's sleep only: the host's PID 1 keeps a long sleep of its own.
		if out := mustSh(t, a, "pgrep -f '^sleep 1000$' | wc -l"); strings.TrimSpace(out) != "0" {
			t.Errorf("the daemon's sleep is left in alpha: %s", out)
		}
	})
}

func TestAptInOneHostOnly(t *testing.T) {
	t.Parallel()
	c := NewT(t, "one", "two")
	ctx := testCtx(t)
	if err := c.EnableApt(ctx, ""); err != nil {
		t.Fatal(err)
	}
	one, two := c.Host("one"), c.Host("two")
	mustSh(t, one, "apt-get install -y -q brine-app-dep")
	if out := mustSh(t, one, "dpkg-query -W -f '${Status} ${Version}' brine-lib brine-app-dep"); strings.Count(out, "install ok installed 1.0") != 2 {
		t.Errorf("one: %q", out)
	}
	if out, code, _ := two.Sh(ctx, "dpkg-query -W -f '${Status}' brine-app-dep"); code == 0 && strings.Contains(out, "installed") {
		t.Errorf("package installed in one is installed in two: %q", out)
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "brine-app-dep").CombinedOutput(); err == nil && strings.Contains(string(out), "installed") {
		t.Errorf("package installed in one is installed on the machine: %q", out)
	}
	if _, err := os.Stat("/usr/share/brine-app-dep"); err == nil {
		t.Error("package files of one are on the machine")
	}
	// Versions, upgrades and a failing postinst behave as the package tests expect.
	mustSh(t, two, "apt-get install -y -q brine-hello=1.0")
	mustSh(t, two, "grep -qx 1.0 /usr/share/brine-hello/VERSION")
	mustSh(t, two, "apt-get install -y -q brine-hello")
	mustSh(t, two, "grep -qx 2.0 /usr/share/brine-hello/VERSION")
	out, code, err := two.Sh(ctx, "apt-get install -y -q brine-badpost")
	if err != nil || code == 0 || !strings.Contains(out, "brine-badpost: postinst refused") {
		t.Errorf("badpost: exit %d, %v:\n%s", code, err, out)
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	t.Parallel()
	if err := Available(); err != nil {
		SkipUnavailable(t, err)
	}
	c, err := New(testCtx(t), Options{Hosts: []string{"x", "y"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	x := c.Host("x")
	d, err := x.Start("bg", "sh", "-c", "sleep 1000 & sleep 1000")
	if err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 5*time.Second, "daemon pid", func() bool { return d.Pid() != 0 })
	pids := []int{x.InitPID(), c.Host("y").InitPID(), d.Pid()}
	if l := Leftovers(c.Name()); len(l) == 0 {
		t.Fatal("Leftovers sees nothing of a running cluster")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, c.Name(), c.Bridge(), pids)
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func assertGone(t *testing.T, name, bridge string, pids []int) {
	t.Helper()
	if l := Leftovers(name); len(l) > 0 {
		t.Errorf("left after teardown of %s:\n%s", name, strings.Join(l, "\n"))
	}
	if links, _ := linkNames(); true {
		for _, l := range links {
			if l == bridge || strings.HasPrefix(l, bridge+"-") {
				t.Errorf("link %s left", l)
			}
		}
	}
	for _, pid := range pids {
		if pid != 0 && syscall.Kill(pid, 0) == nil && procStart(pid) != 0 {
			cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			t.Errorf("process %d left: %q\n%s", pid, cl, st)
		}
	}
}

// TestHelperCrash is not a test: TestPanicAndCrashLeaveNothing runs it in
// a subprocess to make a cluster and then panic or die.
func TestHelperCrash(t *testing.T) {
	mode := os.Getenv("BRINE_TESTBED_CRASH")
	if mode == "" {
		t.Skip("helper for TestPanicAndCrashLeaveNothing")
	}
	var c *Cluster
	if strings.HasSuffix(mode, "-systemd") {
		c = NewSystemdT(t, "p1", "p2")
		mode = strings.TrimSuffix(mode, "-systemd")
	} else {
		c = NewT(t, "p1", "p2")
	}
	if _, err := c.Host("p1").Start("bg", "sleep", "1000"); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("CLUSTER %s %s %d %d\n", c.Name(), c.Bridge(), c.Host("p1").InitPID(), c.Host("p2").InitPID())
	os.Stdout.Sync()
	switch mode {
	case "panic":
		panic("testbed: deliberate panic mid-test")
	case "kill", "kill-norecord":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}

func TestPanicAndCrashLeaveNothing(t *testing.T) {
	if err := Available(); err != nil {
		SkipUnavailable(t, err)
	}
	modes := []string{"panic", "kill", "kill-norecord"}
	if SystemdAvailable() == nil || os.Getenv(RequireRealEnv) != "" {
		// Systemd hosts also leave cgroups, found by name alone too.
		modes = append(modes, "kill-norecord-systemd")
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrash$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "BRINE_TESTBED_CRASH="+mode)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("helper did not fail:\n%s", out)
			}
			var name, bridge string
			var p1, p2 int
			for line := range strings.Lines(string(out)) {
				if strings.HasPrefix(line, "CLUSTER ") {
					fmt.Sscanf(line, "CLUSTER %s %s %d %d", &name, &bridge, &p1, &p2)
				}
			}
			if name == "" {
				t.Fatalf("helper made no cluster:\n%s", out)
			}
			t.Cleanup(func() { cleanLeftovers(name) })
			if strings.HasPrefix(mode, "kill-norecord") {
				// A crash that also lost the record: found by names alone.
				if len(Leftovers(name)) == 0 {
					t.Fatal("a killed test left nothing: is the crash real?")
				}
				if err := os.Remove(statePath(name)); err != nil {
					t.Fatal(err)
				}
				if err := cleanLeftovers(name); err != nil {
					t.Error(err)
				}
			}
			if mode == "kill" {
				// Nothing ran Close: the cluster is still there, and the
				// next New (here: CleanAll's sibling) removes it as stale.
				if len(Leftovers(name)) == 0 {
					t.Fatal("a killed test left nothing: is the crash real?")
				}
				unlock, err := lockRegistry()
				if err != nil {
					t.Fatal(err)
				}
				cleanStaleLocked()
				unlock()
			}
			assertGone(t, name, bridge, []int{p1, p2})
		})
	}
}

// TestHelperUp is not a test: TestUpOutlivesItsCreator runs it in a
// subprocess that makes a persistent cluster and exits.
func TestHelperUp(t *testing.T) {
	name := os.Getenv("BRINE_TESTBED_UP")
	if name == "" {
		t.Skip("helper for TestUpOutlivesItsCreator")
	}
	if _, err := Up(testCtx(t), Options{Name: name, Hosts: []string{"u1", "u2"}}); err != nil {
		t.Fatal(err)
	}
}

func TestUpOutlivesItsCreator(t *testing.T) {
	t.Parallel()
	if err := Available(); err != nil {
		SkipUnavailable(t, err)
	}
	name := "up" + randHex(3)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperUp$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BRINE_TESTBED_UP="+name)
	if out, err := cmd.CombinedOutput(); err != nil {
		Down(name)
		t.Fatalf("Up in a subprocess: %v\n%s", err, out)
	}
	t.Cleanup(func() { Down(name) })
	c, err := Attach(name)
	if err != nil {
		t.Fatal(err)
	}
	if !slicesContain(List(), name) {
		t.Errorf("List() = %v, lacks %s", List(), name)
	}
	u1, u2 := c.Host("u1"), c.Host("u2")
	if u1 == nil || u2 == nil {
		t.Fatalf("attached hosts: %v", c.Hosts())
	}
	// The test repo was enabled by Up.
	mustSh(t, u2, "apt-get install -y -q brine-hello && grep -qx 2.0 /usr/share/brine-hello/VERSION")
	// AddHost on an attached cluster, then reach it from an old host.
	u3, err := c.AddHost(testCtx(t), "u3")
	if err != nil {
		t.Fatal(err)
	}
	mustSh(t, u3, "apt-get install -y -q brine-lib") // a later host gets the repository too
	mustSh(t, u1, fmt.Sprintf(`python3 -c 'import socket
s = socket.socket(); s.settimeout(3)
try:
    s.connect(("%s", 9))
except ConnectionRefusedError:
    pass  # a refusal proves u3 answered'`, u3.Addr()))
	if _, err := c.AddHost(testCtx(t), "u3"); err == nil {
		t.Error("AddHost accepted a duplicate name")
	}
	bridge := c.Bridge()
	if err := Down(name); err != nil {
		t.Fatal(err)
	}
	assertGone(t, name, bridge, []int{u1.InitPID(), u2.InitPID(), u3.InitPID()})
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func benchUpDown(b *testing.B, n int) {
	if err := Available(); err != nil {
		b.Skip(err)
	}
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%d", i)
	}
	var up, down time.Duration
	for b.Loop() {
		start := time.Now()
		c, err := New(context.Background(), Options{Hosts: hosts})
		if err != nil {
			b.Fatal(err)
		}
		up += time.Since(start)
		b.StopTimer()
		upperKB, rssKB := clusterFootprint(c)
		b.ReportMetric(float64(upperKB), "upper-KiB")
		b.ReportMetric(float64(rssKB), "host-procs-RSS-KiB")
		b.StartTimer()
		start = time.Now()
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		down += time.Since(start)
	}
	b.ReportMetric(up.Seconds()/float64(b.N), "up-s")
	b.ReportMetric(down.Seconds()/float64(b.N), "down-s")
}

// clusterFootprint returns the disk the cluster's tmpfs holds and the
// resident memory of the hosts' processes, in KiB.
func clusterFootprint(c *Cluster) (upperKB, rssKB int64) {
	var st syscall.Statfs_t
	if syscall.Statfs(c.st.Dir, &st) == nil {
		upperKB = int64(st.Blocks-st.Bfree) * st.Bsize / 1024
	}
	inos := map[uint64]bool{}
	for _, h := range c.Hosts() {
		inos[nsInode("/run/netns/"+h.Netns())] = true
	}
	for _, p := range scanProcs() {
		if !inos[p.netIno] {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
		for line := range strings.Lines(string(b)) {
			var kb int64
			if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
				rssKB += kb
			}
		}
	}
	return upperKB, rssKB
}

func BenchmarkUpDown3(b *testing.B)  { benchUpDown(b, 3) }
func BenchmarkUpDown20(b *testing.B) { benchUpDown(b, 20) }

// BenchmarkEnableApt3 times EnableApt (copy the repo, apt-get update in
// every host) on a 3-host cluster; the repository is built once per process.
func BenchmarkEnableApt3(b *testing.B) {
	if err := Available(); err != nil {
		b.Skip(err)
	}
	if _, err := DefaultAptRepo(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		c, err := New(context.Background(), Options{Hosts: []string{"a", "b", "c"}})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		err = c.EnableApt(context.Background(), "")
		b.StopTimer()
		c.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkBuildAptRepo times building the default test repository.
func BenchmarkBuildAptRepo(b *testing.B) {
	if _, err := exec.LookPath("dpkg-scanpackages"); err != nil {
		b.Skip("needs dpkg-dev")
	}
	for b.Loop() {
		if err := BuildAptRepo(b.TempDir(), DefaultTestPackages()); err != nil {
			b.Fatal(err)
		}
	}
}

// AddHost may be called from several goroutines at once (the cloud simulator boots droplets in
// parallel); run with -race this catches unguarded writes to the cluster record.
func TestConcurrentAddHost(t *testing.T) {
	c := NewT(t, "base")
	ctx := context.Background()
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func(i int) {
			_, err := c.AddHost(ctx, fmt.Sprintf("extra%d", i))
			errs <- err
		}(i)
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.Hosts()); n != 5 {
		t.Fatalf("%d hosts, want 5", n)
	}
	for _, h := range c.Hosts() {
		if out, code, err := h.Sh(ctx, "hostname"); err != nil || code != 0 || strings.TrimSpace(out) != h.Name() {
			t.Fatalf("host %s: %q %d %v", h.Name(), out, code, err)
		}
	}
}
