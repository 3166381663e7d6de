package swarm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"time"
)

// A swarm larger than one process's file limit allows (four descriptors per minion; this VM's
// hard limit is 20,000 and cannot be raised without CAP_SYS_RESOURCE) is split: the benching
// process runs a share of the minions and starts child processes for the rest. A child is the
// same program run with PartEnv set to its PartSpec; it prepares its minions (keys, data dirs),
// says so on stdout, starts them when its stdin says "start", reports their statuses on stdout
// every 100 ms, and stops when its stdin closes (so it also stops when its parent dies).

// PartEnv is the environment variable that makes a process a part of a split swarm.
const PartEnv = "BRINE_SWARM_PART"

// PartSpec is the share of a swarm one child process runs.
type PartSpec struct {
	N       int    `json:"n"`
	First   int    `json:"first"`
	PubAddr string `json:"pub"`
	ReqAddr string `json:"req"`
	Others  []Addr `json:"others,omitempty"` // the fleet's other masters (Config.Others)
	Dir     string `json:"dir"`
	Prefix  string `json:"prefix"`
}

// partReport is one line a child writes on stdout.
type partReport struct {
	Ready    bool           `json:"ready,omitempty"`
	Statuses map[string]int `json:"statuses,omitempty"`
	Err      string         `json:"err,omitempty"`
}

// maxPartLine bounds a report line read from a child (a few statuses).
const maxPartLine = 64 << 10

// RunPart runs the share spec of a split swarm, talking to its parent over in and out (see
// PartEnv). It returns when in closes or ctx ends, after stopping its minions.
func RunPart(ctx context.Context, spec PartSpec, in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	s, err := Prepare(Config{N: spec.N, First: spec.First, PubAddr: spec.PubAddr, ReqAddr: spec.ReqAddr, Others: spec.Others,
		Dir: spec.Dir, Prefix: spec.Prefix, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		_ = enc.Encode(partReport{Err: err.Error()})
		return err
	}
	if err := enc.Encode(partReport{Ready: true}); err != nil {
		return err
	}
	r := bufio.NewReader(in)
	if line, err := r.ReadString('\n'); err != nil || line != "start\n" {
		return nil // the parent went away before starting
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, r); cancel() }()
	s.Run(ctx)
	defer s.Close()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if err := enc.Encode(partReport{Statuses: fewStatuses(s.Statuses(), maxPartStatuses)}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// maxPartStatuses bounds the distinct statuses a child reports: minions' errors can differ
// from minion to minion, and a report longer than maxPartLine would end the parent's reading.
const maxPartStatuses = 32

// fewStatuses keeps the max most common statuses and counts the rest under one.
func fewStatuses(st map[string]int, max int) map[string]int {
	if len(st) <= max {
		return st
	}
	keys := make([]string, 0, len(st))
	for k := range st {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return st[keys[i]] > st[keys[j]] || st[keys[i]] == st[keys[j]] && keys[i] < keys[j]
	})
	out := make(map[string]int, max)
	for i, k := range keys {
		if i < max-1 {
			out[k] = st[k]
		} else {
			out["(other statuses)"] += st[k]
		}
	}
	return out
}

// RunPartFromEnv runs a part when PartEnv is set, and reports whether it was.
func RunPartFromEnv(ctx context.Context) (bool, error) {
	v := os.Getenv(PartEnv)
	if v == "" {
		return false, nil
	}
	var spec PartSpec
	if err := json.Unmarshal([]byte(v), &spec); err != nil {
		return true, fmt.Errorf("%s: %w", PartEnv, err)
	}
	return true, RunPart(ctx, spec, os.Stdin, os.Stdout)
}

// part is a child process running a share of the swarm.
type part struct {
	spec  PartSpec
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ready chan error // one value: nil once the child has made its minions

	mu       sync.Mutex
	statuses map[string]int // the child's last report; "exited" once it is gone
	done     chan struct{}  // closed when the child's stdout ends
}

// startPart starts exe with args as the child for spec.
func startPart(exe string, args []string, spec PartSpec) (*part, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), PartEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start swarm part: %w", err)
	}
	p := &part{spec: spec, cmd: cmd, stdin: stdin, ready: make(chan error, 1),
		statuses: map[string]int{"starting": spec.N}, done: make(chan struct{})}
	go p.read(stdout)
	return p, nil
}

