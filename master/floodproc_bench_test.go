package master_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/testbed"
)

// Issue 10's measurement with the master as a separate process: a real `brine master` and a
// real `brine minion`, the floods of TestHostileFloodsStayBounded from an attacker process (8
// connections sending the largest frames allowed before authentication and never reading,
// three that never read their challenges, a hello flood from 40 addresses, a subscription
// flood, 300 silent connections). It reports the median wall time of `brine ping legit` (the
// CLI process, start to exit) calm and under the floods, and the master's peak RSS (VmHWM).
//
//	go test ./master/ -run '^$' -bench FloodSeparateMaster -benchtime 1x -v
func BenchmarkFloodSeparateMaster(b *testing.B) {
	bin := os.Getenv("BRINE_FLOOD_BIN") // another build to compare, e.g. main's
	if bin == "" {
		bin = testbed.BrineBinary(b)
	}
	dir := b.TempDir()
	pubPort, reqPort := freePort(b), freePort(b)
	sock := filepath.Join(dir, "m", "master.sock")
	cfg := fmt.Sprintf("publish_addr = \"127.0.0.1:%d\"\nrequest_addr = \"127.0.0.1:%d\"\nheartbeat = \"1s\"\n", pubPort, reqPort)
	os.WriteFile(filepath.Join(dir, "master.hcl"), []byte(cfg), 0o644)
	mst := startProc(b, filepath.Join(dir, "master.log"), bin, "master", "-c", filepath.Join(dir, "master.hcl"), "--data-dir", filepath.Join(dir, "m"))
	cli := func(args ...string) (string, error) {
		out, err := command(bin, append(args, "--socket", sock)...).CombinedOutput()
		return string(out), err
	}
	tb.WaitFor(b, 20*time.Second, "master control socket", func() bool { _, err := cli("key", "list"); return err == nil })
	tokOut, err := command(bin, "key", "token", "create", "--ttl", "1h", "--socket", sock).Output() // the token alone on stdout
	if err != nil {
		b.Fatal(err)
	}
	tok := string(tokOut)
	mcfg := fmt.Sprintf("master = \"127.0.0.1\"\npublish_port = %d\nrequest_port = %d\nid = \"legit\"\ntoken = %q\nheartbeat = \"1s\"\nmax_backoff = \"1s\"\n",
		pubPort, reqPort, strings.TrimSpace(tok))
	os.WriteFile(filepath.Join(dir, "minion.hcl"), []byte(mcfg), 0o644)
	startProc(b, filepath.Join(dir, "minion.log"), bin, "minion", "-c", filepath.Join(dir, "minion.hcl"), "--data-dir", filepath.Join(dir, "n"))
	ping := func() time.Duration {
		start := time.Now()
		if out, err := cli("ping", "legit", "--timeout", "60s"); err != nil {
			b.Fatalf("ping: %v: %s", err, out)
		}
		return time.Since(start)
	}
	tb.WaitFor(b, 30*time.Second, "legit answering", func() bool { _, err := cli("ping", "legit", "--timeout", "2s"); return err == nil })
	var calm []time.Duration
	for range 15 {
		calm = append(calm, ping())
	}

	// BRINE_FLOODS selects floods (default all): big, sink, hello, sub, silent; "none" is a
	// control run with no flood.
	sel := floodsFromEnv()
	cpuStart, wallStart := procCPU(b, mst.Process.Pid), time.Now()
	attack := startFloods(b, floodSpec{Req: fmt.Sprintf("127.0.0.1:%d", reqPort), Pub: fmt.Sprintf("127.0.0.1:%d", pubPort), Floods: sel})
	on := floodSpec{Floods: sel}.on
	tb.WaitFor(b, 30*time.Second, "the floods under way", func() bool {
		c := attack.counts()
		return (!on("big") || c.Big > 100) && (!on("hello") || c.Hello > 3000) && (!on("sub") || c.Sub > 50)
	})
	var busy []time.Duration
	for range 15 {
		busy = append(busy, ping())
	}
	wall := time.Since(wallStart)
	masterCPU, attackerCPU := procCPU(b, mst.Process.Pid)-cpuStart, procCPU(b, attack.cmd.Process.Pid) // started with the floods
	attack.stop()
	c := attack.counts()
	hwm := procStatusKB(b, mst.Process.Pid, "VmHWM")
	b.Logf("floods %q: ping calm %v, under the floods %v; %d big frames, %d hellos, %d subscriptions sent; master peak RSS %d MB; during the floods (%v) the master used %.2f cores, the attackers %.2f",
		sel, calm, busy, c.Big, c.Hello, c.Sub, hwm>>10, wall.Round(time.Millisecond), masterCPU.Seconds()/wall.Seconds(), attackerCPU.Seconds()/wall.Seconds())
	b.ReportMetric(masterCPU.Seconds()/wall.Seconds(), "master-cores")
	b.ReportMetric(float64(median(calm).Microseconds())/1000, "ms-ping-calm")
	b.ReportMetric(float64(median(busy).Microseconds())/1000, "ms-ping-flood")
	b.ReportMetric(float64(hwm)/1024, "MB-master-peak-RSS")
}

// command runs bin; with BRINE_FLOOD_DAEMON_CPUS (a taskset CPU list) on those CPUs only, so
// that the attackers (run this benchmark under taskset on the other CPUs) do not take the
// CPU of the master, the minion and the CLI on a small machine.
func command(bin string, args ...string) *exec.Cmd {
	if cpus := os.Getenv("BRINE_FLOOD_DAEMON_CPUS"); cpus != "" {
		return exec.Command("taskset", append([]string{"-c", cpus, bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func freePort(b testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startProc starts a daemon with its output in logPath; it is killed when the benchmark ends.
func startProc(b testing.TB, logPath, bin string, args ...string) *exec.Cmd {
	lf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		lf.Close()
		if b.Failed() || os.Getenv("BRINE_FLOOD_LOGS") != "" {
			data, _ := os.ReadFile(logPath)
			b.Logf("%s:\n%s", filepath.Base(logPath), data)
		}
	})
	return cmd
}

func procStatusKB(b testing.TB, pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == field+":" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// procCPU is the CPU time (user and system) process pid has used.
func procCPU(b testing.TB, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command (which may hold spaces) in parentheses: utime and stime are
	// the 14th and 15th fields of the line.
	rest := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	ut, _ := strconv.ParseInt(rest[11], 10, 64)
	st, _ := strconv.ParseInt(rest[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
