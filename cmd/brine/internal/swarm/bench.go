package swarm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
)

// JobStats is what one ping or apply through the control socket did.
type JobStats struct {
	Wall time.Duration `json:"wall_ns"` // request sent to "done", as `brine ping` sees it
	// LastReturn is from the request to the last return received (at most Wall).
	LastReturn time.Duration `json:"last_return_ns,omitempty"`
	Minions    int           `json:"minions"` // targeted
	Returned   int           `json:"returned"`
	Failed     int           `json:"failed"`    // returned without success
	Changed    int           `json:"changed"`   // resources changed, all minions together
	Resources  int           `json:"resources"` // resources reported, all minions together
	// CPU time used during the job by the master process (when its pid is known) and by this
	// process, user and system together.
	MasterCPU time.Duration `json:"master_cpu_ns,omitempty"`
	SelfCPU   time.Duration `json:"self_cpu_ns,omitempty"`
	// Failures counts the failed returns by reason (the return's error and, for a command,
	// the first line of its stderr), so that a failed step says why.
	Failures map[string]int `json:"failures,omitempty"`
}

// Job is a ping or an apply to send over the control socket.
type Job struct {
	Op   string
	send func(ctx context.Context, cl *control.Client, onEvent func(control.Event)) error
}

// PingJob is the ping req.
func PingJob(req control.PingRequest) Job {
	return Job{Op: control.OpPing.Name, send: func(ctx context.Context, cl *control.Client, on func(control.Event)) error {
		return cl.Ping(ctx, req, on)
	}}
}

// ApplyJob is the apply req.
func ApplyJob(req control.ApplyRequest) Job {
	return Job{Op: control.OpApply.Name, send: func(ctx context.Context, cl *control.Client, on func(control.Event)) error {
		return cl.Apply(ctx, req, on)
	}}
}

// RunCommandJob is the run req (`brine run`).
func RunCommandJob(req control.RunRequest) Job {
	return Job{Op: control.OpRun.Name, send: func(ctx context.Context, cl *control.Client, on func(control.Event)) error {
		return cl.Run(ctx, req, on)
	}}
}

// RunJob sends job over the control socket and waits for its end.
func RunJob(ctx context.Context, cl *control.Client, job Job) (JobStats, error) {
	var st JobStats
	start := time.Now()
	err := job.send(ctx, cl, func(ev control.Event) {
		switch ev.Event {
		case "published":
			st.Minions = len(ev.Minions)
		case "return":
			st.Returned++
			st.LastReturn = time.Since(start)
			if !ev.Return.Success {
				st.Failed++
				if st.Failures == nil {
					st.Failures = map[string]int{}
				}
				st.Failures[failureReason(*ev.Return)]++
			}
			if len(ev.Return.Report) > 0 {
				var rep states.Report
				if json.Unmarshal(ev.Return.Report, &rep) == nil {
					st.Changed += rep.Counts()[states.StatusChanged]
					st.Resources += len(rep.Results)
				}
			}
		}
	})
	st.Wall = time.Since(start)
	if err != nil {
		return st, err
	}
	if st.Returned < st.Minions || st.Failed > 0 {
		return st, fmt.Errorf("%d of %d minions returned, %d failed%s", st.Returned, st.Minions, st.Failed, topFailures(st.Failures))
	}
	return st, nil
}

// failureReason is what a failed return says went wrong, in one bounded line.
func failureReason(r wire.Return) string {
	why := r.Error
	var rep wire.RunReport
	if r.Kind == wire.JobRun && json.Unmarshal(r.Report, &rep) == nil {
		if line, _, _ := strings.Cut(strings.TrimSpace(rep.Stderr), "\n"); line != "" {
			why += ": " + line
		}
	}
	if len(why) > 160 {
		why = why[:160] + "..."
	}
	if why == "" {
		why = "no reason given"
	}
	return why
}

