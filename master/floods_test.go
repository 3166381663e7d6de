package master_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// Issue 10's hostile load, run by a separate attacker process: an attacker is not inside the
// master, and attackers running as goroutines of the master's own process take the master's
// CPU through the Go scheduler (under the race detector on a loaded 2-core machine, a ping
// took 23 s that way), which says nothing about the master. The test binary runs itself as the
// attacker (floodEnv), and the test or benchmark keeps the master and its minions.

// floodEnv, when set in the environment of this test binary, makes TestMain run the floods it
// describes (a JSON floodSpec) instead of the tests.
const floodEnv = "BRINE_TEST_FLOOD_CHILD"

// floodSpec says what the attacker process floods.
type floodSpec struct {
	Req, Pub string
	// Floods selects the floods by name, all of them when empty: big (8 connections sending
	// the largest frames allowed before authentication, announcing 16 MiB ones, never
	// reading), sink (3 that send hellos and never read the challenges), hello (a hello flood
	// from 40 source addresses that do read), sub (4 subscribers sending distinct 256-byte
	// subscriptions), silent (300 connections that send nothing). Floods named only when
	// selected: cmd (8 connections from 127.0.0.6, PUB port and request port, sending ZMTP
	// PING commands as fast as they can and reading the PONGs), stall (1,200 connections from
	// 127.0.0.7-9 that each announce the largest frame allowed before authentication, send
	// none of it and connect again when cut off), churn (60 goroutines on 127.0.0.10-12 that
	// connect, send a greeting and READY and hang up, again and again).
	Floods []string
}

func (s floodSpec) on(name string) bool {
	if len(s.Floods) == 0 {
		return true
	}
	for _, f := range s.Floods {
		if f == name {
			return true
		}
	}
	return false
}

// floodCounts is what the attacker process has sent so far.
type floodCounts struct{ Big, Hello, Sub, Cmd int64 }

// floodProc is a running attacker process.
type floodProc struct {
	cmd   *exec.Cmd
	stdin io.Closer
	mu    sync.Mutex
	last  floodCounts
	done  chan struct{}
	once  sync.Once
}

// startFloods starts the attacker process; it stops when the test ends, or at stop.
func startFloods(tb testing.TB, spec floodSpec) *floodProc {
	tb.Helper()
	js, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), floodEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &floodProc{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var c floodCounts
			if json.Unmarshal(sc.Bytes(), &c) == nil {
				p.mu.Lock()
				p.last = c
				p.mu.Unlock()
			}
		}
	}()
	tb.Cleanup(p.stop)
	return p
}

// counts is the attacker's last report (it reports every 50 ms).
func (p *floodProc) counts() floodCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// stop ends the floods: the attacker closes its connections and exits when its stdin closes.
func (p *floodProc) stop() {
	p.once.Do(func() {
		p.stdin.Close()
		t := time.AfterFunc(30*time.Second, func() { p.cmd.Process.Kill() })
		<-p.done
		p.cmd.Wait()
		t.Stop()
	})
}

