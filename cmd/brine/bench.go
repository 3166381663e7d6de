package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/cmd/brine/internal/swarm"
)

// brine bench: developer tools behind BENCHMARKS.md (scripts/bench-*.sh call them).
func newBenchCmd() *cobra.Command {
	bench := &cobra.Command{
		Use:    "bench",
		Short:  "Benchmarks of the master and minions (developer tools)",
		Hidden: true,
		Example: `  brine bench swarm 1000                  # 1,000 in-process minions against an in-process master
  brine bench swarm 5000 --master 127.0.0.1:4506 --socket /tmp/m/master.sock
  brine bench bundle ./files20            # write the 20-file bundle the benchmarks apply
  brine bench rss 1234                    # resident set of process 1234`,
	}
	var (
		bc      swarm.BenchConfig
		asJSON  bool
		pid     int
		profile string
	)
	sw := &cobra.Command{
		Use:   "swarm N",
		Short: "Run N real minions in this process against a master and time ping, apply and run",
		Long: `Run N minions in this process, each with its own keys, data dir and ZeroMQ connections over
loopback, against a master (in this process unless --master names one). Reports the time for all
of them to connect, the median wall time of ping '*', of a no-change apply of a bundle of small
files (each minion's files go to its own directory) and of run '*' -- uptime, and resident memory.

With --master the master must accept the swarm's keys (auto_accept = true in master.hcl; or the
swarm accepts them through --socket, slowly: all its minions come from one address, which the
master's pending limits throttle) and --master-pid names it, to report its memory.

--master may list several masters sharing one PostgreSQL store (comma-separated): every minion
lists them all, takes them in a random order and fails over as a real minion does; the jobs go
through --socket, one of them. --kill-master-pid names another: after the pings it is killed
(SIGKILL), and pings through --socket are repeated until one reaches every minion; the time from
the kill is reported (scripts/bench-multimaster.sh).`,
		Example: `  brine bench swarm 500
  brine bench swarm 5000 --runs 5 --json
  brine bench swarm 1000 --master 127.0.0.1:4506 --socket ./m/master.sock --master-pid 4242
  brine bench swarm 900 --master 127.0.0.1:4506,127.0.0.1:4508,127.0.0.1:4510 \
    --socket ./m1/master.sock --master-pid 4242 --kill-master-pid 4243 --ping-only`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return withCode(exitNothing, fmt.Errorf("N must be a positive number, not %q", args[0]))
			}
			bc.N = n
			bc.MasterPID = pid
			bc.PartArgs = []string{"bench", "swarm-part"}
			if profile != "" {
				f, err := os.Create(profile)
				if err != nil {
					return withCode(exitNothing, err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return withCode(exitNothing, err)
				}
				defer pprof.StopCPUProfile()
			}
			bc.Progress = func(s string) { fmt.Fprintf(cmd.ErrOrStderr(), "%s  %s\n", time.Now().Format("15:04:05.000"), s) }
			ctx, cancel := signalContext()
			defer cancel()
			res, err := swarm.Bench(ctx, bc)
			if res == nil {
				return withCode(exitFailed, err)
			}
			// A run that stopped at a step still prints what it measured (steps not reached
			// show as medians of 0), then fails.
			failed := func() error {
				if err != nil {
					return withCode(exitFailed, err)
				}
				return nil
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if jerr := json.NewEncoder(out).Encode(res); jerr != nil {
					return jerr
				}
				return failed()
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
			mb := func(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
			fmt.Fprintf(out, "minions           %d\n", res.N)
			fmt.Fprintf(out, "connect (all)     %s\n", ms(res.Connect))
			fmt.Fprintf(out, "first ping        %s (right after connecting; %d of %d returned)\n", ms(res.FirstPing.Wall), res.FirstPing.Returned, res.FirstPing.Minions)
			fmt.Fprintf(out, "ping '*'          %s (median of %d)\n", ms(res.Ping), len(res.Pings))
			if res.Masters > 1 {
				fmt.Fprintf(out, "masters           %d; minions per master: %s\n", res.Masters, swarm.FormatSpread(res.Spread))
			}
			if fo := res.Failover; fo != nil {
				last := swarm.JobStats{}
				if len(fo.Tries) > 0 {
					last = fo.Tries[len(fo.Tries)-1]
				}
				fmt.Fprintf(out, "failover          %s from kill -9 of pid %d to the end of a ping answered by %d of %d; its last return at %s (%d pings of at most %s each)\n",
					ms(fo.Wall), fo.PID, last.Returned, res.N, ms(fo.LastReturn), len(fo.Tries), ms(fo.TryLimit))
				fmt.Fprintf(out, "after failover    minions per master: %s\n", swarm.FormatSpread(fo.Spread))
				fmt.Fprintf(out, "killed master RSS %s (peak %s), right before the kill\n", mb(fo.RSS), mb(fo.HWM))
			}
			if !bc.PingOnly {
				fmt.Fprintf(out, "apply, first      %s (%d files changed)\n", ms(res.FirstApply.Wall), res.FirstApply.Changed)
				fmt.Fprintf(out, "apply, no change  %s (median of %d)\n", ms(res.Apply), len(res.Applies))
				fmt.Fprintf(out, "run uptime        %s (median of %d)\n", ms(res.Run), len(res.Runs))
			}
			if res.InProcess {
				fmt.Fprintf(out, "process RSS       %s (minions and master in one process; peak %s)\n", mb(res.ProcRSS), mb(res.ProcHWM))
			} else {
				fmt.Fprintf(out, "swarm RSS         %s (peak %s)\n", mb(res.ProcRSS), mb(res.ProcHWM))
			}
			if res.Procs > 1 {
				fmt.Fprintf(out, "swarm processes   %d (the file limit holds fewer minions per process)\n", res.Procs)
			}
			if pid > 0 {
				fmt.Fprintf(out, "master RSS        %s (peak %s)\n", mb(res.MasterRSS), mb(res.MasterHWM))
				fmt.Fprintf(out, "master fds        %d (all minions connected)\n", res.MasterFDs)
				if bc.PingOnly {
					fmt.Fprintf(out, "master CPU        %s per ping (median); idle %s per second\n", ms(res.MasterCPU), ms(res.IdleCPU))
				} else {
					fmt.Fprintf(out, "master CPU        %s per ping, %s per no-change apply (medians); idle %s per second\n", ms(res.MasterCPU), ms(res.ApplyCPU), ms(res.IdleCPU))
				}
			}
			return failed()
		},
	}
	sw.Flags().IntVar(&bc.Runs, "runs", 5, "pings, no-change applies and runs of uptime; the median of each is reported")
	sw.Flags().IntVar(&bc.Files, "files", 20, "files in the apply bundle")
	sw.Flags().StringVar(&bc.Dir, "dir", "", "where the minions keep their data and files (default: a new dir under /dev/shm)")
	sw.Flags().StringVar(&bc.Master, "master", "", "an external master's request address host:port (default: a master in this process)")
	sw.Flags().StringVar(&bc.Socket, "socket", "", "the external master's control socket")
	sw.Flags().IntVar(&pid, "master-pid", 0, "the external master's pid, to report its memory")
	sw.Flags().IntVar(&bc.KillMasterPID, "kill-master-pid", 0, "after the pings, kill -9 this master (another of --master's list) and time until every minion answers a ping again")
	sw.Flags().BoolVar(&bc.PingOnly, "ping-only", false, "stop after the pings (and the failover): no applies, no runs")
	sw.Flags().BoolVar(&asJSON, "json", false, "print the figures as one JSON object")
	sw.Flags().BoolVarP(&bc.Verbose, "verbose", "v", false, "after each step, show the minions' log messages, counted")
	sw.Flags().StringVar(&profile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	sw.Flags().IntVar(&bc.Procs, "procs", 0, "split the minions over this many processes (default: as few as the file limit allows)")

	// A child of a split swarm (swarm.PartEnv): started by `bench swarm`, never by hand.
	part := &cobra.Command{
		Use:    "swarm-part",
		Short:  "Run a share of a split swarm (started by bench swarm)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			ran, err := swarm.RunPartFromEnv(ctx)
			if !ran {
				return withCode(exitNothing, fmt.Errorf("swarm-part runs only as a child of bench swarm (%s is not set)", swarm.PartEnv))
			}
			if err != nil {
				return withCode(exitFailed, err)
			}
			return nil
		},
	}

	bundle := &cobra.Command{
		Use:     "bundle DIR",
		Short:   "Write the benchmarks' bundle of small files to DIR",
		Example: "  brine bench bundle ./files20 --files 20\n  brine apply '*' ./files20 --var root=/tmp/bench-files",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, _ := cmd.Flags().GetInt("files")
			b := swarm.FileBundle(files)
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return withCode(exitNothing, err)
			}
			for name, data := range b.Files {
				if err := os.WriteFile(filepath.Join(args[0], name), data, 0o644); err != nil {
					return withCode(exitNothing, err)
				}
			}
			return nil
		},
	}
	bundle.Flags().Int("files", 20, "how many files")

	rss := &cobra.Command{
		Use:     "rss PID...",
		Short:   "Print the resident set (and its peak) of processes, in KiB",
		Example: "  brine bench rss $(pgrep -f 'brine master')",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, a := range args {
				p, err := strconv.Atoi(a)
				if err != nil {
					return withCode(exitNothing, fmt.Errorf("not a pid: %q", a))
				}
				r, h := swarm.ProcRSS(p)
				fmt.Fprintf(cmd.OutOrStdout(), "%d rss %d hwm %d\n", p, r>>10, h>>10)
			}
			return nil
		},
	}
	conns := &cobra.Command{
		Use:   "conns sub|dealer HOST:PORT N",
		Short: "Hold N idle ZeroMQ connections to a master and print its memory and descriptors before and after",
		Example: `  brine bench conns sub 127.0.0.1:4505 1000 --master-pid 4242     # what a minion's SUB costs the master
  brine bench conns dealer 127.0.0.1:4506 1000 --master-pid 4242  # and its DEALER, before the handshake`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[2])
			if err != nil || n <= 0 {
				return withCode(exitNothing, fmt.Errorf("N must be a positive number, not %q", args[2]))
			}
			if err := swarm.RaiseFileLimit(n + 1024); err != nil {
				return withCode(exitNothing, err)
			}
			out := cmd.OutOrStdout()
			show := func(when string) {
				r, _ := swarm.ProcRSS(pid)
				fmt.Fprintf(out, "%-7s master RSS %.1f MB, %d fds\n", when, float64(r)/(1<<20), swarm.ProcFDs(pid))
			}
			show("before")
			fds0 := swarm.ProcFDs(pid)
			ctx, cancel := signalContext()
			defer cancel()
			closeAll, err := swarm.IdleConns(ctx, args[0], args[1], n)
			if err != nil {
				return withCode(exitFailed, err)
			}
			defer closeAll()
			// The master has accepted them all when it holds n more descriptors.
			for deadline := time.Now().Add(time.Minute); swarm.ProcFDs(pid) < fds0+n && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
			show("after")
			return nil
		},
	}
	conns.Flags().IntVar(&pid, "master-pid", 0, "the master's pid (required)")
	_ = conns.MarkFlagRequired("master-pid")
	bench.AddCommand(sw, part, bundle, rss, conns)
	return bench
}

func init() {
	rootCmd.AddCommand(newBenchCmd())
}