func (p *part) read(stdout io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 4096), maxPartLine)
	readySent := false
	for sc.Scan() {
		var rep partReport
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			continue
		}
		switch {
		case rep.Err != "":
			if !readySent {
				p.ready <- errors.New(rep.Err)
				readySent = true
			}
		case rep.Ready:
			if !readySent {
				p.ready <- nil
				readySent = true
			}
		case rep.Statuses != nil:
			p.mu.Lock()
			p.statuses = rep.Statuses
			p.mu.Unlock()
		}
	}
	if !readySent {
		p.ready <- fmt.Errorf("swarm part of minions %d-%d exited before making them", p.spec.First+1, p.spec.First+p.spec.N)
	}
	gone := map[string]int{"exited": p.spec.N}
	if err := sc.Err(); err != nil {
		gone = map[string]int{"exited": p.spec.N, "report unreadable: " + err.Error(): 0}
	}
	p.mu.Lock()
	p.statuses = gone
	p.mu.Unlock()
}

// start tells the child to start its minions.
func (p *part) start() error {
	_, err := io.WriteString(p.stdin, "start\n")
	return err
}

// Statuses returns the child's last report.
func (p *part) Statuses() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statuses
}

// Close stops the child: its stdin closes, it stops its minions and exits; after 30 s it is
// killed.
func (p *part) Close() {
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
	}
	_ = p.cmd.Wait()
}

// fleet is a swarm split over this process (local, which may be nil) and child processes.
type fleet struct {
	n     int
	local *Swarm
	parts []*part
}

// Statuses counts every minion of the fleet by status.
func (f *fleet) Statuses() map[string]int {
	out := map[string]int{}
	if f.local != nil {
		out = f.local.Statuses()
	}
	for _, p := range f.parts {
		for k, v := range p.Statuses() {
			out[k] += v
		}
	}
	return out
}

// pids returns this process's pid and its parts'.
func (f *fleet) pids() []int {
	out := []int{os.Getpid()}
	for _, p := range f.parts {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

// Close stops every minion and every child process.
func (f *fleet) Close() {
	var wg sync.WaitGroup
	for _, p := range f.parts {
		wg.Add(1)
		go func() { defer wg.Done(); p.Close() }()
	}
	if f.local != nil {
		f.local.Close()
	}
	wg.Wait()
}

// Split returns the shares of n minions over processes: the first is this process's, which
// also holds an in-process master's ends of every connection when inProcessMaster is set.
// With procs > 0 the minions are divided evenly over that many processes; with 0, as few as
// the hard file limit allows (FilesPerMinion descriptors per minion, and 1,024 spare in each
// process).
func Split(n, procs int, hardLimit uint64, inProcessMaster bool) ([]int, error) {
	if procs > 0 {
		out := make([]int, procs)
		for i := range out {
			out[i] = n / procs
			if i < n%procs {
				out[i]++
			}
		}
		return out, nil
	}
	free := int(min(hardLimit, 1<<30)) - 1024
	per := free / FilesPerMinion
	if per <= 0 {
		return nil, fmt.Errorf("the file limit %d holds no minions", hardLimit)
	}
	own := per
	if inProcessMaster {
		own = (free - 2*n) / FilesPerMinion // the master's end of each of the n minions' two connections
	}
	own = max(0, min(own, n))
	out := []int{own}
	for rest := n - own; rest > 0; {
		k := (rest + per - 1) / per // children still needed: divide the rest evenly
		share := (rest + k - 1) / k
		out = append(out, share)
		rest -= share
	}
	return out, nil
}

// hardFileLimit returns RLIMIT_NOFILE's hard limit (0 if it cannot be read).
func hardFileLimit() uint64 {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	return rl.Max
}