// floodChild is the attacker process's main: it floods until its stdin closes, reporting its
// counts on stdout.
func floodChild(js string) int {
	var spec floodSpec
	if err := json.Unmarshal([]byte(js), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "flood child:", err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	var c struct{ big, hello, sub, cmd atomic.Int64 }
	wait := runFloods(ctx, spec, &c.big, &c.hello, &c.sub, &c.cmd)
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	report := func() {
		js, _ := json.Marshal(floodCounts{c.big.Load(), c.hello.Load(), c.sub.Load(), c.cmd.Load()})
		os.Stdout.Write(append(js, '\n'))
	}
	for ctx.Err() == nil {
		report()
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	wait()
	report()
	return 0
}

// runFloods runs the floods of spec until ctx ends; wait closes every connection and returns
// when all of them are done.
func runFloods(ctx context.Context, spec floodSpec, bigSent, helloSent, subSent, cmdSent *atomic.Int64) (wait func()) {
	var wg sync.WaitGroup
	n := func(name string, count int) int {
		if spec.on(name) {
			return count
		}
		return 0
	}
	req, pub := spec.Req, spec.Pub
	chunk := make([]byte, 15<<10)
	small, big := zmtpFrame(chunk), append(binary.BigEndian.AppendUint64([]byte{0x02}, 16<<20), chunk...)
	flood(ctx, &wg, n("big", 8), func(ctx context.Context, i int) {
		floodConn(ctx, "127.0.0.2", req, "DEALER", false, func(n int) []byte {
			if n%8 == 7 {
				return big
			}
			return small
		}, func() { bigSent.Add(1) })
	})
	sink := zmtpFrame(helloBody("sink"))
	flood(ctx, &wg, n("sink", 3), func(ctx context.Context, i int) {
		floodConn(ctx, "127.0.0.3", req, "DEALER", false, func(int) []byte { return sink }, func() {})
	})
	fl := zmtpFrame(helloBody("flood"))
	batch := append(append(append([]byte{}, fl...), fl...), fl...)
	flood(ctx, &wg, n("hello", 40), func(ctx context.Context, i int) {
		floodConn(ctx, net.IPv4(127, 0, 1, byte(i+1)).String(), req, "DEALER", true, func(int) []byte { return batch }, func() { helloSent.Add(3) })
	})
	flood(ctx, &wg, n("sub", 4), func(ctx context.Context, i int) {
		floodConn(ctx, "127.0.0.4", pub, "SUB", false, func(int) []byte {
			return zmtpFrame(append([]byte{1}, pki.RandomBytes(256)...))
		}, func() { subSent.Add(1) })
	})
	named := func(name string, count int) int {
		if len(spec.Floods) > 0 && spec.on(name) {
			return count
		}
		return 0
	}
	pings := bytes.Repeat([]byte{0x04, 7, 4, 'P', 'I', 'N', 'G', 0, 0}, 1000)
	flood(ctx, &wg, named("cmd", 8), func(ctx context.Context, i int) {
		addr, sockType := req, "DEALER"
		if i%2 == 1 {
			addr, sockType = pub, "SUB"
		}
		floodConn(ctx, "127.0.0.6", addr, sockType, true, func(int) []byte { return pings }, func() { cmdSent.Add(1000) })
	})
	stall := binary.BigEndian.AppendUint64([]byte{0x02}, 16<<10)
	flood(ctx, &wg, named("stall", 1200), func(ctx context.Context, i int) {
		c, err := zmtpDial(ctx, net.IPv4(127, 0, 0, byte(7+i%3)).String(), req, "DEALER")
		if err != nil {
			return
		}
		defer context.AfterFunc(ctx, func() { c.Close() })()
		defer c.Close()
		if _, err := c.Write(stall); err == nil {
			cmdSent.Add(1)
			io.Copy(io.Discard, c)
		}
	})
	flood(ctx, &wg, named("churn", 60), func(ctx context.Context, i int) {
		if c, err := zmtpDial(ctx, net.IPv4(127, 0, 0, byte(10+i%3)).String(), req, "DEALER"); err == nil {
			c.Close()
			cmdSent.Add(1)
		}
	})
	var silent []net.Conn
	for range n("silent", 300) {
		if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}).Dial("tcp", req); err == nil {
			silent = append(silent, c)
		}
	}
	return func() {
		wg.Wait()
		for _, c := range silent {
			c.Close()
		}
	}
}

// floodConn dials addr from src as sockType and writes frame(0), frame(1), ... until ctx ends
// or the master drops the connection, calling sent after each write; with drain it reads and
// discards what the master sends, else it reads nothing.
func floodConn(ctx context.Context, src, addr, sockType string, drain bool, frame func(n int) []byte, sent func()) {
	c, err := zmtpDial(ctx, src, addr, sockType)
	if err != nil {
		return
	}
	defer context.AfterFunc(ctx, func() { c.Close() })()
	defer c.Close()
	if drain {
		go io.Copy(io.Discard, c)
	}
	for n := 0; ctx.Err() == nil; n++ {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(frame(n)); err != nil {
			return
		}
		sent()
	}
}

// helloBody is a valid hello from a throwaway key.
func helloBody(id string) []byte {
	k, err := pki.GenerateKeyPair()
	if err != nil {
		panic(err)
	}
	h, _ := json.Marshal(wire.Hello{ID: id, Key: k.Pub.String(), Nonce: pki.RandomBytes(32)})
	return wire.Encode(wire.THello, h)
}

// floodsFromEnv is the floods BRINE_FLOODS selects (a comma list; "none" floods nothing).
func floodsFromEnv() []string {
	sel := os.Getenv("BRINE_FLOODS")
	if sel == "" {
		return nil
	}
	return strings.Split(sel, ",")
}