// topFailures formats the three most frequent failure reasons (" (N: reason; ...)").
func topFailures(f map[string]int) string {
	if len(f) == 0 {
		return ""
	}
	reasons := make([]string, 0, len(f))
	for r := range f {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool {
		return f[reasons[i]] > f[reasons[j]] || f[reasons[i]] == f[reasons[j]] && reasons[i] < reasons[j]
	})
	var parts []string
	for _, r := range reasons[:min(3, len(reasons))] {
		parts = append(parts, fmt.Sprintf("%d: %s", f[r], r))
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// BenchConfig is one `brine bench swarm` run.
type BenchConfig struct {
	N    int
	Runs int    // pings, no-change applies and runs of uptime, each; the median is reported
	Dir  string // minion dirs; default a new directory under /dev/shm (or the temp dir)
	// Master and Socket name an external master (its request address host:port, the publish
	// port one below, and its control socket); empty runs a master in this process with its
	// data dir on disk under the temp dir. An external master must accept the swarm's keys:
	// auto_accept = true, or the swarm accepts them through the control socket (slowly: one
	// address presents new keys under the master's pending limits, docs/master.md).
	// Master may list several masters sharing one store, comma-separated (ParseMasters): every
	// minion lists them all and the fleet spreads over them; Socket is one of them.
	Master, Socket string
	MasterPID      int // the external master's (Socket's) pid, to measure its CPU and memory
	// KillMasterPID, when set, is another master of the list: after the pings it is killed
	// (SIGKILL) and the time until a ping through Socket reaches every minion again is measured.
	KillMasterPID int
	PingOnly      bool // stop after the pings (and the failover): no applies, no runs
	Files         int  // files in the apply bundle; default 20
	Progress      func(string)
	Verbose       bool // show the minions' log messages, counted, after each step
	// Procs splits the minions over this many processes (this one and Procs-1 children); 0
	// splits only when the file limit cannot hold them all in one. A child is PartExe (default:
	// this program) run with PartArgs and PartEnv set (RunPartFromEnv).
	Procs    int
	PartExe  string
	PartArgs []string
	Logger   *slog.Logger
}

// BenchResult holds every figure of a run. Durations are medians over Runs.
type BenchResult struct {
	N          int           `json:"n"`
	Connect    time.Duration `json:"connect_ns"` // start of every minion to all of them connected
	Ping       time.Duration `json:"ping_ns"`
	Pings      []JobStats    `json:"pings"`
	FirstApply JobStats      `json:"first_apply"` // the files are written
	Apply      time.Duration `json:"apply_nochange_ns"`
	Applies    []JobStats    `json:"applies_nochange"`
	MasterRSS  int64         `json:"master_rss_bytes,omitempty"` // in-process master only: the whole process
	ProcRSS    int64         `json:"process_rss_bytes"`          // this process (swarm, plus the master if in-process)
	ProcHWM    int64         `json:"process_hwm_bytes"`
	InProcess  bool          `json:"in_process_master"`
	Goroutines int           `json:"goroutines"`
	FirstPing  JobStats      `json:"first_ping"`          // right after connecting, not in the median
	MasterCPU  time.Duration `json:"master_cpu_ping_ns"`  // median master CPU of one ping
	ApplyCPU   time.Duration `json:"master_cpu_apply_ns"` // median master CPU of one no-change apply
	Run        time.Duration `json:"run_ns"`              // `brine run '*' -- uptime`, median
	Runs       []JobStats    `json:"runs"`
	MasterHWM  int64         `json:"master_hwm_bytes,omitempty"`
	MasterFDs  int           `json:"master_fds,omitempty"`     // open descriptors, all minions connected
	Procs      int           `json:"swarm_processes"`          // the swarm's processes (this one and its children)
	IdleCPU    time.Duration `json:"master_idle_cpu_per_s_ns"` // master CPU per second, connected and idle
	// Masters is how many masters the minions list; Spread counts the minions by the master
	// holding their presence lease (by name; "" none), after the first ping.
	Masters  int            `json:"masters"`
	Spread   map[string]int `json:"minions_per_master,omitempty"`
	Failover *Failover      `json:"failover,omitempty"`
}

// Failover is what killing one master of several did: how long until a ping through a
// surviving master reached every minion again.
type Failover struct {
	PID int `json:"killed_pid"`
	// Wall is from the kill to the end of the first ping that every minion answered; LastReturn
	// from the kill to that ping's last return.
	Wall       time.Duration `json:"wall_ns"`
	LastReturn time.Duration `json:"last_return_ns"`
	TryLimit   time.Duration `json:"try_timeout_ns"`   // each ping's timeout
	Tries      []JobStats    `json:"tries"`            // every ping sent, the last the one all answered
	RSS        int64         `json:"killed_rss_bytes"` // the killed master's resident set, right before the kill
	HWM        int64         `json:"killed_hwm_bytes"`
	// Spread is where the minions' presence leases are once all answered.
	Spread map[string]int `json:"minions_per_master,omitempty"`
}

// ParseMasters parses --master: one request address host:port, or several masters of one
// store separated by commas; each master's publish port is the one below its request port.
func ParseMasters(list string) ([]Addr, error) {
	var out []Addr
	seen := map[string]bool{}
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		host, port, err := splitPort(a)
		if err != nil {
			return nil, err
		}
		if seen[a] {
			return nil, fmt.Errorf("master address %q is listed twice", a)
		}
		seen[a] = true
		out = append(out, Addr{Pub: net.JoinHostPort(host, strconv.Itoa(port-1)), Req: net.JoinHostPort(host, strconv.Itoa(port))})
	}
	return out, nil
}

// Bench runs the swarm workload: connect N minions, ping them all Runs times, apply a bundle of
// Files small files once (changes) and then Runs times more (no change), then run `uptime` on
// them all Runs times.
func Bench(ctx context.Context, bc BenchConfig) (*BenchResult, error) {
	if bc.Runs <= 0 {
		bc.Runs = 5
	}
	if bc.Files <= 0 {
		bc.Files = 20
	}
	say := bc.Progress
	if say == nil {
		say = func(string) {}
	}
	res := &BenchResult{N: bc.N}
	need := FilesPerMinion*bc.N + 1024 // each minion's two sockets and two state logs
	if bc.Master == "" {
		need += 2 * bc.N // and the master's ends of the sockets
	}
	// Raised where this process may (root with CAP_SYS_RESOURCE); else the swarm is split.
	_ = RaiseFileLimit(need)
	shares, err := Split(bc.N, bc.Procs, hardFileLimit(), bc.Master == "")
	if err != nil {
		return nil, err
	}
	res.Procs = len(shares)
	if shares[0] > 0 {
		if err := RaiseFileLimit(need - FilesPerMinion*(bc.N-shares[0])); err != nil {
			return nil, err
		}
	}
	if bc.Dir == "" {
		base := os.TempDir()
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			base = "/dev/shm"
		}
		d, err := os.MkdirTemp(base, "brine-swarm-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		bc.Dir = d
	}
	var cl *control.Client
	var pubAddr, reqAddr string
	var others []Addr
	res.Masters = 1
	if bc.KillMasterPID > 0 {
		switch {
		case bc.Master == "" || !strings.Contains(bc.Master, ","):
			return nil, errors.New("killing a master needs several (--master a:p,b:q): the swarm must fail over to another")
		case bc.KillMasterPID == bc.MasterPID:
			return nil, errors.New("the master to kill is the one pinged through (--master-pid): kill another")
		}
	}
	if bc.Master == "" {
		res.InProcess = true
		dir, err := os.MkdirTemp("", "brm")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cfg, diags := master.LoadConfig("", dir)
		if diags.HasErrors() {
			return nil, diags
		}
		cfg.PublishAddr, cfg.RequestAddr, cfg.AutoAccept = "127.0.0.1:0", "127.0.0.1:0", true
		// Every swarm minion connects from 127.0.0.1: lift the per-source limits meant for the
		// internet, as scripts/bench-master.sh does for a master process.
		cfg.MaxConnsPerSource, cfg.MaxHandshakesPerSource = 50000, 4096
		cfg.PreAuthRatePerSource, cfg.PreAuthRate = 100000, 100000
		m, err := master.New(cfg, bc.Logger)
		if err != nil {
			return nil, err
		}
		if err := m.Start(ctx); err != nil {
			m.Close()
			return nil, err
		}
		defer m.Close()
		pubAddr, reqAddr, cl = m.PublishAddr(), m.RequestAddr(), m.Client()
	} else {
		addrs, err := ParseMasters(bc.Master)
		if err != nil {
			return nil, err
		}
		pubAddr, reqAddr, others = addrs[0].Pub, addrs[0].Req, addrs[1:]
		res.Masters = len(addrs)
		if bc.Socket == "" {
			return nil, errors.New("an external master needs its control socket (--socket)")
		}
		cl = &control.Client{Path: bc.Socket}
	}

	if len(shares) > 1 {
		say(fmt.Sprintf("making %d minions (keys, data dirs) under %s in %d processes: %v", bc.N, bc.Dir, len(shares), shares))
	} else {
		say(fmt.Sprintf("making %d minions (keys, data dirs) under %s", bc.N, bc.Dir))
	}
	prefix := "sw" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	// The minions' logs are counted, not printed; the counts are shown after each step.
	counter := &LogCounter{Level: slog.LevelInfo}
	logs := func(step string) {
		if c := counter.Take(); c != "" && bc.Verbose {
			say("minion log messages during " + step + ":\n" + strings.TrimRight(c, "\n"))
		}
	}
	s, err := bc.startFleet(ctx, shares, Config{PubAddr: pubAddr, ReqAddr: reqAddr, Others: others, Dir: bc.Dir, Prefix: prefix, Logger: slog.New(counter)})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	// Memory is read on every way out once the minions run, so that a run that stops at a later
	// step (a timeout at 10,000 minions) still reports what the master held.
	defer func() {
		if bc.MasterPID > 0 {
			res.MasterRSS, res.MasterHWM = ProcRSS(bc.MasterPID)
		}
		res.ProcRSS, res.ProcHWM = 0, 0
		for _, pid := range s.pids() {
			r, h := ProcRSS(pid)
			res.ProcRSS += r
			res.ProcHWM += h
		}
		if res.InProcess {
			res.MasterRSS, res.MasterHWM = ProcRSS(os.Getpid())
		}
		res.Goroutines = runtime.NumGoroutine()
	}()
	start := time.Now()
	if err := s.waitConnected(ctx, cl, prefix, time.Minute+time.Duration(bc.N)*50*time.Millisecond); err != nil {
		if bc.MasterPID > 0 {
			res.MasterFDs = ProcFDs(bc.MasterPID)
		}
		return res, err
	}
	res.Connect = time.Since(start)
	say(fmt.Sprintf("%d minions connected in %s", bc.N, res.Connect.Round(time.Millisecond)))
	if bc.MasterPID > 0 {
		res.MasterFDs = ProcFDs(bc.MasterPID)
	}
	logs("connect")
	// Idle: what heartbeats alone cost the master (every minion's, every heartbeat interval).
	// This also gives the last subscriptions time to reach the master.
	m0, t0 := ProcCPU(bc.MasterPID), time.Now()
	time.Sleep(3 * time.Second)
	if bc.MasterPID > 0 {
		res.IdleCPU = time.Duration(float64(ProcCPU(bc.MasterPID)-m0) / time.Since(t0).Seconds())
	}

	target := prefix + "-*"
	timeout := 30*time.Second + time.Duration(bc.N)*10*time.Millisecond
	// The first ping right after connecting also finds the minions whose subscription had not
	// reached the master yet (they get the job again on their next heartbeat): reported apart.
	run := func(job Job) (JobStats, error) {
		m0, s0 := ProcCPU(bc.MasterPID), procsCPU(s.pids())
		st, err := RunJob(ctx, cl, job)
		if bc.MasterPID > 0 {
			st.MasterCPU = ProcCPU(bc.MasterPID) - m0
		}
		st.SelfCPU = procsCPU(s.pids()) - s0
		logs(job.Op)
		if c := s.Statuses(); c["connected"] != bc.N {
			say("not all minions connected after " + job.Op + ": " + summarize(c))
		}
		return st, err
	}
	// A minion the first ping missed (at 9,700 minions, 1 of them) is reported, not fatal: the
	// pings that follow are the figure.
	st, err := run(PingJob(control.PingRequest{Target: target, Timeout: timeout}))
	res.FirstPing = st
	if err != nil && st.Returned == 0 {
		return res, fmt.Errorf("first ping: %w", err)
	}
	say(fmt.Sprintf("first ping: %d of %d minions in %s", st.Returned, st.Minions, st.Wall.Round(time.Millisecond)))
	for i := range bc.Runs {
		st, err := run(PingJob(control.PingRequest{Target: target, Timeout: timeout}))
		res.Pings = append(res.Pings, st)
		if err != nil {
			return res, fmt.Errorf("ping %d: %w", i+1, err)
		}
		say(fmt.Sprintf("ping %d: %d minions in %s", i+1, st.Returned, st.Wall.Round(time.Millisecond)))
	}
	res.Ping = median(res.Pings)
	res.MasterCPU = medianOf(res.Pings, func(s JobStats) time.Duration { return s.MasterCPU })
	if res.Masters > 1 {
		res.Spread = spread(ctx, cl, target)
		say("minions per master: " + FormatSpread(res.Spread))
	}
	if bc.KillMasterPID > 0 {
		fo, err := failover(ctx, cl, bc.KillMasterPID, bc.N, target, max(10*time.Second, 3*res.Ping), say)
		res.Failover = fo
		if err != nil {
			return res, err
		}
		fo.Spread = spread(ctx, cl, target)
		say("minions per master after the failover: " + FormatSpread(fo.Spread))
	}
	if bc.PingOnly {
		return res, nil
	}

	b := FileBundle(bc.Files)
	req := ApplyJob(control.ApplyRequest{Target: target, Bundle: b.Marshal(), Timeout: timeout,
		Vars: map[string]string{"root": filepath.Join(bc.Dir, "h")}})
	st, err = run(req)
	if err != nil {
		return res, fmt.Errorf("first apply: %w", err)
	}
	if st.Changed != bc.N*bc.Files {
		return res, fmt.Errorf("first apply changed %d resources, want %d", st.Changed, bc.N*bc.Files)
	}
	res.FirstApply = st
	say(fmt.Sprintf("first apply: %d files changed on %d minions in %s", st.Changed, st.Returned, st.Wall.Round(time.Millisecond)))
	for i := range bc.Runs {
		st, err := run(req)
		if err != nil {
			return res, fmt.Errorf("apply %d: %w", i+1, err)
		}
		if st.Changed != 0 || st.Resources != bc.N*bc.Files {
			return res, fmt.Errorf("no-change apply %d: %d changed of %d resources", i+1, st.Changed, st.Resources)
		}
		res.Applies = append(res.Applies, st)
		say(fmt.Sprintf("no-change apply %d: %d minions in %s", i+1, st.Returned, st.Wall.Round(time.Millisecond)))
	}
	res.Apply = median(res.Applies)
	res.ApplyCPU = medianOf(res.Applies, func(s JobStats) time.Duration { return s.MasterCPU })
	for i := range bc.Runs {
		st, err := run(RunCommandJob(control.RunRequest{Target: target, Command: "uptime", Timeout: timeout}))
		if err != nil {
			return res, fmt.Errorf("run %d: %w", i+1, err)
		}
		if st.Returned != bc.N || st.Failed != 0 {
			return res, fmt.Errorf("run %d: %d of %d minions returned, %d failed", i+1, st.Returned, bc.N, st.Failed)
		}
		res.Runs = append(res.Runs, st)
		say(fmt.Sprintf("run uptime %d: %d minions in %s", i+1, st.Returned, st.Wall.Round(time.Millisecond)))
	}
	res.Run = median(res.Runs)
	return res, nil
}

// failover kills master pid and pings target through cl until one ping gets all n minions
// (each ping with timeout try), or gives up after a bound that grows with n.
func failover(ctx context.Context, cl *control.Client, pid, n int, target string, try time.Duration, say func(string)) (*Failover, error) {
	fo := &Failover{PID: pid, TryLimit: try}
	limit := 3*time.Minute + time.Duration(n)*20*time.Millisecond
	say(fmt.Sprintf("killing master pid %d (SIGKILL); pinging until all %d answer, each ping waiting at most %s", pid, n, try.Round(time.Millisecond)))
	fo.RSS, fo.HWM = ProcRSS(pid)
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fo, fmt.Errorf("kill master %d: %w", pid, err)
	}
	for ctx.Err() == nil {
		sent := time.Since(start)
		st, err := RunJob(ctx, cl, PingJob(control.PingRequest{Target: target, Timeout: try}))
		fo.Tries = append(fo.Tries, st)
		fo.Wall = time.Since(start)
		if err == nil && st.Returned >= n {
			fo.LastReturn = sent + st.LastReturn
			say(fmt.Sprintf("failover: all %d minions answered %s after the kill, the last return %s after it (ping %d took %s)",
				n, fo.Wall.Round(time.Millisecond), fo.LastReturn.Round(time.Millisecond), len(fo.Tries), st.Wall.Round(time.Millisecond)))
			return fo, nil
		}
		why := fmt.Sprintf("%d of %d answered", st.Returned, n)
		if err != nil {
			why = err.Error()
		}
		say(fmt.Sprintf("failover ping %d: %s (%s after the kill)", len(fo.Tries), why, fo.Wall.Round(time.Millisecond)))
		if fo.Wall > limit {
			return fo, fmt.Errorf("failover: not every minion answered within %s of the kill: %s", limit, why)
		}
		if st.Minions == 0 {
			// The ping failed before publishing (a control or store error): do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return fo, ctx.Err()
}

// spread counts target's minions by the master holding their presence lease ("" none), as the
// master behind cl sees them; nil when it cannot say.
func spread(ctx context.Context, cl *control.Client, target string) map[string]int {
	resp, err := cl.KeyList(ctx, control.KeyListRequest{Glob: target})
	if err != nil {
		return nil
	}
	out := map[string]int{}
	for _, k := range resp.Keys {
		out[k.Master]++
	}
	return out
}

// FormatSpread formats a spread by master name ("m1 3012, m2 2990, none 0").
func FormatSpread(sp map[string]int) string {
	if sp == nil {
		return "unknown (key list failed)"
	}
	names := make([]string, 0, len(sp))
	for k := range sp {
		names = append(names, k)
	}
	sort.Strings(names)
	var parts []string
	for _, k := range names {
		name := k
		if name == "" {
			name = "none"
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, sp[k]))
	}
	return strings.Join(parts, ", ")
}

// startFleet makes the minions of every share (this process's first, in children for the
// rest, all at once) and, once all are made, starts them all.
func (bc *BenchConfig) startFleet(ctx context.Context, shares []int, cfg Config) (*fleet, error) {
	f := &fleet{n: bc.N}
	exe, args := bc.PartExe, bc.PartArgs
	if exe == "" && len(shares) > 1 {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	first := shares[0]
	for _, n := range shares[1:] {
		p, err := startPart(exe, args, PartSpec{N: n, First: first, PubAddr: cfg.PubAddr, ReqAddr: cfg.ReqAddr, Others: cfg.Others, Dir: cfg.Dir, Prefix: cfg.Prefix})
		if err != nil {
			f.Close()
			return nil, err
		}
		f.parts = append(f.parts, p)
		first += n
	}
	if shares[0] > 0 {
		cfg.N = shares[0]
		s, err := Prepare(cfg)
		if err != nil {
			f.Close()
			return nil, err
		}
		f.local = s
	}
	for _, p := range f.parts {
		select {
		case err := <-p.ready:
			if err != nil {
				f.Close()
				return nil, err
			}
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		}
	}
	for _, p := range f.parts {
		if err := p.start(); err != nil {
			f.Close()
			return nil, fmt.Errorf("start swarm part: %w", err)
		}
	}
	if f.local != nil {
		f.local.Run(ctx)
	}
	return f, nil
}

// waitConnected waits for every minion's session. Keys the master left pending (no
// auto_accept) are accepted through the control socket, as an operator would.
func (s *fleet) waitConnected(ctx context.Context, cl *control.Client, prefix string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	lastAccept := time.Time{}
	for {
		st := s.Statuses()
		if st["connected"] == s.n {
			return nil
		}
		if st["exited"] > 0 {
			return fmt.Errorf("a swarm process exited: %d of %d minions connected (%s)", st["connected"], s.n, summarize(st))
		}
		if st["pending"] > 0 && time.Since(lastAccept) > time.Second {
			lastAccept = time.Now()
			if _, err := cl.KeyAccept(ctx, control.KeyAcceptRequest{Glob: prefix + "-*"}); err != nil {
				return fmt.Errorf("accept the swarm's keys: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d minions connected (%s): %w", st["connected"], s.n, summarize(st), ctx.Err())
		case <-t.C:
		}
	}
}

func median(sts []JobStats) time.Duration {
	return medianOf(sts, func(s JobStats) time.Duration { return s.Wall })
}

func medianOf(sts []JobStats, f func(JobStats) time.Duration) time.Duration {
	if len(sts) == 0 {
		return 0
	}
	d := make([]time.Duration, len(sts))
	for i, s := range sts {
		d[i] = f(s)
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

func splitPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("master address %q: want host:request-port", addr)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 2 || port > 65535 {
		return "", 0, fmt.Errorf("master address %q: bad port", addr)
	}
	return host, port, nil
}

// ProcCPU returns the user and system CPU time process pid has used (0 if pid is 0 or gone).
func ProcCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procsCPU sums ProcCPU over pids.
func procsCPU(pids []int) time.Duration {
	var d time.Duration
	for _, p := range pids {
		d += ProcCPU(p)
	}
	return d
}

// ProcFDs returns how many file descriptors process pid has open (0 if it cannot be read).
func ProcFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(ents)
}

// ProcRSS returns the resident set and its high-water mark of process pid, in bytes.
func ProcRSS(pid int) (rss, hwm int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	return rss, hwm
}
