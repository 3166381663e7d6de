// Package swarm runs many real minions in one process against a real master, so that the master
// can be load-tested at a scale one machine can hold (issue 7: `brine bench swarm N`). Every
// minion is a full minion.Minion: its own key pair, its own data dir, its own DEALER and SUB
// connections over TCP loopback, the real handshake, signed jobs and signed returns. Only two
// things are simulated: facts (FactsFunc, so thousands of minions do not each read /proc) and
// the host, which is a per-minion directory that a bundle reaches through the minion's
// facts.root (see FileBundle).
package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/states"
)

// Config says how many minions to run and where their master is.
type Config struct {
	N       int
	PubAddr string // the master's PUB address, host:port
	ReqAddr string // the master's ROUTER address, host:port
	// Others are the other masters of a fleet sharing one store: every minion then lists
	// PubAddr/ReqAddr and these, and takes them in a random order as a real minion with
	// `master = [...]` does (one session at a time, failing over to the next).
	Others []Addr
	// Dir holds every minion's data dir (Dir/m/<id>) and simulated host root (Dir/h/<id>).
	// Put it on a tmpfs: on real hosts each minion's fsyncs hit its own disk in parallel, here
	// they would queue on one.
	Dir       string
	Prefix    string // minion ids are <Prefix>-00001...; default "sw"
	First     int    // the ids start at <Prefix>-<First+1>: a process of a split swarm runs its share
	Heartbeat string // minion heartbeat; default "5s"
	Logger    *slog.Logger
}

// Addr is one master's publish and request addresses, host:port each.
type Addr struct {
	Pub string `json:"pub"`
	Req string `json:"req"`
}

// Swarm is a running set of minions. Close stops them.
type Swarm struct {
	cfg     Config
	Minions []*minion.Minion
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	slots   chan struct{} // applies running at once, all minions together
}

// ID returns the id of minion i of a swarm with prefix.
func ID(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }

// HostRoot returns the simulated host root of minion id: the directory its files go to.
func HostRoot(dir, id string) string { return filepath.Join(dir, "h", id) }

// Start creates the minions (keys first, all of them, so that key generation is not counted as
// connecting) and then starts them all at once.
func Start(ctx context.Context, cfg Config) (*Swarm, error) {
	s, err := Prepare(cfg)
	if err != nil {
		return nil, err
	}
	s.Run(ctx)
	return s, nil
}

// Prepare creates the minions, their keys and data dirs, without starting them (Run does).
func Prepare(cfg Config) (*Swarm, error) {
	if cfg.N <= 0 {
		return nil, errors.New("swarm: N must be positive")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sw"
	}
	if cfg.Heartbeat == "" {
		cfg.Heartbeat = "5s"
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := RaiseFileLimit(FilesPerMinion*cfg.N + 1024); err != nil {
		return nil, err
	}
	s := &Swarm{cfg: cfg, Minions: make([]*minion.Minion, cfg.N), slots: make(chan struct{}, 2*runtime.NumCPU())}
	// Key generation and the first writes are parallel: 5,000 minions take a few seconds serially.
	errs := make([]error, cfg.N)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.NumCPU()*4)
	for i := range cfg.N {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.Minions[i], errs[i] = s.newMinion(ID(cfg.Prefix, cfg.First+i+1), logger)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// Run starts every minion, all at once, until ctx ends or Close.
func (s *Swarm) Run(ctx context.Context) {
	rctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	for _, m := range s.Minions {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); _ = m.Run(rctx) }()
	}
}

func (s *Swarm) newMinion(id string, logger *slog.Logger) (*minion.Minion, error) {
	root := HostRoot(s.cfg.Dir, id)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	cfg := minion.Config{
		Master:     "127.0.0.1",
		ID:         id,
		DataDir:    filepath.Join(s.cfg.Dir, "m", id),
		Heartbeat:  s.cfg.Heartbeat,
		MaxBackoff: "2s",
		ExecSlots:  s.slots,
		FactsFunc: func() map[string]any {
			return map[string]any{"os": "linux", "arch": runtime.GOARCH, "hostname": id, "root": root}
		},
	}
	if err := cfg.Fill(); err != nil {
		return nil, err
	}
	cfg.SetAddrs(s.cfg.PubAddr, s.cfg.ReqAddr)
	for _, o := range s.cfg.Others {
		cfg.AddAddrs(o.Pub, o.Req)
	}
	return minion.New(cfg, logger)
}

// Statuses counts the minions by Status.
func (s *Swarm) Statuses() map[string]int {
	out := map[string]int{}
	for _, m := range s.Minions {
		out[m.Status()]++
	}
	return out
}

// WaitConnected polls until every minion has an accepted session, or ctx ends. The error says
// how many are in which state.
func (s *Swarm) WaitConnected(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		st := s.Statuses()
		if st["connected"] == len(s.Minions) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d minions connected (%s): %w", st["connected"], len(s.Minions), summarize(st), ctx.Err())
		case <-t.C:
		}
	}
}

// summarize prints the statuses by count, most frequent first.
func summarize(st map[string]int) string {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range st {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
	var parts []string
	for _, e := range l {
		parts = append(parts, fmt.Sprintf("%d %s", e.v, e.k))
	}
	return strings.Join(parts, ", ")
}

// Close stops every minion and waits for them.
func (s *Swarm) Close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
}

// FilesPerMinion is how many descriptors a minion holds: its two sockets and its two state logs
// (seen.log, outbox.log, open for its life).
const FilesPerMinion = 4

// RaiseFileLimit raises RLIMIT_NOFILE to at least n (soft and, as root, hard): each minion holds
// FilesPerMinion, and an in-process master two more per minion.
func RaiseFileLimit(n int) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	want := uint64(n)
	if rl.Cur >= want {
		return nil
	}
	if rl.Max < want {
		rl.Max = want // needs CAP_SYS_RESOURCE; without it the error below says what to do
	}
	rl.Cur = want
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("need %d open files, the hard limit is %d and cannot be raised here (%w): run the master in its own process (--master), or fewer minions", n, rl.Max, err)
	}
	return nil
}

// FileBundle returns a bundle of n small files. Each goes to <root>/fNN.conf, where root is the
// minion's facts.root when it has one (a swarm minion's simulated host) and else
// var.root/<minion id> (real minions on one machine, each with its own directory).
func FileBundle(n int) *states.Bundle {
	var b strings.Builder
	b.WriteString(`variable "root" {
  default = "/tmp/brine-bench-files"
}
`)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, `
file "f%02d" {
  path    = "${lookup(minion.facts, "root", "${var.root}/${minion.id}")}/f%02d.conf"
  content = "# file %d of %d\nminion = ${minion.id}\n"
  mode    = "0644"
}
`, i, i, i, n)
	}
	return &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(b.String())}, Root: "swarm-bundle"}
}
