// Package minioncli is the minion's command line: `brine minion` in the full binary and the
// whole of brine-minion, the minion-only binary (cmd/brine-minion) that hosts run. Both take
// their flags, help and behaviour from here. It links the minion, the states engine and its
// resources, and nothing of the master, the cloud client, the simulator, the testbed or the
// operator's commands; not cobra either, whose text/template makes the linker keep every
// exported method (2 MB more binary: docs/design.md, "The minion binary").
package minioncli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/pflag"

	"github.com/brinecm/brine/internal/daemoncli"
	"github.com/brinecm/brine/internal/minionbin"
	"github.com/brinecm/brine/internal/termtext"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/states"
)

// DefaultConfig is the config file the minion reads when -c is not given and the file exists.
const DefaultConfig = "/etc/brine/minion.hcl"

// Short and Long are the command's help.
const (
	Short = "Run a minion: connect to the master, apply the jobs it sends"
	Long  = `Run a minion. It connects out to the master (ports 4505 and 4506), proves its identity, and
waits for the operator to accept its key (brine key accept ID on the master) unless minion.hcl has
an enrolment token. It pins the master's key: master_finger, else the fingerprint a brn2 token
carries, else the key it meets first (trust on first use). It logs its own key's fingerprint, for
the operator to check with brine key accept ID --finger. It reads /etc/brine/minion.hcl when -c
is not given and that file exists. Hosts run it as brine-minion, the minion-only binary.`
	Example = "  brine-minion --master 10.0.0.1\n  brine-minion -c /etc/brine/minion.hcl\n  brine minion --master 127.0.0.1 --id web1 --data-dir ./m1"
)

// GCPercent is brine-minion's GOGC from its first apply on, unless the environment sets GOGC
// (minion.Config.ApplyGCPercent). A minion's live heap is about 1 MB, so at Go's default of 100
// an apply grows the heap to the 4 MB floor before each collection; at 50 the floor is 2 MB,
// and an apply of 20 files peaks 1.5 MB lower, under 14 MB of RSS instead of 15 (BENCHMARKS.md,
// "The minion alone"), for a few more collections of a small heap.
const GCPercent = 50

// MaxProcs is brine-minion's GOMAXPROCS unless the environment sets GOMAXPROCS. A minion runs one
// job at a time and a job's resources one after another; what it runs in parallel is syscalls
// (a batch of files is fsynced by several goroutines at once; one blocked in a syscall hands its
// P on, and 20 files commit as fast with one P as with two: atomicfile's BenchmarkReplace20
// -cpu 1,2) and the commands it starts (their own processes). A second P buys it nothing
// but the runtime's own work: idle Ps woken to look for work, the background sweeper yielding
// to them, GC workers on both. One minion's CPU per apply of 20 unchanged files: 13 -> 8 ms, and
// 10 -> 6 ms with the parse kept (BENCHMARKS.md, "A minion's CPU per apply"); 50 minions on 2
// cores each had 2 Ps.
const MaxProcs = 1

// limitProcs sets GOMAXPROCS to MaxProcs unless the environment sets it.
func limitProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(MaxProcs)
	}
}

// Flags are the minion's command-line flags.
type Flags struct {
	config, master, id, dataDir string
	log                         daemoncli.LogFlags
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *pflag.FlagSet) {
	fs.StringVarP(&f.config, "config", "c", "", "minion config file (HCL; default "+DefaultConfig+" when it exists)")
	fs.StringVar(&f.master, "master", "", "the master's host (or host:request-port); several masters of one store: m1,m2,m3")
	fs.StringVar(&f.id, "id", "", "minion id (default: the host name)")
	fs.StringVar(&f.dataDir, "data-dir", "", "data dir (default "+minion.DefaultDataDir+")")
	f.log.Register(fs)
}

// Run runs the minion the flags describe until SIGINT or SIGTERM, reporting version as its
// brine_version fact. A config file's errors come back as hcl.Diagnostics.
func Run(f *Flags, version string) error {
	cfg, diags := minion.LoadConfig(daemoncli.ConfigPath(f.config, DefaultConfig), f.master, f.id, f.dataDir)
	if diags.HasErrors() {
		return diags
	}
	// The minion reports its own version, for brine status (a claim, like every fact).
	if cfg.ExtraFacts == nil {
		cfg.ExtraFacts = map[string]string{}
	}
	cfg.ExtraFacts["brine_version"] = version
	cfg.ApplyGCPercent = GCPercent
	limitProcs()
	logger, err := f.log.Logger(os.Stderr)
	if err != nil {
		return err
	}
	m, err := minion.New(cfg, logger)
	if err != nil {
		return err
	}
	logger.Info("minion starting", "id", m.ID(), "finger", m.Key().Fingerprint())
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	return m.Run(ctx)
}

// Main runs brine-minion with args (os.Args[1:]) and returns its exit code: 0; 1 with the
// error on standard error (a config file's diagnostics quoting its lines); 2 for a usage error.
func Main(version string, args []string) int {
	stdout, stderr := termtext.NewWriter(os.Stdout, false), termtext.NewWriter(os.Stderr, false)
	var f Flags
	fs := pflag.NewFlagSet(minionbin.Name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs)
	showVersion := fs.BoolP("version", "v", false, "print the version and exit")
	showHelp := fs.BoolP("help", "h", false, "print this help and exit")
	err := fs.Parse(args)
	switch {
	case err == nil && *showHelp:
		fmt.Fprintf(stdout, "%s\n\nUsage:\n  %s [flags]\n\nExamples:\n%s\n\nFlags:\n%s", Long, minionbin.Name, Example, fs.FlagUsages())
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", minionbin.Name, err, minionbin.Name)
		return 2
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q: it takes flags only\nRun '%s --help' for usage.\n", minionbin.Name, fs.Arg(0), minionbin.Name)
		return 2
	case *showVersion:
		fmt.Fprintln(stdout, minionbin.Name, version)
		return 0
	}
	err = Run(&f, version)
	if err == nil {
		return 0
	}
	var diags hcl.Diagnostics
	if errors.As(err, &diags) {
		states.WriteFileDiagnostics(stderr, diags, states.UseColor(os.Stderr))
	} else {
		fmt.Fprintln(stderr, minionbin.Name+":", err)
	}
	return 1
}
